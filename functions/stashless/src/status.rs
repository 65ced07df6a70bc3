//! Every status stashless writes, built as the typed Stash status structs of [`crate::api`]
//! and serialized into the merge patch (fields left `None` are left as they are on the
//! object). Stash's status shapes have this one home; `tests/crd_paths.rs` checks each
//! field path against the CRDs. Pure: no I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{
    BackupConfiguration, BackupConfigurationStatus, BackupSessionStatus, BackupTargetStatus,
    Condition, DEFAULT_HOST, HostBackupStats, HostRestoreStats, Repository, RepositoryStatus,
    RestoreSessionStatus, SessionPhase, SnapshotStats, TargetRef, condition, go_duration,
    human_size, note_deadline, set_condition, timestamp,
};
use crate::repository::Manifest;

const SUCCEEDED: &str = "Succeeded";
const FAILED: &str = "Failed";

/// A BackupSession skipped because another session (or a restore) of the same Vault runs.
pub fn backup_skipped(
    mut conditions: Vec<Condition>,
    reason: &str,
    duration: Duration,
) -> BackupSessionStatus {
    set_condition(
        &mut conditions,
        Condition::new(
            condition::BACKUP_SKIPPED,
            true,
            "AnotherSessionRunning",
            reason,
        ),
    );
    BackupSessionStatus {
        phase: Some(SessionPhase::Skipped),
        session_duration: Some(go_duration(duration)),
        conditions,
        ..Default::default()
    }
}

/// A verified snapshot stored: its stats under the one target and host.
pub fn backup_succeeded(
    conditions: Vec<Condition>,
    target: TargetRef,
    manifest: &Manifest,
    transfer: Duration,
    duration: Duration,
) -> BackupSessionStatus {
    let snapshot = SnapshotStats {
        name: Some(manifest.name.clone()),
        path: Some(manifest.key.clone()),
        total_size: Some(human_size(manifest.size)),
        uploaded: Some(human_size(manifest.size)),
        processing_time: Some(go_duration(transfer)),
    };
    BackupSessionStatus {
        phase: Some(SessionPhase::Succeeded),
        session_duration: Some(go_duration(duration)),
        targets: vec![BackupTargetStatus {
            r#ref: Some(target),
            total_hosts: Some(1),
            phase: Some(SUCCEEDED.into()),
            stats: vec![HostBackupStats {
                hostname: Some(DEFAULT_HOST.into()),
                phase: Some(SUCCEEDED.into()),
                snapshots: vec![snapshot],
                duration: Some(go_duration(transfer)),
                error: None,
            }],
            conditions: Vec::new(),
        }],
        conditions,
        session_deadline: None,
    }
}

/// What is known of the target when a backup fails.
#[derive(Debug, Clone)]
pub enum FailedTarget {
    /// The session's configuration could not be read: no target entry.
    Unknown,
    /// The target as the configuration names it.
    Named(TargetRef),
    /// Found failed by the sweep: the host's error only.
    Unnamed,
}

/// A failed BackupSession: the reason in the host's `error`, `DeadlineExceeded` when it
/// was one. `duration` is left out when nobody timed the session (the sweep).
pub fn backup_failed(
    mut conditions: Vec<Condition>,
    reason: &str,
    duration: Option<Duration>,
    target: FailedTarget,
) -> BackupSessionStatus {
    note_deadline(&mut conditions, reason);
    let host = HostBackupStats {
        hostname: Some(DEFAULT_HOST.into()),
        phase: Some(FAILED.into()),
        duration: duration.map(go_duration),
        error: Some(reason.into()),
        snapshots: Vec::new(),
    };
    let targets = match target {
        FailedTarget::Unknown => Vec::new(),
        FailedTarget::Named(t) => vec![failed_target(Some(t), host)],
        FailedTarget::Unnamed => vec![failed_target(None, host)],
    };
    BackupSessionStatus {
        phase: Some(SessionPhase::Failed),
        session_duration: duration.map(go_duration),
        targets,
        conditions,
        session_deadline: None,
    }
}

