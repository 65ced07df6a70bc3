//! Session life cycle on the API server: claim with a resourceVersion precondition,
//! status writes through the status subresource, overlap checks, history cleanup.

use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{
    BackupSession, LABEL_INVOKER_NAME, LABEL_INVOKER_TYPE, RestoreSession, SessionPhase, timestamp,
};
use crate::error::{Error, Result, api_code};

/// The phase of a Stash session object.
pub trait HasPhase {
    fn phase(&self) -> Option<SessionPhase>;
}

impl HasPhase for BackupSession {
    fn phase(&self) -> Option<SessionPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}

impl HasPhase for RestoreSession {
    fn phase(&self) -> Option<SessionPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}

/// Re-read a session named by an event. `Ok(Err(why))` when it is not ours to run: gone,
/// or already past Pending (a duplicate or late delivery).
pub async fn fetch_pending<K>(
    api: &Api<K>,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<std::result::Result<K, String>>
where
    K: Resource + Clone + DeserializeOwned + Debug + HasPhase,
{
    match api.get_opt(name).await {
        Ok(Some(s)) => match s.phase() {
            Some(p) if p != SessionPhase::Pending => {
                Ok(Err(format!("the {kind} is already {}", p.as_str())))
            }
            _ => Ok(Ok(s)),
        },
        Ok(None) => Ok(Err(format!("the {kind} no longer exists"))),
        Err(e) => Err(Error::kube(format!("reading {kind} {namespace}/{name}"), e)),
    }
}

/// The longest `timeOut` accepted. A session runs inside one function invocation (at most
/// 15 minutes on Lambda), so anything near this is already capped by that; far beyond it
/// ("100000h", "99999999999s") is a typo, and would put `sessionDeadline` centuries away.
pub const MAX_TIME_OUT: Duration = Duration::from_secs(24 * 3600);

/// A session's time limit from its `timeOut` (`field` names it for the reason), or
/// `default` when unset. A value that does not parse as a Go duration, is not positive, or
/// is above [`MAX_TIME_OUT`] is an error naming the field: silently running with the
/// default instead would hide the mistake.
pub fn time_limit(field: &str, raw: Option<&str>, default: Duration) -> Result<Duration> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(default);
    };
    let shown: String = raw
        .chars()
        .take(40)
        .flat_map(char::escape_default)
        .collect();
    let fail = |why: &str| Err(Error::Invalid(format!("{field} \"{shown}\" {why}")));
    if raw.trim_start().starts_with('-') {
        return fail("is negative: a session needs a positive time limit such as \"30m\"");
    }
    match crate::api::parse_go_duration(raw) {
        None => fail(
            "is not a duration: write it as Go does, a number and a unit (h, m, s, ms), e.g. \"30m\" or \"1h30m\"",
        ),
        Some(d) if d.is_zero() => {
            fail("is zero: a session needs a positive time limit such as \"30m\"")
        }
        Some(d) if d > MAX_TIME_OUT => fail(
            "is longer than 24h, the most stashless accepts: a session runs within one function invocation (at most 15 minutes on Lambda); use e.g. \"30m\"",
        ),
        Some(d) => Ok(d),
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
        .ok_or_else(|| Error::Invalid(format!("{name} has no resourceVersion")))?;
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

/// Merge-patch `status` through the status subresource, retrying transient API errors
/// a few times: a final phase must not be lost to one dropped request.
pub async fn patch_status<K>(api: &Api<K>, name: &str, status: Value) -> Result<K>
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
pub(crate) fn past_deadline(s: &BackupSession, now: DateTime<Utc>) -> bool {
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
