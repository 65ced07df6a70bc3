//! Session life cycle on the API server: claim with a resourceVersion precondition,
//! deadlines, status writes through the status subresource, both mutual-exclusion checks
//! (backup beside backup or restore, restore beside restore or backup), history cleanup,
//! and what an invocation did ([`Outcome`]).

use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{
    BackupConfiguration, BackupSession, Condition, LABEL_INVOKER_NAME, LABEL_INVOKER_TYPE,
    RestoreSession, SessionPhase, condition, timestamp,
};
use crate::config::RetryPolicy;
use crate::error::{Error, ErrorKind, Result, api_code};

/// What a backup or restore invocation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        snapshot: String,
        size: u64,
        /// The whole session, claim to final status.
        duration: Duration,
        /// A restore left Vault sealed (the snapshot's cluster had other unseal keys).
        sealed_after: bool,
    },
    Failed {
        reason: String,
    },
    /// A backup skipped: another session of the same Vault was running.
    Skipped {
        reason: String,
    },
    /// Not ours to run: gone, already final, claimed by another invocation, or outside
    /// the namespaces served.
    NotClaimed {
        why: String,
    },
}

impl Outcome {
    /// The phase written on the session, if one was.
    pub fn phase(&self) -> Option<SessionPhase> {
        match self {
            Outcome::Succeeded { .. } => Some(SessionPhase::Succeeded),
            Outcome::Failed { .. } => Some(SessionPhase::Failed),
            Outcome::Skipped { .. } => Some(SessionPhase::Skipped),
            Outcome::NotClaimed { .. } => None,
        }
    }

    /// The function's response: JSON with named fields (`outcome`, `phase`, `reason` and,
    /// for a success, the snapshot, its size and the session's duration).
    pub fn to_response(&self) -> Value {
        let phase = self.phase().map(SessionPhase::as_str);
        // The phase written, or NotClaimed when none was.
        let outcome = phase.unwrap_or("NotClaimed");
        match self {
            Outcome::Succeeded {
                snapshot,
                size,
                duration,
                sealed_after,
            } => json!({
                "outcome": outcome,
                "phase": phase,
                "snapshot": snapshot,
                "sizeBytes": size,
                "durationSeconds": duration.as_secs_f64(),
                "sealedAfter": sealed_after,
            }),
            Outcome::Failed { reason }
            | Outcome::Skipped { reason }
            | Outcome::NotClaimed { why: reason } => {
                json!({ "outcome": outcome, "phase": phase, "reason": reason })
            }
        }
    }
}

/// The phase and conditions of a Stash session object.
pub trait HasPhase {
    fn phase(&self) -> Option<SessionPhase>;
    /// Its current conditions, the base of the next status write.
    fn conditions(&self) -> Vec<Condition>;
    /// Set a condition on the object in hand (written with its next status).
    fn set_condition(&mut self, condition: Condition);
}

impl HasPhase for BackupSession {
    fn phase(&self) -> Option<SessionPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    fn conditions(&self) -> Vec<Condition> {
        self.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }

    fn set_condition(&mut self, condition: Condition) {
        let status = self.status.get_or_insert_with(Default::default);
        crate::api::set_condition(&mut status.conditions, condition);
    }
}

impl HasPhase for RestoreSession {
    fn phase(&self) -> Option<SessionPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    fn conditions(&self) -> Vec<Condition> {
        self.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }

    fn set_condition(&mut self, condition: Condition) {
        let status = self.status.get_or_insert_with(Default::default);
        crate::api::set_condition(&mut status.conditions, condition);
    }
}

/// Re-read a session named by an event. `Ok(Err(why))` when it is not there (deleted, or
/// never created: an event cannot tell which).
pub async fn fetch<K>(
    api: &Api<K>,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<std::result::Result<K, String>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(Ok(s)),
        Ok(None) => Ok(Err(format!("there is no {kind} {namespace}/{name}"))),
        Err(e) => Err(Error::kube(format!("reading {kind} {namespace}/{name}"), e)),
    }
}