fn failed_target(r#ref: Option<TargetRef>, host: HostBackupStats) -> BackupTargetStatus {
    BackupTargetStatus {
        r#ref,
        total_hosts: Some(1),
        phase: Some(FAILED.into()),
        stats: vec![host],
        conditions: Vec::new(),
    }
}

/// A restored snapshot: `RestoreCompleted`, and `VaultSealed` when Vault came back sealed
/// (the snapshot's cluster had other unseal keys); `message` says what was restored.
pub fn restore_succeeded(
    mut conditions: Vec<Condition>,
    message: &str,
    sealed: Option<&str>,
    transfer: Duration,
    duration: Duration,
) -> RestoreSessionStatus {
    set_condition(
        &mut conditions,
        Condition::new(
            condition::RESTORE_COMPLETED,
            true,
            "RestoreCompleted",
            message,
        ),
    );
    if let Some(note) = sealed {
        set_condition(
            &mut conditions,
            Condition::new(condition::VAULT_SEALED, true, "SealedAfterRestore", note),
        );
    }
    RestoreSessionStatus {
        phase: Some(SessionPhase::Succeeded),
        total_hosts: Some(1),
        session_duration: Some(go_duration(duration)),
        session_deadline: None,
        stats: vec![HostRestoreStats {
            hostname: Some(DEFAULT_HOST.into()),
            phase: Some(SUCCEEDED.into()),
            duration: Some(go_duration(transfer)),
            error: None,
        }],
        conditions,
    }
}

/// A failed RestoreSession: `RestoreCompleted=False` with the reason, `DeadlineExceeded`
/// when it was one. `duration` is left out when nobody timed the session (the sweep).
pub fn restore_failed(
    mut conditions: Vec<Condition>,
    reason: &str,
    duration: Option<Duration>,
) -> RestoreSessionStatus {
    set_condition(
        &mut conditions,
        Condition::new(condition::RESTORE_COMPLETED, false, "RestoreFailed", reason),
    );
    note_deadline(&mut conditions, reason);
    RestoreSessionStatus {
        phase: Some(SessionPhase::Failed),
        total_hosts: Some(1),
        session_duration: duration.map(go_duration),
        session_deadline: None,
        stats: vec![HostRestoreStats {
            hostname: Some(DEFAULT_HOST.into()),
            phase: Some(FAILED.into()),
            duration: duration.map(go_duration),
            error: Some(reason.into()),
        }],
        conditions,
    }
}

/// What a Repository holds, from its manifests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RepositoryTotals {
    pub snapshots: usize,
    pub bytes: u64,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
}

impl RepositoryTotals {
    pub fn of(manifests: &[Manifest]) -> Self {
        RepositoryTotals {
            snapshots: manifests.len(),
            bytes: manifests.iter().map(|m| m.size).sum(),
            first: manifests.iter().map(|m| m.created_at).min(),
            last: manifests.iter().map(|m| m.created_at).max(),
        }
    }
}

/// A Repository's status after a backup and its retention: totals of what remains, and
/// how many snapshots the retention removed. The first backup time is kept once known
/// (retention may remove the oldest snapshot; Stash keeps the first time too).
pub fn repository(
    repo: &Repository,
    totals: &RepositoryTotals,
    removed: usize,
) -> RepositoryStatus {
    let old = repo.status.clone().unwrap_or_default();
    RepositoryStatus {
        observed_generation: repo.metadata.generation,
        first_backup_time: old.first_backup_time.or(totals.first.map(timestamp)),
        last_backup_time: totals.last.map(timestamp),
        integrity: Some(true),
        total_size: Some(human_size(totals.bytes)),
        snapshot_count: Some(totals.snapshots as i64),
        snapshots_removed_on_last_cleanup: Some(removed as i64),
    }
}

