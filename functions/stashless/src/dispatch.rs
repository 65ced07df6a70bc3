//! Turning object changes into function invocations. Events only say *what* changed
//! (kind, namespace, name, uid, resourceVersion, change); the functions re-read the object
//! and claim it, so duplicate, late or out-of-order deliveries are harmless.
//!
//! One trait, two implementations: [`EventBridge`] (`PutEvents` on a bus whose rules route
//! to the Lambda functions) and [`InProcess`] (the demo and tests run the same handlers in
//! this process). [`bridge`] is the watch loop both the in-cluster bridge and the demo use.
//!
//! Events on the bus: `source` = `stashless.bridge`, `detail-type` = `<Kind> <Change>`
//! (e.g. `BackupSession Added`), `detail` = [`Change`] as JSON. No object bodies, no secrets.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::api::{BackupConfiguration, BackupSession, RestoreSession, SessionPhase};
use crate::context::{Context, NamespaceScope};
use crate::error::{Error, Result};
use crate::events::{SessionRef, Tick};
use crate::scheduler::{SchedulerSettings, TickReport};
use crate::serve::{Owners, Verdict};
use crate::session::HasPhase;
use crate::sweep::{SweepReport, SweepSettings};

pub const SOURCE: &str = "stashless.bridge";
/// PutEvents limits: 10 entries and 256 KiB per call.
pub const MAX_ENTRIES: usize = 10;
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// What changed. This is the `detail` of a bridge event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// `Added`, `Modified`, `Deleted`, or `Sweep` (re-sent by the scheduler's sweep).
    pub change: String,
}

impl Change {
    pub fn of<K: Resource>(kind: &str, obj: &K, change: &str) -> Change {
        Change {
            kind: kind.into(),
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
            uid: obj.meta().uid.clone(),
            resource_version: obj.meta().resource_version.clone(),
            change: change.into(),
        }
    }