/// Why a session is not one to claim: already past Pending (a duplicate or late delivery).
pub fn not_pending<K: HasPhase>(kind: &str, s: &K) -> Option<String> {
    match s.phase() {
        Some(p) if p != SessionPhase::Pending => {
            Some(format!("the {kind} is already {}", p.as_str()))
        }
        _ => None,
    }
}

/// When this session must be done: its own time limit from `started`, but never past the
/// Lambda deadline less `margin` (time to abort and write status). Also as wall-clock time,
/// for `status.sessionDeadline`.
pub fn deadline(
    started: std::time::Instant,
    limit: Duration,
    lambda_deadline: Option<std::time::Instant>,
    margin: Duration,
) -> (std::time::Instant, DateTime<Utc>) {
    let mut at = started + limit;
    if let Some(ld) = lambda_deadline {
        at = at.min(ld.checked_sub(margin).unwrap_or(ld));
    }
    let wall = Utc::now()
        + chrono::Duration::from_std(at.saturating_duration_since(started)).unwrap_or_default();
    (at, wall)
}

/// Outcome of trying to claim a session.
#[derive(Debug)]
pub enum Claim<K> {
    /// We own it now; the object as the server returned it after our patch.
    Claimed(K),
    /// Someone else claimed it first (conflict) or it already reached a phase.
    Taken,
}

/// Claim `obj` by moving its status to Running, with its resourceVersion as precondition:
/// of several concurrent invocations exactly one wins; the others get 409 and stop.
pub async fn claim<K>(api: &Api<K>, obj: &K, deadline: DateTime<Utc>) -> Result<Claim<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    let rv = obj
        .resource_version()
        .ok_or_else(|| Error::invalid(format!("{name} has no resourceVersion")))?;
    let patch = json!({
        "metadata": { "resourceVersion": rv },
        "status": {
            "phase": SessionPhase::Running.as_str(),
            "sessionDeadline": timestamp(deadline),
        }
    });
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(k) => Ok(Claim::Claimed(k)),
        Err(e) if api_code(&e) == Some(409) => Ok(Claim::Taken),
        Err(e) if api_code(&e) == Some(404) => Ok(Claim::Taken),
        Err(e) => Err(Error::kube(format!("claiming {name}"), e)),
    }
}

/// Merge-patch `status` (a typed status from [`crate::status`]) through the status
/// subresource, retrying transient API errors a few times: a final phase must not be lost
/// to one dropped request.
pub async fn patch_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({ "status": status });
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(k) => return Ok(k),
            Err(e) => {
                let transient = !matches!(api_code(&e), Some(c) if c < 500 && c != 429 && c != 409);
                if !transient || attempt >= 5 {
                    return Err(Error::kube(format!("writing status of {name}"), e));
                }
                tracing::warn!(error = %e, attempt, "status write failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// Merge-patch `status` only if `obj` is unchanged since it was read (its resourceVersion
/// as precondition). `Ok(false)` when it changed or is gone: whoever changed it stands.
pub async fn patch_status_if_unchanged<K>(
    api: &Api<K>,
    obj: &K,
    status: &impl Serialize,
) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({
        "metadata": { "resourceVersion": obj.resource_version() },
        "status": status,
    });
    let name = obj.name_any();
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if matches!(api_code(&e), Some(409) | Some(404)) => Ok(false),
        Err(e) => Err(Error::kube(format!("writing status of {name}"), e)),
    }
}

/// Label selector for the sessions of one BackupConfiguration.
pub fn invoker_selector(kind: &str, name: &str) -> String {
    format!("{LABEL_INVOKER_TYPE}={kind},{LABEL_INVOKER_NAME}={name}")
}

