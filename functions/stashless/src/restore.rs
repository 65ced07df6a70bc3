//! The restore function's logic: RestoreSession → snapshot from S3, verified in flight →
//! the active Vault node → status, Event, metrics.
//!
//! Safety first: the object's size and ETag are checked against its manifest before a byte
//! is sent; the stream is verified as it goes (gzip+tar, SHA256SUMS, and the sha256 of the
//! whole object against the manifest), and the last chunk is held back until everything
//! checked out: on any mismatch the request to Vault is cut, so Vault rejects it and its
//! data stays as it was. At most one restore per target runs at a time, and never while a
//! backup of the target is Running: the later session fails with a reason saying so (a
//! function cannot wait for minutes; create the RestoreSession again when the other ends).

use std::time::{Duration, Instant};

use bytes::Bytes;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{
    self, BackupConfiguration, BackupSession, Condition, RestoreSession, SessionPhase, condition,
    go_duration, human_size, set_condition,
};
use crate::archive::SnapshotVerifier;
use crate::backup::{Context, DEFAULT_HOST};
use crate::cluster::{EventType, record_event};
use crate::error::{Error, Result};
use crate::events::SessionRef;
use crate::metrics::{self, Gauge, MetricGroup};
use crate::repository::{Manifest, Store};
use crate::session::{self, Claim};
use crate::vault::Vault;

/// What a restore invocation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        snapshot: String,
        size: u64,
        duration: Duration,
        sealed_after: bool,
    },
    Failed {
        reason: String,
    },
    NotClaimed {
        why: String,
    },
}

/// Handle one event naming a RestoreSession.
pub async fn run(
    ctx: &Context,
    target: &SessionRef,
    lambda_deadline: Option<Instant>,
) -> Result<Outcome> {
    let started = Instant::now();
    if let Some(why) = crate::backup::not_served(&ctx.settings, &target.namespace) {
        return Ok(Outcome::NotClaimed { why });
    }
    let api: Api<RestoreSession> = Api::namespaced(ctx.kube.clone(), &target.namespace);
    let rs = match session::fetch_pending(&api, "RestoreSession", &target.namespace, &target.name)
        .await?
    {
        Ok(s) => s,
        Err(why) => return Ok(Outcome::NotClaimed { why }),
    };
    // An invalid timeOut fails the session after the claim (in `restore`); the default
    // bounds it until then.
    let limit =
        time_limit(&rs, ctx.settings.default_timeout).unwrap_or(ctx.settings.default_timeout);
    let (deadline, deadline_wall) = session::deadline(
        started,
        limit,
        lambda_deadline,
        ctx.settings.deadline_margin,
    );
    let rs = match session::claim(&api, &rs, deadline_wall).await? {
        Claim::Claimed(s) => s,
        Claim::Taken => {
            return Ok(Outcome::NotClaimed {
                why: "another invocation claimed it first".into(),
            });
        }
    };
    tracing::info!(namespace = %target.namespace, session = %target.name, "claimed RestoreSession");

    let result = match check_exclusive(ctx, &rs).await {
        Err(e) => Err(e),
        Ok(()) => restore(ctx, &rs, started, deadline).await,
    };
    match result {
        Ok(done) => finish(ctx, &api, &rs, started, Ok(done)).await,
        Err(e) => finish(ctx, &api, &rs, started, Err(e.to_string())).await,
    }
}

fn time_limit(rs: &RestoreSession, default: Duration) -> Result<Duration> {
    session::time_limit(
        "RestoreSession spec.timeOut",
        rs.spec.time_out.as_deref(),
        default,
    )
}

/// The AppBinding a RestoreSession restores into, as (namespace, name).
pub(crate) fn target_key(rs: &RestoreSession) -> Option<(String, String)> {
    let t = rs.spec.target.as_ref()?.r#ref.as_ref()?;
    Some((
        t.namespace
            .clone()
            .unwrap_or_else(|| rs.namespace().unwrap_or_default()),
        t.name.clone(),
    ))
}

