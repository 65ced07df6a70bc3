//! The sweep, run inside every scheduler tick: level-triggered repair, so the product works
//! with no in-cluster component and nothing is ever left Running.
//!
//! - A BackupSession Running past its `status.sessionDeadline` lost its function (Lambda
//!   killed, crashed, or a final status write that never landed). It is handed back to the
//!   backup function, which settles it from the repository (Succeeded if its snapshot and
//!   manifest are stored, else Failed after aborting its upload). Still Running once
//!   `settle_grace` has passed too, it is marked Failed here.
//! - A RestoreSession Running past its deadline is marked Failed with a reason.
//! - A BackupSession whose BackupConfiguration is gone is marked Failed.
//! - A session still Pending after a grace period was never picked up (a lost event): it is
//!   returned for dispatching again. The functions re-read and claim, so a duplicate is
//!   harmless.
//!
//! Only stashless's sessions ([`crate::serve`]) are repaired or handed on.
//!
//! Every write carries the resourceVersion the sweep saw: if the function finished in the
//! meantime, the write conflicts and the function's own status stands.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::api::{BackupConfiguration, BackupSession, RestoreSession, SessionPhase};
use crate::context::NamespaceScope;
use crate::error::{Error, Result};
use crate::events::SessionRef;
use crate::serve::Owners;
use crate::session::{self, HasPhase};
use crate::status::{self, FailedTarget};

#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// A session Pending for longer than this is dispatched again.
    pub pending_grace: chrono::Duration,
    /// A Running session without a `sessionDeadline` (written by something other than
    /// stashless) is considered lost after this long.
    pub running_without_deadline: chrono::Duration,
    /// How long after its deadline a lost BackupSession is handed back to the backup
    /// function to settle before the sweep fails it itself.
    pub settle_grace: chrono::Duration,
}