/// Sessions of the same invoker, oldest first.
pub async fn sessions_of(
    api: &Api<BackupSession>,
    kind: &str,
    name: &str,
) -> Result<Vec<BackupSession>> {
    let list = api
        .list(&ListParams::default().labels(&invoker_selector(kind, name)))
        .await
        .map_err(|e| Error::kube(format!("listing BackupSessions of {kind} {name}"), e))?;
    let mut items: Vec<BackupSession> = list
        .items
        .into_iter()
        .filter(|s| s.spec.invoker.kind == kind && s.spec.invoker.name == name)
        .collect();
    items.sort_by_key(order_key);
    Ok(items)
}

fn order_key(s: &BackupSession) -> (DateTime<Utc>, String) {
    (
        s.metadata
            .creation_timestamp
            .as_ref()
            .map(crate::k8s_time)
            .unwrap_or_default(),
        s.name_any(),
    )
}

fn phase(s: &BackupSession) -> Option<SessionPhase> {
    s.phase()
}

/// Another session of the same invoker that is Running and came first, if any. A Running
/// session past its `sessionDeadline` does not count: its owner is gone (the sweep fails it).
/// The tie-break by creation order means two sessions claimed at once do not both skip.
pub fn running_before<'a>(
    siblings: &'a [BackupSession],
    me: &BackupSession,
    now: DateTime<Utc>,
) -> Option<&'a BackupSession> {
    let my_key = order_key(me);
    siblings.iter().find(|s| {
        s.name_any() != me.name_any()
            && phase(s) == Some(SessionPhase::Running)
            && order_key(s) < my_key
            && !past_deadline(s, now)
    })
}

/// Its `status.sessionDeadline` has passed at `now` (none written: not past).
pub fn past_deadline(s: &BackupSession, now: DateTime<Utc>) -> bool {
    s.status
        .as_ref()
        .and_then(|st| st.session_deadline.as_deref())
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .is_some_and(|d| d.with_timezone(&Utc) < now)
}

/// Delete finished sessions beyond `limit` (newest kept), as Stash's `backupHistoryLimit`.
/// Running and Pending sessions are never touched. Returns how many were deleted.
pub async fn clean_history(
    api: &Api<BackupSession>,
    siblings: &[BackupSession],
    limit: usize,
) -> Result<usize> {
    let finished: Vec<&BackupSession> = siblings
        .iter()
        .filter(|s| phase(s).is_some_and(|p| p.is_final()))
        .collect();
    let excess = finished.len().saturating_sub(limit);
    let mut deleted = 0;
    for s in finished.into_iter().take(excess) {
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Ok(_) => deleted += 1,
            Err(e) if api_code(&e) == Some(404) => {}
            Err(e) => {
                return Err(Error::kube(
                    format!("deleting old BackupSession {}", s.name_any()),
                    e,
                ));
            }
        }
    }
    Ok(deleted)
}

fn running(phase: Option<SessionPhase>) -> bool {
    phase == Some(SessionPhase::Running)
}

/// A Running RestoreSession into this configuration's AppBinding, if any (RestoreSessions
/// in the target's namespace), as `namespace/name`: a snapshot taken while it runs could
/// hold half-restored data.
pub async fn restore_running(
    client: &Client,
    config: &BackupConfiguration,
) -> Result<Option<String>> {
    let Some(t) = config.target_ref() else {
        return Ok(None);
    };
    let ns = t
        .namespace
        .clone()
        .unwrap_or_else(|| config.namespace().unwrap_or_default());
    let api: Api<RestoreSession> = Api::namespaced(client.clone(), &ns);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing RestoreSessions", e))?;
    let wanted = Some((ns.clone(), t.name.clone()));
    Ok(list
        .items
        .iter()
        .find(|rs| running(rs.phase()) && rs.target_key() == wanted)
        .map(|rs| format!("{ns}/{}", rs.name_any())))
}