/// A BackupConfiguration's phase (Ready / Invalid) and `ValidationPassed` condition, or
/// `None` when the object already says so (ticks must not churn resourceVersions).
pub fn config_validity(
    config: &BackupConfiguration,
    validity: Result<(), &str>,
) -> Option<BackupConfigurationStatus> {
    let status = config.status.clone().unwrap_or_default();
    let (phase, cond) = match validity {
        Ok(()) => (
            "Ready",
            Condition::new(
                condition::VALIDATION_PASSED,
                true,
                "ResourceValidationPassed",
                "schedule, retentionPolicy and timeOut are valid",
            ),
        ),
        Err(msg) => (
            "Invalid",
            Condition::new(
                condition::VALIDATION_PASSED,
                false,
                "ResourceValidationFailed",
                msg,
            ),
        ),
    };
    let unchanged = status.phase.as_deref() == Some(phase)
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == cond.type_ && c.status == cond.status && c.message == cond.message);
    if unchanged {
        return None;
    }
    let mut conditions = status.conditions;
    set_condition(&mut conditions, cond);
    Some(BackupConfigurationStatus {
        phase: Some(phase.into()),
        observed_generation: config.metadata.generation,
        conditions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn manifest(name: &str, size: u64, created: &str) -> Manifest {
        serde_json::from_value(json!({
            "formatVersion": 1,
            "name": name,
            "key": format!("snapshots/{name}.snap"),
            "session": {"namespace": "ns", "name": "s"},
            "invoker": {"namespace": "ns", "kind": "BackupConfiguration", "name": "cfg"},
            "target": {"namespace": "ns", "kind": "AppBinding", "name": "vault", "address": "http://v"},
            "createdAt": created,
            "size": size,
            "sha256": "00",
            "durationSeconds": 1.0,
            "raft": {"index": 7, "term": 2, "raw": {}},
            "files": [],
        }))
        .expect("a manifest")
    }

    fn patch(status: &impl serde::Serialize) -> Value {
        serde_json::to_value(status).unwrap()
    }

    fn target() -> TargetRef {
        TargetRef {
            name: "vault".into(),
            ..Default::default()
        }
        .resolved("ns")
    }

    #[test]
    fn a_succeeded_backup_has_stashs_shape() {
        let m = manifest("ns/s", 2048, "2026-12-03T00:00:00Z");
        let s = backup_succeeded(
            Vec::new(),
            target(),
            &m,
            Duration::from_millis(1500),
            Duration::from_secs(3),
        );
        let v = patch(&s);
        assert_eq!(v["phase"], "Succeeded");
        assert_eq!(v["sessionDuration"], "3s");
        assert!(v.get("conditions").is_none(), "untouched when empty: {v}");
        assert!(
            v.get("sessionDeadline").is_none(),
            "the claim's deadline stays: {v}"
        );
        let t = &v["targets"][0];
        assert_eq!(t["ref"]["kind"], "AppBinding");
        assert_eq!(t["ref"]["namespace"], "ns");
        assert_eq!(t["totalHosts"], 1);
        let host = &t["stats"][0];
        assert_eq!(host["hostname"], "host-0");
        assert_eq!(host["duration"], "1.5s");
        assert_eq!(host["snapshots"][0]["totalSize"], "2.000 KiB");
        assert_eq!(host["snapshots"][0]["path"], "snapshots/ns/s.snap");
    }

    #[test]
    fn failed_backups_say_why_where_stash_does() {
        let deadline = "deadline exceeded: too slow";
        let unknown = patch(&backup_failed(
            Vec::new(),
            "no config",
            Some(Duration::from_secs(1)),
            FailedTarget::Unknown,
        ));
        assert_eq!(unknown["phase"], "Failed");
        assert!(unknown.get("targets").is_none(), "{unknown}");
        assert!(unknown.get("conditions").is_none(), "{unknown}");

        let named = patch(&backup_failed(
            Vec::new(),
            deadline,
            Some(Duration::from_secs(1)),
            FailedTarget::Named(target()),
        ));
        assert_eq!(named["targets"][0]["ref"]["name"], "vault");
        assert_eq!(named["targets"][0]["stats"][0]["error"], deadline);
        assert_eq!(named["targets"][0]["stats"][0]["duration"], "1s");
        assert_eq!(named["conditions"][0]["type"], condition::DEADLINE_EXCEEDED);

        let swept = patch(&backup_failed(
            Vec::new(),
            "lost",
            None,
            FailedTarget::Unnamed,
        ));
        assert!(swept.get("sessionDuration").is_none(), "{swept}");
        assert!(swept["targets"][0].get("ref").is_none(), "{swept}");
        assert_eq!(swept["targets"][0]["stats"][0]["error"], "lost");

        let skipped = patch(&backup_skipped(
            Vec::new(),
            "another runs",
            Duration::from_millis(20),
        ));
        assert_eq!(skipped["phase"], "Skipped");
        assert_eq!(skipped["conditions"][0]["type"], condition::BACKUP_SKIPPED);
        assert_eq!(skipped["conditions"][0]["message"], "another runs");
    }

    #[test]
    fn restores_record_completion_and_a_sealed_vault() {
        let ok = patch(&restore_succeeded(
            Vec::new(),
            "restored",
            Some("SEALED"),
            Duration::from_secs(2),
            Duration::from_secs(7),
        ));
        assert_eq!(ok["phase"], "Succeeded");
        assert_eq!(ok["stats"][0]["duration"], "2s");
        assert_eq!(ok["sessionDuration"], "7s");
        let types: Vec<&str> = ok["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [condition::RESTORE_COMPLETED, condition::VAULT_SEALED]
        );

        let failed = patch(&restore_failed(Vec::new(), "deadline exceeded: lost", None));
        assert_eq!(failed["phase"], "Failed");
        assert_eq!(failed["stats"][0]["error"], "deadline exceeded: lost");
        assert!(failed.get("sessionDuration").is_none());
        let c = failed["conditions"].as_array().unwrap();
        assert!(
            c.iter()
                .any(|c| c["type"] == condition::RESTORE_COMPLETED && c["status"] == "False")
        );
        assert!(
            c.iter()
                .any(|c| c["type"] == condition::DEADLINE_EXCEEDED && c["status"] == "True")
        );
    }

    #[test]
    fn repository_totals_and_the_first_backup_time() {
        let ms = [
            manifest("ns/a", 100, "2026-12-01T00:00:00Z"),
            manifest("ns/b", 50, "2026-12-03T00:00:00Z"),
        ];
        let t = RepositoryTotals::of(&ms);
        assert_eq!((t.snapshots, t.bytes), (2, 150));
        assert_eq!(
            t.first.map(timestamp).as_deref(),
            Some("2026-12-01T00:00:00Z")
        );
        assert_eq!(RepositoryTotals::of(&[]), RepositoryTotals::default());

        let mut repo = Repository::new("repo", Default::default());
        let s = repository(&repo, &t, 3);
        assert_eq!(s.first_backup_time.as_deref(), Some("2026-12-01T00:00:00Z"));
        assert_eq!(s.last_backup_time.as_deref(), Some("2026-12-03T00:00:00Z"));
        assert_eq!(s.total_size.as_deref(), Some("150 B"));
        assert_eq!(s.snapshots_removed_on_last_cleanup, Some(3));
        // Retention removed the oldest: the first backup time stays what it was.
        repo.status = Some(RepositoryStatus {
            first_backup_time: Some("2025-01-01T00:00:00Z".into()),
            ..Default::default()
        });
        let later = RepositoryTotals::of(&ms[1..]);
        assert_eq!(
            repository(&repo, &later, 1).first_backup_time.as_deref(),
            Some("2025-01-01T00:00:00Z")
        );
    }

    #[test]
    fn validity_is_written_only_when_it_changes() {
        let mut config = BackupConfiguration::new("cfg", Default::default());
        config.metadata.generation = Some(4);
        let ready = config_validity(&config, Ok(())).expect("first time: written");
        assert_eq!(ready.phase.as_deref(), Some("Ready"));
        assert_eq!(ready.observed_generation, Some(4));
        config.status = Some(ready);
        assert_eq!(config_validity(&config, Ok(())), None);
        let invalid = config_validity(&config, Err("bad schedule")).expect("changed");
        assert_eq!(invalid.phase.as_deref(), Some("Invalid"));
        assert_eq!(invalid.conditions.len(), 1);
        assert_eq!(
            invalid.conditions[0].message.as_deref(),
            Some("bad schedule")
        );
    }
}