/// Refuse to run next to another restore of the same target (that came first), or while a
/// backup of the target is Running.
async fn check_exclusive(ctx: &Context, me: &RestoreSession) -> Result<()> {
    let Some((tns, tname)) = target_key(me) else {
        return Ok(());
    };
    let ns = me.namespace().unwrap_or_default();
    let restores: Api<RestoreSession> = Api::namespaced(ctx.kube.clone(), &ns);
    let all = restores
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing RestoreSessions", e))?;
    let key = |r: &RestoreSession| {
        (
            r.metadata
                .creation_timestamp
                .as_ref()
                .map(crate::k8s_time)
                .unwrap_or_default(),
            r.name_any(),
        )
    };
    let mine = key(me);
    if let Some(other) = all.items.iter().find(|r| {
        r.name_any() != me.name_any()
            && r.status.as_ref().and_then(|s| s.phase) == Some(SessionPhase::Running)
            && target_key(r) == Some((tns.clone(), tname.clone()))
            && key(r) < mine
    }) {
        return Err(Error::Invalid(format!(
            "RestoreSession {} is already restoring AppBinding {tns}/{tname}: one restore per target at a time; create this RestoreSession again when it has finished",
            other.name_any()
        )));
    }
    // Backups of the same target: Running sessions whose configuration points at it.
    let configs: Api<BackupConfiguration> = Api::namespaced(ctx.kube.clone(), &tns);
    let sessions: Api<BackupSession> = Api::namespaced(ctx.kube.clone(), &tns);
    let running: Vec<BackupSession> = sessions
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing BackupSessions", e))?
        .items
        .into_iter()
        .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(SessionPhase::Running))
        .collect();
    for s in running {
        // Fail closed: a configuration we cannot read may be backing up this Vault.
        let cfg = configs.get_opt(&s.spec.invoker.name).await.map_err(|e| {
            Error::kube(
                format!(
                    "reading BackupConfiguration {tns}/{} (of Running BackupSession {}) to rule out a backup of the same Vault",
                    s.spec.invoker.name,
                    s.name_any()
                ),
                e,
            )
        })?;
        if let Some(cfg) = cfg {
            let t = cfg.spec.target.as_ref().and_then(|t| t.r#ref.as_ref());
            if t.is_some_and(|t| t.name == tname && t.namespace.as_deref().unwrap_or(&tns) == tns) {
                return Err(Error::Invalid(format!(
                    "BackupSession {} is backing up AppBinding {tns}/{tname} right now: restoring at the same time could capture or overwrite half-restored data; create this RestoreSession again when the backup has finished",
                    s.name_any()
                )));
            }
        }
    }
    Ok(())
}

struct Done {
    manifest: Manifest,
    transfer: Duration,
    sealed_after: bool,
    version_after: Option<String>,
}