/// Refuse a restore while another restore of the same target is Running, or a backup of
/// the target is ([`Error::Conflict`]: it may run once the other ends). Called after the
/// claim, so of two restores claimed at once each sees the other Running and both fail,
/// rather than both running: no order between them is needed, and no reserved
/// concurrency either.
pub async fn check_restore_exclusive(client: &Client, me: &RestoreSession) -> Result<()> {
    let Some((tns, tname)) = me.target_key() else {
        return Ok(());
    };
    let ns = me.namespace().unwrap_or_default();
    let restores: Api<RestoreSession> = Api::namespaced(client.clone(), &ns);
    let all = restores
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing RestoreSessions", e))?;
    let target = Some((tns.clone(), tname.clone()));
    if let Some(other) = all
        .items
        .iter()
        .find(|r| r.name_any() != me.name_any() && running(r.phase()) && r.target_key() == target)
    {
        return Err(Error::Conflict(format!(
            "RestoreSession {} is already restoring AppBinding {tns}/{tname}: one restore per target at a time; create this RestoreSession again when it has finished",
            other.name_any()
        )));
    }
    // Backups of the same target: Running sessions whose configuration points at it.
    let configs: Api<BackupConfiguration> = Api::namespaced(client.clone(), &tns);
    let sessions: Api<BackupSession> = Api::namespaced(client.clone(), &tns);
    let running_backups: Vec<BackupSession> = sessions
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing BackupSessions", e))?
        .items
        .into_iter()
        .filter(|s| running(s.phase()))
        .collect();
    for s in running_backups {
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
        let t = cfg.as_ref().and_then(|c| c.target_ref());
        if t.is_some_and(|t| t.name == tname && t.namespace.as_deref().unwrap_or(&tns) == tns) {
            return Err(Error::Conflict(format!(
                "BackupSession {} is backing up AppBinding {tns}/{tname} right now: restoring at the same time could capture or overwrite half-restored data; create this RestoreSession again when the backup has finished",
                s.name_any()
            )));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------ retries

/// Annotation on a retry session: the name of the session the retries started from.
pub const RETRY_OF: &str = "stashless.io/retry-of";
/// Annotation on a retry session: which retry it is (1, 2, …).
pub const RETRY_ATTEMPT: &str = "stashless.io/retry-attempt";

/// What follows a failed backup under `spec.retryConfig`, as Stash retries: a new
/// BackupSession after `delay` while `spec.retryLeft` lasts, never after a failure only an
/// edit can fix.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryPlan {
    /// The configuration asks for no retries.
    NotAsked,
    /// BackupSession `name`, retry `attempt` of `of`, is created at `at`.
    Follows {
        name: String,
        attempt: u32,
        of: u32,
        at: DateTime<Utc>,
    },
    /// Retries were asked for, but none follows: why.
    Stops(String),
}

impl RetryPlan {
    pub fn follows(&self) -> bool {
        matches!(self, RetryPlan::Follows { .. })
    }

    /// The `BackupRetryScheduled` condition saying so; none when no retries were asked for.
    pub fn condition(&self) -> Option<Condition> {
        match self {
            RetryPlan::NotAsked => None,
            RetryPlan::Follows {
                name,
                attempt,
                of,
                at,
            } => Some(Condition::new(
                condition::BACKUP_RETRY_SCHEDULED,
                true,
                "RetryScheduled",
                format!(
                    "retry {attempt} of {of}: BackupSession {name} is created at {} (spec.retryConfig)",
                    timestamp(*at)
                ),
            )),
            RetryPlan::Stops(why) => Some(Condition::new(
                condition::BACKUP_RETRY_SCHEDULED,
                false,
                "NotRetried",
                why.clone(),
            )),
        }
    }
}

/// Which retry `s` is (0: not a retry).
fn retry_attempt(s: &BackupSession) -> u32 {
    s.annotations()
        .get(RETRY_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// The session the retries of `s` started from: `s` itself unless it is a retry.
fn retry_origin(s: &BackupSession) -> String {
    s.annotations()
        .get(RETRY_OF)
        .cloned()
        .unwrap_or_else(|| s.name_any())
}

/// The name of retry `attempt` of the session `s` (itself perhaps a retry).
fn retry_name(s: &BackupSession, attempt: u32) -> String {
    format!("{}-retry-{attempt}", retry_origin(s))
}

/// What follows `failed` (failed at `now` with an error of `kind`) under `policy`.
pub fn retry_plan(
    failed: &BackupSession,
    policy: Option<RetryPolicy>,
    kind: ErrorKind,
    now: DateTime<Utc>,
) -> RetryPlan {
    let Some(policy) = policy.filter(|p| p.max_retry > 0) else {
        return RetryPlan::NotAsked;
    };
    let left = failed.spec.retry_left.unwrap_or(0);
    if left <= 0 {
        return RetryPlan::Stops(format!(
            "not retried: no retry left (spec.retryLeft is {left}; spec.retryConfig.maxRetry is {})",
            policy.max_retry
        ));
    }
    match kind {
        ErrorKind::Unavailable | ErrorKind::Deadline | ErrorKind::Conflict => {}
        ErrorKind::Invalid | ErrorKind::Integrity => {
            return RetryPlan::Stops(
                "not retried: this failure needs an edit of the objects (or the stored bytes are wrong), which the same backup again cannot fix".into(),
            );
        }
    }
    let attempt = retry_attempt(failed) + 1;
    RetryPlan::Follows {
        name: retry_name(failed, attempt),
        attempt,
        of: attempt + left as u32 - 1,
        at: now + chrono::Duration::from_std(policy.delay).unwrap_or_default(),
    }
}

/// When the retry a failed session's `BackupRetryScheduled` condition announces is due, and
/// its name: `None` when it announces none.
pub fn retry_due(failed: &BackupSession, policy: RetryPolicy) -> Option<(String, DateTime<Utc>)> {
    if failed.phase() != Some(SessionPhase::Failed) {
        return None;
    }
    let c = failed
        .conditions()
        .into_iter()
        .find(|c| c.type_ == condition::BACKUP_RETRY_SCHEDULED && c.status == "True")?;
    let since = DateTime::parse_from_rfc3339(&c.last_transition_time)
        .ok()?
        .with_timezone(&Utc);
    let at = since + chrono::Duration::from_std(policy.delay).unwrap_or_default();
    Some((retry_name(failed, retry_attempt(failed) + 1), at))
}

/// The BackupSession that retries `failed`: its labels, owner and invoker, one retry less
/// left, and annotations saying which retry of which session it is.
pub fn retry_session(failed: &BackupSession) -> BackupSession {
    let attempt = retry_attempt(failed) + 1;
    let mut annotations = std::collections::BTreeMap::from([
        (RETRY_OF.to_string(), retry_origin(failed)),
        (RETRY_ATTEMPT.to_string(), attempt.to_string()),
    ]);
    if let Some(serve) = failed.annotations().get(crate::serve::SERVE_ANNOTATION) {
        annotations.insert(crate::serve::SERVE_ANNOTATION.to_string(), serve.clone());
    }
    let mut spec = failed.spec.clone();
    spec.retry_left = Some(failed.spec.retry_left.unwrap_or(0).saturating_sub(1).max(0));
    let mut retry = BackupSession::new(&retry_name(failed, attempt), spec);
    retry.metadata.namespace = failed.namespace();
    retry.metadata.labels = Some(failed.labels().clone());
    retry.metadata.annotations = Some(annotations);
    retry.metadata.owner_references = failed.metadata.owner_references.clone();
    retry
}

/// Create the retry of `failed`: `Ok(true)` when created, `Ok(false)` when it exists
/// already (a repeated tick or delivery).
pub async fn create_retry(api: &Api<BackupSession>, failed: &BackupSession) -> Result<bool> {
    let retry = retry_session(failed);
    match api.create(&Default::default(), &retry).await {
        Ok(_) => {
            tracing::info!(session = %retry.name_any(), of = %failed.name_any(), "created the retry BackupSession");
            Ok(true)
        }
        Err(e) if api_code(&e) == Some(409) => Ok(false),
        Err(e) => Err(Error::kube(
            format!("creating retry BackupSession {}", retry.name_any()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackupInvokerRef, BackupSessionSpec, BackupSessionStatus};

    fn session(
        name: &str,
        created: i64,
        phase: Option<SessionPhase>,
        deadline: Option<&str>,
    ) -> BackupSession {
        let mut s = BackupSession::new(
            name,
            BackupSessionSpec {
                invoker: BackupInvokerRef {
                    api_group: None,
                    kind: "BackupConfiguration".into(),
                    name: "cfg".into(),
                },
                retry_left: None,
            },
        );
        s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        s.status = Some(BackupSessionStatus {
            phase,
            session_deadline: deadline.map(String::from),
            ..Default::default()
        });
        s
    }

    #[test]
    fn an_earlier_running_session_comes_first_unless_its_deadline_passed() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let me = session("b", 200, Some(SessionPhase::Running), None);
        let earlier = session(
            "a",
            100,
            Some(SessionPhase::Running),
            Some("2026-12-03T10:05:00Z"),
        );
        let lost = session(
            "a",
            100,
            Some(SessionPhase::Running),
            Some("2026-12-03T09:55:00Z"),
        );
        let later = session("c", 300, Some(SessionPhase::Running), None);
        let done = session("a", 100, Some(SessionPhase::Succeeded), None);
        assert_eq!(
            running_before(&[earlier.clone(), me.clone()], &me, now).map(|s| s.name_any()),
            Some("a".into())
        );
        assert!(running_before(&[lost.clone(), me.clone()], &me, now).is_none());
        assert!(running_before(&[later, me.clone()], &me, now).is_none());
        assert!(running_before(&[done], &me, now).is_none());
        assert!(past_deadline(&lost, now));
        assert!(!past_deadline(&earlier, now));
        assert!(!past_deadline(&me, now));
    }

    #[test]
    fn deadline_is_the_session_limit_or_lambdas_less_the_margin() {
        let start = std::time::Instant::now();
        let (at, _) = deadline(start, Duration::from_secs(60), None, Duration::from_secs(5));
        assert_eq!(at - start, Duration::from_secs(60));
        let lambda = start + Duration::from_secs(30);
        let (at, wall) = deadline(
            start,
            Duration::from_secs(60),
            Some(lambda),
            Duration::from_secs(5),
        );
        assert_eq!(at - start, Duration::from_secs(25));
        let ahead = (wall - Utc::now()).num_seconds();
        assert!((23..=25).contains(&ahead), "{ahead}");
    }

    #[test]
    fn responses_are_json_with_named_fields() {
        let ok = Outcome::Succeeded {
            snapshot: "ns/s".into(),
            size: 10,
            duration: Duration::from_millis(1500),
            sealed_after: false,
        };
        assert_eq!(
            ok.to_response(),
            json!({"outcome": "Succeeded", "phase": "Succeeded", "snapshot": "ns/s", "sizeBytes": 10, "durationSeconds": 1.5, "sealedAfter": false})
        );
        let failed = Outcome::Failed {
            reason: "bad".into(),
        };
        assert_eq!(
            failed.to_response(),
            json!({"outcome": "Failed", "phase": "Failed", "reason": "bad"})
        );
        let not = Outcome::NotClaimed { why: "gone".into() };
        assert_eq!(
            not.to_response(),
            json!({"outcome": "NotClaimed", "phase": null, "reason": "gone"})
        );
        assert_eq!(
            Outcome::Skipped { reason: "r".into() }.phase(),
            Some(SessionPhase::Skipped)
        );
    }
}