impl Default for SweepSettings {
    fn default() -> Self {
        SweepSettings {
            pending_grace: chrono::Duration::minutes(2),
            running_without_deadline: chrono::Duration::minutes(30),
            settle_grace: chrono::Duration::minutes(10),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SweepReport {
    /// Sessions to dispatch again (`kind` set).
    pub redispatch: Vec<SessionRef>,
    /// Sessions marked Failed here, with the reason (`Kind namespace/name`).
    pub failed: BTreeMap<String, String>,
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> DateTime<Utc> {
    meta.creation_timestamp
        .as_ref()
        .map(crate::k8s_time)
        .unwrap_or_default()
}

fn deadline_of(deadline: Option<&str>) -> Option<DateTime<Utc>> {
    deadline
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&Utc))
}

/// Why a Running session is lost, if it is.
fn lost(
    deadline: Option<&str>,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    s: &SweepSettings,
) -> Option<String> {
    match deadline_of(deadline) {
        Some(d) if d < now => Some(format!(
            "deadline exceeded: the function running this session stopped before recording a result (sessionDeadline {} passed); it runs again at the next schedule",
            crate::api::timestamp(d)
        )),
        Some(_) => None,
        None if now - created_at > s.running_without_deadline => Some(format!(
            "deadline exceeded: Running for more than {} minutes without a deadline; nobody is working on it",
            s.running_without_deadline.num_minutes()
        )),
        None => None,
    }
}

/// One sweep over the namespaces in scope at `now`.
pub async fn sweep(
    client: &Client,
    namespaces: &NamespaceScope,
    now: DateTime<Utc>,
    s: &SweepSettings,
) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    // One scope at a time (all namespaces, or each one served): the three kinds of it.
    let scopes = namespaces
        .apis::<BackupSession>(client)
        .into_iter()
        .zip(namespaces.apis::<RestoreSession>(client))
        .zip(namespaces.apis::<BackupConfiguration>(client));
    for ((backups, restores), configs) in scopes {
        let lp = ListParams::default();
        let listed = configs
            .list(&lp)
            .await
            .map_err(|e| Error::kube("listing BackupConfigurations", e))?
            .items;
        let existing: BTreeSet<(String, String)> = listed
            .iter()
            .map(|c| (c.namespace().unwrap_or_default(), c.name_any()))
            .collect();
        // Only stashless's sessions are repaired or handed on; another product's are not
        // even looked at further.
        let owners = Owners::new(client).knowing_configs(&listed);
        for bs in backups
            .list(&lp)
            .await
            .map_err(|e| Error::kube("listing BackupSessions", e))?
            .items
        {
            let ns = bs.namespace().unwrap_or_default();
            let api: Api<BackupSession> = Api::namespaced(client.clone(), &ns);
            let key = format!("BackupSession {ns}/{}", bs.name_any());
            let phase = bs.phase();
            let active = matches!(
                phase,
                None | Some(SessionPhase::Pending) | Some(SessionPhase::Running)
            );
            let owner_gone = bs.spec.invoker.kind == "BackupConfiguration"
                && !existing.contains(&(ns.clone(), bs.spec.invoker.name.clone()));
            let deadline = bs
                .status
                .as_ref()
                .and_then(|s| s.session_deadline.as_deref());
            let running_lost = (phase == Some(SessionPhase::Running))
                .then(|| lost(deadline, created(&bs.metadata), now, s))
                .flatten();
            // Within the grace the backup function settles it (it can see the repository).
            let settle = running_lost.is_some()
                && !(active && owner_gone)
                && deadline_of(deadline).is_some_and(|d| now - d < s.settle_grace);
            let reason = if active && owner_gone {
                Some(format!(
                    "BackupConfiguration {ns}/{} no longer exists: nothing to back up",
                    bs.spec.invoker.name
                ))
            } else if settle {
                None
            } else {
                running_lost
            };
            let redispatch = settle
                || (matches!(phase, None | Some(SessionPhase::Pending))
                    && now - created(&bs.metadata) > s.pending_grace);
            if (reason.is_some() || redispatch) && !owners.backup_session(&bs).await?.0.is_ours() {
                continue;
            }
            if let Some(reason) = reason {
                let status =
                    status::backup_failed(bs.conditions(), &reason, None, FailedTarget::Unnamed);
                if session::patch_status_if_unchanged(&api, &bs, &status).await? {
                    report.failed.insert(key, reason);
                }
            } else if redispatch {
                report.redispatch.push(SessionRef {
                    kind: Some("BackupSession".into()),
                    namespace: ns,
                    name: bs.name_any(),
                });
            }
        }
        for rs in restores
            .list(&lp)
            .await
            .map_err(|e| Error::kube("listing RestoreSessions", e))?
            .items
        {
            let ns = rs.namespace().unwrap_or_default();
            let api: Api<RestoreSession> = Api::namespaced(client.clone(), &ns);
            let phase = rs.phase();
            let active = matches!(
                phase,
                None | Some(SessionPhase::Pending) | Some(SessionPhase::Running)
            );
            if !active || !owners.restore_session(&rs).await?.is_ours() {
                continue;
            }
            if phase == Some(SessionPhase::Running) {
                let deadline = rs
                    .status
                    .as_ref()
                    .and_then(|s| s.session_deadline.as_deref());
                if let Some(reason) = lost(deadline, created(&rs.metadata), now, s) {
                    let status = status::restore_failed(rs.conditions(), &reason, None);
                    if session::patch_status_if_unchanged(&api, &rs, &status).await? {
                        report
                            .failed
                            .insert(format!("RestoreSession {ns}/{}", rs.name_any()), reason);
                    }
                }
            } else if matches!(phase, None | Some(SessionPhase::Pending))
                && now - created(&rs.metadata) > s.pending_grace
            {
                report.redispatch.push(SessionRef {
                    kind: Some("RestoreSession".into()),
                    namespace: ns,
                    name: rs.name_any(),
                });
            }
        }
    }
    Ok(report)
}