/// The snapshot a RestoreSession asks for: `target.rules[].snapshots` (or the older
/// top-level `rules`), first entry; `latest` or nothing means the newest snapshot of
/// `target` (the AppBinding as (namespace, name)), or of the whole Repository when `target`
/// is None (the command-line tool's `verify`).
pub fn pick_snapshot<'a>(
    manifests: &'a [Manifest],
    requested: Option<&str>,
    target: Option<(&str, &str)>,
) -> Result<&'a Manifest> {
    if manifests.is_empty() {
        return Err(Error::Invalid(
            "the Repository holds no snapshots to restore".into(),
        ));
    }
    match requested.filter(|r| !r.is_empty() && *r != "latest") {
        None => {
            // Only the target's own snapshots: another Vault's snapshot would replace all of
            // this Vault's data with that Vault's (and with `force`, even its seal check
            // is skipped). Taking one must be asked for by name.
            let newest = manifests
                .iter()
                .filter(|m| {
                    target
                        .is_none_or(|(ns, name)| m.target.namespace == ns && m.target.name == name)
                })
                .max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
            newest.ok_or_else(|| {
                let (ns, name) = target.unwrap_or_default();
                Error::Invalid(format!(
                    "the Repository holds no snapshot of AppBinding {ns}/{name} ({} snapshot(s) of other targets): a restore of `latest` only takes the target's own; to restore another Vault's snapshot into it, name that snapshot in spec.target.rules[].snapshots",
                    manifests.len()
                ))
            })
        }
        Some(name) => {
            if let Some(m) = manifests.iter().find(|m| m.name == name) {
                return Ok(m);
            }
            let by_session: Vec<&Manifest> = manifests
                .iter()
                .filter(|m| m.session.name == name)
                .collect();
            match by_session.as_slice() {
                [one] => Ok(one),
                [] => Err(Error::Invalid(format!(
                    "snapshot {name:?} is not in the Repository ({} snapshots; names look like {:?})",
                    manifests.len(),
                    manifests.last().map(|m| m.name.as_str()).unwrap_or("")
                ))),
                many => Err(Error::Invalid(format!(
                    "snapshot {name:?} is ambiguous: {}; use the full <namespace>/<session> name",
                    many.iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}

fn requested_snapshot(rs: &RestoreSession) -> Option<String> {
    let rules = rs
        .spec
        .target
        .as_ref()
        .map(|t| t.rules.as_slice())
        .filter(|r| !r.is_empty())
        .unwrap_or(rs.spec.rules.as_slice());
    rules
        .iter()
        .flat_map(|r| r.snapshots.iter())
        .next()
        .cloned()
}

fn force_requested(rs: &RestoreSession) -> bool {
    rs.spec
        .task
        .as_ref()
        .and_then(|t| t.param("force"))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

async fn restore(
    ctx: &Context,
    rs: &RestoreSession,
    started: Instant,
    deadline: Instant,
) -> Result<Done> {
    let ns = rs.namespace().unwrap_or_default();
    time_limit(rs, Duration::ZERO)?;
    if let Some(driver) = rs.spec.driver.as_deref().filter(|d| *d != "Restic") {
        return Err(Error::Invalid(format!(
            "driver {driver:?} is not supported: stashless restores Vault raft snapshots (driver Restic, Stash's default); remove spec.driver or set it to Restic"
        )));
    }
    let repo_ref = rs
        .spec
        .repository
        .as_ref()
        .ok_or_else(|| Error::Invalid("RestoreSession spec.repository is not set".into()))?;
    let target_ref = rs.spec.target.as_ref().and_then(|t| t.r#ref.clone());
    let (_, store, mut vault) =
        crate::backup::open_store_and_vault(ctx, &ns, repo_ref, target_ref.as_ref()).await?;

    let manifests = store.list_manifests().await?;
    let requested = requested_snapshot(rs);
    let target = target_key(rs);
    let manifest = pick_snapshot(
        &manifests,
        requested.as_deref(),
        Some(
            target
                .as_ref()
                .map(|(ns, n)| (ns.as_str(), n.as_str()))
                .unwrap_or_default(),
        ),
    )?
    .clone();

    // Before a byte goes to Vault: the object is the one the manifest describes.
    let stored = store.object_info(&manifest.key).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "snapshot {} has a manifest but its object {} is missing",
            manifest.name, manifest.key
        ))
    })?;
    if stored.size != manifest.size {
        return Err(Error::Invalid(format!(
            "snapshot {} is {} bytes in S3 but its manifest says {}: the object changed after the backup; not restoring it",
            manifest.name, stored.size, manifest.size
        )));
    }
    if let (Some(want), Some(have)) = (&manifest.etag, &stored.etag)
        && want != have
    {
        return Err(Error::Invalid(format!(
            "snapshot {} has ETag {have} in S3 but {want} in its manifest: the object was replaced after the backup; not restoring it",
            manifest.name
        )));
    }

    let node = vault.active_node().await?;
    crate::backup::vault_login(ctx, &mut vault, &node).await?;
    let transfer_started = Instant::now();
    let transfer = tokio::time::timeout_at(
        deadline.into(),
        stream_to_vault(ctx, &store, &vault, &node, &manifest, force_requested(rs)),
    )
    .await;
    match transfer {
        Err(_) => {
            return Err(Error::Deadline(format!(
                "the restore did not finish within the session's time limit ({} elapsed); the upload to Vault was cut, so Vault kept its data",
                go_duration(started.elapsed())
            )));
        }
        Ok(r) => r?,
    }
    let transfer = transfer_started.elapsed();
    let health = vault.settle_after_restore(&node).await.ok();
    Ok(Done {
        manifest,
        transfer,
        sealed_after: health.as_ref().is_some_and(|h| h.sealed),
        version_after: health.and_then(|h| h.version),
    })
}

/// S3 → verifier → Vault. The last chunk is held back until the whole object verified.
async fn stream_to_vault(
    ctx: &Context,
    store: &Store,
    vault: &Vault,
    node: &str,
    manifest: &Manifest,
    force: bool,
) -> Result<()> {
    let mut object = store.open_snapshot(&manifest.name).await?;
    let (tx, rx) = mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(4);
    let body = tokio_stream::wrappers::ReceiverStream::new(rx);
    let upload = vault.restore(node, body, force);
    let feed = async {
        let mut verifier = SnapshotVerifier::new();
        let mut held: Option<Bytes> = None;
        let mut moved = 0u64;
        let fail = |msg: String| std::io::Error::other(msg);
        loop {
            let next = object.next().await;
            match next {
                None => break,
                Some(Err(e)) => {
                    let msg = format!("reading the snapshot from S3 broke: {e}");
                    let _ = tx.send(Err(fail(msg.clone()))).await;
                    return Err(Error::Storage {
                        bucket: store.bucket().into(),
                        message: msg,
                        retryable: true,
                    });
                }
                Some(Ok(chunk)) => {
                    if let Err(e) = verifier.update(&chunk) {
                        let _ = tx.send(Err(fail(e.to_string()))).await;
                        return Err(e.into());
                    }
                    moved += chunk.len() as u64;
                    if let Some(p) = &ctx.settings.progress {
                        p(moved);
                    }
                    if let Some(prev) = held.replace(chunk)
                        && tx.send(Ok(prev)).await.is_err()
                    {
                        // Vault stopped reading: its answer says why.
                        return Ok(());
                    }
                }
            }
        }
        let checked = verifier.finish().map_err(Error::from).and_then(|info| {
            if info.sha256 != manifest.sha256 {
                Err(Error::Invalid(format!(
                    "snapshot {} does not match its manifest: sha256 {} in S3, {} recorded at backup; not restoring it",
                    manifest.name, info.sha256, manifest.sha256
                )))
            } else {
                Ok(())
            }
        });
        match checked {
            Ok(()) => {
                if let Some(last) = held.take() {
                    let _ = tx.send(Ok(last)).await;
                }
                drop(tx);
                Ok(())
            }
            Err(e) => {
                let _ = tx.send(Err(fail(e.to_string()))).await;
                Err(e)
            }
        }
    };
    let (fed, sent) = tokio::join!(feed, upload);
    // A verification failure explains a cut upload better than Vault's reaction to it.
    fed?;
    sent
}

async fn finish(
    ctx: &Context,
    api: &Api<RestoreSession>,
    rs: &RestoreSession,
    started: Instant,
    result: std::result::Result<Done, String>,
) -> Result<Outcome> {
    let duration = started.elapsed();
    let mut conditions = rs
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let (phase, stats, outcome, event) = match &result {
        Ok(done) => {
            let sealed_note = if done.sealed_after {
                " Vault is SEALED now: the snapshot came from a cluster with other unseal keys. Unseal it with the unseal keys (or KMS) of the cluster the snapshot was taken from."
            } else {
                ""
            };
            let msg = format!(
                "restored snapshot {} ({}, raft index {}) in {}.{sealed_note}",
                done.manifest.name,
                human_size(done.manifest.size),
                done.manifest.raft.index,
                go_duration(done.transfer)
            );
            set_condition(
                &mut conditions,
                Condition::new(condition::RESTORE_COMPLETED, true, "RestoreCompleted", &msg),
            );
            if done.sealed_after {
                set_condition(
                    &mut conditions,
                    Condition::new(
                        "VaultSealed",
                        true,
                        "SealedAfterRestore",
                        sealed_note.trim(),
                    ),
                );
            }
            let _ = &done.version_after;
            (
                "Succeeded",
                json!({"hostname": DEFAULT_HOST, "phase": "Succeeded", "duration": go_duration(done.transfer)}),
                Outcome::Succeeded {
                    snapshot: done.manifest.name.clone(),
                    size: done.manifest.size,
                    duration,
                    sealed_after: done.sealed_after,
                },
                (
                    if done.sealed_after {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    "RestoreSessionSucceeded",
                    msg,
                ),
            )
        }
        Err(reason) => {
            set_condition(
                &mut conditions,
                Condition::new(condition::RESTORE_COMPLETED, false, "RestoreFailed", reason),
            );
            api::note_deadline(&mut conditions, reason);
            (
                "Failed",
                json!({"hostname": DEFAULT_HOST, "phase": "Failed", "duration": go_duration(duration), "error": reason}),
                Outcome::Failed {
                    reason: reason.clone(),
                },
                (EventType::Warning, "RestoreSessionFailed", reason.clone()),
            )
        }
    };
    push_metrics(ctx, &mut conditions, rs, phase == "Succeeded", duration).await;
    session::patch_status(
        api,
        &rs.name_any(),
        json!({
            "phase": phase,
            "sessionDuration": go_duration(duration),
            "totalHosts": 1,
            "stats": [stats],
            "conditions": conditions,
        }),
    )
    .await?;
    record_event(&ctx.kube, rs, event.0, event.1, &event.2).await;
    Ok(outcome)
}

async fn push_metrics(
    ctx: &Context,
    conditions: &mut Vec<Condition>,
    rs: &RestoreSession,
    success: bool,
    duration: Duration,
) {
    let ns = rs.namespace().unwrap_or_default();
    let b = if success { 1.0 } else { 0.0 };
    metrics::emit_emf(&metrics::emf_line(
        &[("RestoreSession", format!("{ns}/{}", rs.name_any()))],
        &[
            ("RestoreSuccess", b, "Count"),
            ("RestoreDuration", duration.as_secs_f64(), "Seconds"),
        ],
    ));
    let target = rs
        .spec
        .target
        .as_ref()
        .and_then(|t| t.r#ref.clone())
        .unwrap_or_default();
    let group = MetricGroup {
        job: "stash-restore",
        grouping: vec![("namespace", ns.clone()), ("invoker_name", rs.name_any())],
        labels: vec![
            ("invoker_kind", "RestoreSession".into()),
            ("invoker_name", rs.name_any()),
            ("namespace", ns.clone()),
            (
                "target_kind",
                target.kind.clone().unwrap_or_else(|| "AppBinding".into()),
            ),
            ("target_name", target.name.clone()),
            ("host", DEFAULT_HOST.into()),
        ],
        gauges: vec![
            Gauge {
                name: "stash_restore_session_success",
                help: "Indicates whether the restore session succeeded",
                value: b,
            },
            Gauge {
                name: "stash_restore_session_duration_seconds",
                help: "Time taken to complete the restore session",
                value: duration.as_secs_f64(),
            },
            Gauge {
                name: "stash_restore_host_restore_success",
                help: "Indicates whether the restore of the host succeeded",
                value: b,
            },
        ],
    };
    crate::backup::publish(ctx, conditions, &group).await;
}