    pub fn from_ref(r: &SessionRef, change: &str) -> Change {
        Change {
            kind: r.kind.clone().unwrap_or_default(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            uid: None,
            resource_version: None,
            change: change.into(),
        }
    }

    pub fn detail_type(&self) -> String {
        format!("{} {}", self.kind, self.change)
    }

    pub fn session_ref(&self) -> SessionRef {
        SessionRef {
            kind: Some(self.kind.clone()),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// Hands changes to whatever runs the functions.
#[async_trait]
pub trait Dispatch: Send + Sync {
    async fn dispatch(&self, changes: &[Change]) -> Result<()>;
}

/// Runs the backup and restore handlers in this process (demo, tests).
pub struct InProcess {
    ctx: Arc<Context>,
    tasks: Mutex<JoinSet<()>>,
}

impl InProcess {
    pub fn new(ctx: Arc<Context>) -> Arc<InProcess> {
        Arc::new(InProcess {
            ctx,
            tasks: Mutex::new(JoinSet::new()),
        })
    }
}

#[async_trait]
impl Dispatch for InProcess {
    async fn dispatch(&self, changes: &[Change]) -> Result<()> {
        let mut tasks = self.tasks.lock().await;
        while tasks.try_join_next().is_some() {}
        for c in changes {
            let (ctx, target) = (self.ctx.clone(), c.session_ref());
            match c.kind.as_str() {
                "BackupSession" => {
                    tasks.spawn(async move {
                        if let Err(e) = crate::backup::run(&ctx, &target, None).await {
                            tracing::warn!(session = %target.name, error = %e, "backup invocation failed");
                        }
                    });
                }
                "RestoreSession" => {
                    tasks.spawn(async move {
                        if let Err(e) = crate::restore::run(&ctx, &target, None).await {
                            tracing::warn!(session = %target.name, error = %e, "restore invocation failed");
                        }
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `PutEvents` on an EventBridge bus, batched within the API's limits; entries that fail
/// (throttling, internal errors) are retried with backoff.
pub struct EventBridge {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridge {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> EventBridge {
        EventBridge {
            client,
            bus: bus.into(),
        }
    }

    /// From the environment: `STASHLESS_EVENT_BUS` (name or ARN), AWS config as usual.
    pub async fn from_env() -> Option<EventBridge> {
        let bus = std::env::var("STASHLESS_EVENT_BUS")
            .ok()
            .filter(|b| !b.is_empty())?;
        crate::install_crypto_provider();
        let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Some(EventBridge::new(
            aws_sdk_eventbridge::Client::new(&conf),
            bus,
        ))
    }

    fn entry(&self, c: &Change) -> aws_sdk_eventbridge::types::PutEventsRequestEntry {
        aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(c.detail_type())
            .detail(serde_json::to_string(c).expect("change serialises"))
            .build()
    }

    async fn put_batch(&self, batch: &[Change]) -> Result<()> {
        let mut pending: Vec<Change> = batch.to_vec();
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=6 {
            let out = self
                .client
                .put_events()
                .set_entries(Some(pending.iter().map(|c| self.entry(c)).collect()))
                .send()
                .await;
            match out {
                Ok(out) if out.failed_entry_count == 0 => return Ok(()),
                Ok(out) => {
                    // Results are positional: keep the entries that carry an error code.
                    let results = out.entries.unwrap_or_default();
                    pending = pending
                        .into_iter()
                        .zip(results)
                        .filter(|(_, r)| r.error_code.is_some())
                        .map(|(c, _)| c)
                        .collect();
                    tracing::warn!(
                        attempt,
                        failed = pending.len(),
                        "PutEvents: some entries failed, retrying them"
                    );
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %aws_sdk_eventbridge::error::DisplayErrorContext(&e), "PutEvents failed, retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Err(Error::unavailable(
            format!(
                "PutEvents to {} kept failing for {} event(s): {}",
                self.bus,
                pending.len(),
                pending
                    .iter()
                    .map(|c| format!("{}/{}", c.namespace, c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
        ))
    }
}

/// Split into PutEvents batches: at most 10 entries and 256 KiB each.
pub fn batches(changes: &[Change]) -> Vec<&[Change]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, c) in changes.iter().enumerate() {
        let size = serde_json::to_string(c).map(|s| s.len()).unwrap_or(0)
            + c.detail_type().len()
            + SOURCE.len();
        if i > start && (i - start == MAX_ENTRIES || bytes + size > MAX_BATCH_BYTES) {
            out.push(&changes[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}

#[async_trait]
impl Dispatch for EventBridge {
    async fn dispatch(&self, changes: &[Change]) -> Result<()> {
        for batch in batches(changes) {
            self.put_batch(batch).await?;
        }
        Ok(())
    }
}

fn pending<K: HasPhase>(k: &K) -> bool {
    matches!(k.phase(), None | Some(SessionPhase::Pending))
}

/// Health of a running bridge: true once every watch has listed and while none is failing.
#[derive(Debug, Default)]
pub struct Health {
    backups: AtomicBool,
    restores: AtomicBool,
    configs: AtomicBool,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.backups.load(Ordering::Relaxed)
            && self.restores.load(Ordering::Relaxed)
            && self.configs.load(Ordering::Relaxed)
    }
}

/// The watch bridge: watches BackupSessions, RestoreSessions and BackupConfigurations
/// (in the namespaces in scope) and dispatches each relevant change: a session that is
/// Pending (new, or still unclaimed), a configuration whose spec changed. The watcher
/// resumes from bookmarks and relists after 410 Gone by itself; after an error (403, an API
/// server down) it waits with kube's default exponential backoff instead of spinning.
/// Runs until dropped.
pub async fn bridge(
    client: Client,
    namespaces: NamespaceScope,
    to: Arc<dyn Dispatch>,
    health: Arc<Health>,
) {
    fn watch<K>(
        client: &Client,
        namespaces: &NamespaceScope,
    ) -> futures::stream::SelectAll<futures::stream::BoxStream<'static, watcher::Result<Event<K>>>>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let cfg = watcher::Config::default().any_semantic();
        futures::stream::select_all(
            namespaces
                .apis::<K>(client)
                .into_iter()
                .map(|a| watcher::watcher(a, cfg.clone()).default_backoff().boxed()),
        )
    }
    let b = watch::<BackupSession>(&client, &namespaces);
    let r = watch::<RestoreSession>(&client, &namespaces);
    let c = watch::<BackupConfiguration>(&client, &namespaces);
    let (mut b, mut r, mut c) = (b, r, c);
    // What was already dispatched, by uid → resourceVersion: a relist (after 410 Gone or a
    // reconnect) replays every object, and an unchanged one must not be dispatched again.
    let mut sent: HashMap<String, String> = HashMap::new();
    loop {
        let candidates: Vec<(Change, Seen)> = tokio::select! {
            Some(ev) = b.next() => match ev {
                Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) => session_change("BackupSession", &s, &mut sent).map(|c| (c, Seen::Backup(s))).into_iter().collect(),
                Ok(Event::Delete(s)) => { forget(&s, &mut sent); vec![] }
                Ok(Event::InitDone) => { health.backups.store(true, Ordering::Relaxed); vec![] }
                Ok(Event::Init) => vec![],
                Err(e) => { tracing::warn!(error = %e, "BackupSession watch error (retrying)"); vec![] }
            },
            Some(ev) = r.next() => match ev {
                Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) => session_change("RestoreSession", &s, &mut sent).map(|c| (c, Seen::Restore(s))).into_iter().collect(),
                Ok(Event::Delete(s)) => { forget(&s, &mut sent); vec![] }
                Ok(Event::InitDone) => { health.restores.store(true, Ordering::Relaxed); vec![] }
                Ok(Event::Init) => vec![],
                Err(e) => { tracing::warn!(error = %e, "RestoreSession watch error (retrying)"); vec![] }
            },
            Some(ev) = c.next() => match ev {
                Ok(Event::Apply(cfg)) | Ok(Event::InitApply(cfg))
                    if cfg.status.as_ref().and_then(|s| s.observed_generation) != cfg.metadata.generation =>
                {
                    fresh(Change::of("BackupConfiguration", &cfg, "Modified"), &mut sent).map(|c| (c, Seen::Config(cfg))).into_iter().collect()
                }
                Ok(Event::Delete(cfg)) => { forget(&cfg, &mut sent); vec![] }
                Ok(Event::InitDone) => { health.configs.store(true, Ordering::Relaxed); vec![] }
                Ok(_) => vec![],
                Err(e) => { tracing::warn!(error = %e, "BackupConfiguration watch error (retrying)"); vec![] }
            },
            else => return,
        };
        let changes = ours(&Owners::new(&client), candidates).await;
        if !changes.is_empty()
            && let Err(e) = to.dispatch(&changes).await
        {
            tracing::error!(error = %e, "dispatching failed; the scheduler's sweep will pick the sessions up");
        }
    }
}

/// An object the bridge saw change, kept to decide whether it is ours.
enum Seen {
    Backup(BackupSession),
    Restore(RestoreSession),
    Config(BackupConfiguration),
}

/// The changes of stashless's own objects ([`crate::serve`]); another product's are never
/// dispatched. When that cannot be told (the API server did not answer) the change is not
/// sent either: the sweep hands a still-Pending session on later, after checking again.
async fn ours(owners: &Owners, candidates: Vec<(Change, Seen)>) -> Vec<Change> {
    let mut out = Vec::with_capacity(candidates.len());
    for (change, seen) in candidates {
        let verdict = match &seen {
            Seen::Backup(b) => owners.backup_session(b).await.map(|(v, _)| v),
            Seen::Restore(r) => owners.restore_session(r).await,
            Seen::Config(c) => owners.config(c).await,
        };
        match verdict {
            Ok(Verdict::Ours) => out.push(change),
            Ok(Verdict::Others(why)) => {
                tracing::debug!(kind = %change.kind, name = %change.name, %why, "not dispatched: not stashless's");
            }
            Err(e) => {
                tracing::warn!(kind = %change.kind, name = %change.name, error = %e.reason(), "not dispatched: could not tell whether it is stashless's");
            }
        }
    }
    out
}

/// A Pending session not yet dispatched at this resourceVersion → one change. A session
/// that left Pending is forgotten (it will not be dispatched again).
fn session_change<K: Resource + HasPhase>(
    kind: &str,
    s: &K,
    sent: &mut HashMap<String, String>,
) -> Option<Change> {
    if pending(s) {
        let added = if s.meta().generation.unwrap_or(1) <= 1 {
            "Added"
        } else {
            "Modified"
        };
        fresh(Change::of(kind, s, added), sent)
    } else {
        forget(s, sent);
        None
    }
}

fn fresh(c: Change, sent: &mut HashMap<String, String>) -> Option<Change> {
    let (Some(uid), Some(rv)) = (c.uid.clone(), c.resource_version.clone()) else {
        return Some(c);
    };
    if sent.get(&uid) == Some(&rv) {
        return None;
    }
    sent.insert(uid, rv);
    Some(c)
}

fn forget<K: Resource>(k: &K, sent: &mut HashMap<String, String>) {
    if let Some(uid) = &k.meta().uid {
        sent.remove(uid);
    }
}

/// The demo's and tests' router: the bridge with in-process dispatch.
pub async fn route_in_process(ctx: Arc<Context>) {
    let client = ctx.kube.clone();
    bridge(
        client,
        NamespaceScope::all(),
        InProcess::new(ctx),
        Arc::new(Health::default()),
    )
    .await
}

/// Wait until a session reaches a final phase, by watching it. Returns the final object.
pub async fn follow<K>(api: &Api<K>, name: &str) -> Result<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + HasPhase
        + 'static,
{
    let mut stream = std::pin::pin!(watcher::watch_object(api.clone(), name));
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Some(k)) if k.phase().is_some_and(|p| p.is_final()) => return Ok(k),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "watch error while following {name}"),
        }
    }
    Err(Error::unavailable(
        format!("stopped following {name}: the watch ended"),
        None,
    ))
}

/// What one scheduler invocation did: the tick, the sweep, and the sessions handed on.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TickResponse {
    pub tick: TickReport,
    pub sweep: SweepReport,
    /// Sessions that need a function: created by the tick or found by the sweep (each once).
    pub to_dispatch: usize,
    /// Of those, how many were put on the bus (0 without one).
    pub dispatched: usize,
}

/// The scheduler function's work: the tick (sessions due now), the sweep (lost and stale
/// sessions), then one event per session to run, when there is somewhere to send them.
pub async fn scheduled_tick(
    client: &Client,
    tick: &Tick,
    settings: &SchedulerSettings,
    sweep_settings: &SweepSettings,
    to: Option<&dyn Dispatch>,
) -> Result<TickResponse> {
    let report = crate::scheduler::tick(client, tick, settings).await?;
    let now = tick.time.unwrap_or_else(chrono::Utc::now);
    let swept = crate::sweep::sweep(client, &settings.namespaces, now, sweep_settings).await?;
    let mut changes: Vec<Change> = report
        .created
        .iter()
        .filter_map(|key| key.split_once('/'))
        .map(|(ns, name)| {
            let r = SessionRef {
                kind: Some("BackupSession".into()),
                namespace: ns.into(),
                name: name.into(),
            };
            Change::from_ref(&r, "Added")
        })
        .collect();
    // A session this tick created can be one the sweep finds Pending too (a tick for a
    // time ahead of the session's creation): it is handed on once.
    let created: std::collections::HashSet<&str> =
        report.created.iter().map(String::as_str).collect();
    changes.extend(
        swept
            .redispatch
            .iter()
            .filter(|r| {
                r.kind.as_deref() != Some("BackupSession")
                    || !created.contains(format!("{}/{}", r.namespace, r.name).as_str())
            })
            .map(|r| Change::from_ref(r, "Sweep")),
    );
    let dispatched = match to {
        Some(to) => {
            to.dispatch(&changes).await?;
            changes.len()
        }
        None => {
            if !changes.is_empty() {
                tracing::warn!(
                    sessions = changes.len(),
                    "STASHLESS_EVENT_BUS is not set: nothing dispatches these sessions"
                );
            }
            0
        }
    };
    Ok(TickResponse {
        tick: report,
        sweep: swept,
        to_dispatch: changes.len(),
        dispatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(i: usize, pad: usize) -> Change {
        Change {
            kind: "BackupSession".into(),
            namespace: "ns".into(),
            name: format!("s-{i}-{}", "x".repeat(pad)),
            uid: None,
            resource_version: None,
            change: "Added".into(),
        }
    }

    #[test]
    fn batches_respect_entry_and_size_limits() {
        let many: Vec<Change> = (0..25).map(|i| change(i, 0)).collect();
        let b = batches(&many);
        assert_eq!(
            b.iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        let big: Vec<Change> = (0..5).map(|i| change(i, 100 * 1024)).collect();
        let b = batches(&big);
        assert!(
            b.iter().all(|b| b.len() <= 2),
            "{:?}",
            b.iter().map(|b| b.len()).collect::<Vec<_>>()
        );
        assert_eq!(b.iter().map(|b| b.len()).sum::<usize>(), 5);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn detail_carries_no_object_body() {
        let c = change(1, 0);
        let v = serde_json::to_value(&c).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["change", "kind", "name", "namespace"]);
        assert_eq!(c.detail_type(), "BackupSession Added");
    }
}
