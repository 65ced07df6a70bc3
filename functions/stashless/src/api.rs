//! The Stash and AppBinding kinds, as Stash defines them (`reference/stash-crds/`).
//!
//! Only the fields stashless reads or writes are modelled. Fields a Stash user sets
//! expecting an effect stashless does not have (keepTags, alias, …) are read only to be
//! refused with a reason (`config::check_refused` and friends; they are skipped in the
//! generated schemas and never written); hooks are read as JSON and checked into typed
//! hooks by `config::hooks`; fields with no meaning without a pod
//! (runtimeSettings, interimVolumeTemplate, …) are not read. `docs/stash-fields.md` lists
//! every field with its verdict. Nothing but `status` (via the status subresource) and new
//! BackupSessions is ever written. Every field path here is checked against the
//! reference CRD schemas by `tests/crd_paths.rs` in this crate.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const STASH_GROUP: &str = "stash.appscode.com";
/// Labels Stash puts on the BackupSessions its CronJob creates (`apis/constants.go`).
pub const LABEL_INVOKER_TYPE: &str = "stash.appscode.com/invoker-type";
pub const LABEL_INVOKER_NAME: &str = "stash.appscode.com/invoker-name";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "stashless";
/// Stash's name for the single "host" of an application backup.
pub const DEFAULT_HOST: &str = "host-0";
/// An AppBinding's API version and kind, the defaults of a target reference.
pub const APPBINDING_API_VERSION: &str = "appcatalog.appscode.com/v1alpha1";
pub const APPBINDING_KIND: &str = "AppBinding";

/// Condition types Stash uses (`apis/constants.go`, `v1beta1` session types).
pub mod condition {
    pub const BACKUP_SKIPPED: &str = "BackupSkipped";
    pub const BACKUP_HISTORY_CLEANED: &str = "BackupHistoryCleaned";
    pub const RETENTION_POLICY_APPLIED: &str = "RetentionPolicyApplied";
    pub const REPOSITORY_INTEGRITY_VERIFIED: &str = "RepositoryIntegrityVerified";
    pub const METRICS_PUSHED: &str = "MetricsPushed";
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    pub const RESTORE_COMPLETED: &str = "RestoreCompleted";
    pub const VALIDATION_PASSED: &str = "ValidationPassed";
    pub const REPOSITORY_FOUND: &str = "RepositoryFound";
    pub const BACKEND_SECRET_FOUND: &str = "BackendSecretFound";
    pub const BACKUP_TARGET_FOUND: &str = "BackupTargetFound";
    /// stashless's own: the snapshot stream passed in-flight verification.
    pub const SNAPSHOT_VERIFIED: &str = "SnapshotVerified";
    /// stashless's own: Vault was sealed after a restore (the snapshot's unseal keys differ).
    pub const VAULT_SEALED: &str = "VaultSealed";
    /// stashless's own: whether `spec.retryConfig` retries a failed backup, and as which
    /// session when.
    pub const BACKUP_RETRY_SCHEDULED: &str = "BackupRetryScheduled";
    /// stashless's own: whether the cluster's unseal keys were escrowed with the snapshot,
    /// and if not, why.
    pub const UNSEAL_KEYS_ESCROWED: &str = "UnsealKeysEscrowed";
    /// stashless's own: a forced restore wrote the snapshot's keys into the target's
    /// unsealer store and unsealed it (or why not).
    pub const UNSEAL_KEYS_RESTORED: &str = "UnsealKeysRestored";
    /// stashless's own: the snapshot a restore took of its target before applying another
    /// (restoring it undoes the restore).
    pub const PRE_RESTORE_SNAPSHOT: &str = "PreRestoreSnapshotTaken";
}

/// kmodules `Condition` (`kmapi.Condition`), the shape every Stash status uses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

impl Condition {
    pub fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: timestamp(Utc::now()),
            observed_generation: None,
            severity: if ok { None } else { Some("Warning".into()) },
        }
    }
}

/// Replace the condition of the same type, keeping its transition time when the status is unchanged.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conditions.push(new);
    }
}

/// A failure reason that begins "deadline exceeded" also sets `DeadlineExceeded=True`, as
/// Stash does for a session past its `timeOut`. Every failure path words it that way.
pub fn note_deadline(conditions: &mut Vec<Condition>, reason: &str) {
    if reason.starts_with("deadline exceeded") {
        set_condition(
            conditions,
            Condition::new(
                condition::DEADLINE_EXCEEDED,
                true,
                "DeadlineExceeded",
                reason,
            ),
        );
    }
}

/// RFC 3339, second precision, `Z`: the format Kubernetes writes for `metav1.Time`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Go `time.Duration.String()` shape ("1m2.5s", "350ms"), as Stash writes durations.
pub fn go_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total = d.as_secs_f64();
    let h = (total / 3600.0).floor() as u64;
    let m = ((total - h as f64 * 3600.0) / 60.0).floor() as u64;
    let s = total - h as f64 * 3600.0 - m as f64 * 60.0;
    let secs = format!("{:.3}", s);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, _) => format!("{m}m{secs}s"),
        _ => format!("{h}h{m}m{secs}s"),
    }
}

/// Parse a Go-style duration ("30m", "1h30m", "90s", "2h", "500ms") as Stash's `timeOut` uses.
pub fn parse_go_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    if !total.is_finite() || total > 1e12 {
        return None;
    }
    Some(std::time::Duration::from_secs_f64(total))
}

/// Human byte size the way Stash prints `totalSize` ("1.234 MiB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.3} {}", UNITS[u])
    }
}

/// Whether a field a user wrote carries something (not absent, null, empty or ""): how a
/// field read only to be refused is judged set.
pub fn is_set(v: Option<&serde_json::Value>) -> bool {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

// ---------------------------------------------------------------- shared spec pieces

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl TargetRef {
    /// With the defaults filled in as a status shows them: an AppBinding in `namespace`
    /// (the referring object's) unless the reference says otherwise.
    pub fn resolved(&self, namespace: &str) -> TargetRef {
        TargetRef {
            api_version: Some(
                self.api_version
                    .clone()
                    .unwrap_or_else(|| APPBINDING_API_VERSION.into()),
            ),
            kind: Some(self.kind.clone().unwrap_or_else(|| APPBINDING_KIND.into())),
            name: self.name.clone(),
            namespace: Some(self.namespace.clone().unwrap_or_else(|| namespace.into())),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Param {
    pub name: String,
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

impl TaskRef {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub args: Option<serde_json::Value>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub exclude: Option<serde_json::Value>,
}

/// Stash `v1alpha1.RetentionPolicy`: restic's forget flags.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<i64>,
    pub prune: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub keep_tags: Option<serde_json::Value>,
}

// ---------------------------------------------------------------- BackupConfiguration

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stash.appscode.com",
    version = "v1beta1",
    kind = "BackupConfiguration",
    namespaced,
    status = "BackupConfigurationStatus",
    shortname = "bc"
)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfigurationSpec {
    /// Stash's agent: `Restic` (its default, what a raft snapshot backup is) or
    /// `VolumeSnapshotter` (CSI volume snapshots, which stashless does not take).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    pub retention_policy: RetentionPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_history_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
    /// Stash's hooks, checked into typed hooks by `config::hooks` (which refuses what
    /// cannot run) and run by `hooks`; never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub hooks: Option<serde_json::Value>,
    /// Stash's `{maxRetry, delay}`, checked by `config::retry_policy`; never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub retry_config: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfigurationStatus {
    /// Invalid, Ready, NotReady.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

// ---------------------------------------------------------------- BackupSession

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stash.appscode.com",
    version = "v1beta1",
    kind = "BackupSession",
    namespaced,
    status = "BackupSessionStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSessionSpec {
    pub invoker: BackupInvokerRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_left: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupInvokerRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    pub kind: String,
    pub name: String,
}

/// BackupSession phases (`BackupSessionPhase`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SessionPhase {
    Pending,
    Skipped,
    Running,
    Succeeded,
    Failed,
    Unknown,
    /// RestoreSession only.
    Invalid,
}

impl SessionPhase {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SessionPhase::Succeeded
                | SessionPhase::Failed
                | SessionPhase::Skipped
                | SessionPhase::Invalid
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SessionPhase::Pending => "Pending",
            SessionPhase::Skipped => "Skipped",
            SessionPhase::Running => "Running",
            SessionPhase::Succeeded => "Succeeded",
            SessionPhase::Failed => "Failed",
            SessionPhase::Unknown => "Unknown",
            SessionPhase::Invalid => "Invalid",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSessionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<BackupTargetStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTargetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_hosts: Option<i32>,
    /// Pending, Succeeded, Running, Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<HostBackupStats>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostBackupStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Succeeded, Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_time: Option<String>,
}

// ---------------------------------------------------------------- RestoreSession

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stash.appscode.com",
    version = "v1beta1",
    kind = "RestoreSession",
    namespaced,
    status = "RestoreSessionStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSessionSpec {
    /// As in BackupConfiguration: `Restic` (default) or `VolumeSnapshotter` (not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    /// Deprecated top-level rules (older Stash); `target.rules` wins when both are set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RestoreRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
    /// Stash's hooks, checked into typed hooks by `config::hooks` (which refuses what
    /// cannot run) and run by `hooks`; never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub hooks: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub args: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RestoreRule>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_host: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub target_hosts: Option<serde_json::Value>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub paths: Option<serde_json::Value>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub include: Option<serde_json::Value>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub exclude: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSessionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_hosts: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<HostRestoreStats>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostRestoreStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RestoreSession {
    /// The AppBinding it restores into.
    pub fn target_ref(&self) -> Option<&TargetRef> {
        self.spec.target.as_ref()?.r#ref.as_ref()
    }

    /// The AppBinding it restores into, as (namespace, name): the reference's namespace or
    /// the session's own.
    pub fn target_key(&self) -> Option<(String, String)> {
        let t = self.target_ref()?;
        let ns = t
            .namespace
            .clone()
            .or_else(|| self.metadata.namespace.clone());
        Some((ns.unwrap_or_default(), t.name.clone()))
    }
}

impl BackupConfiguration {
    /// The AppBinding it backs up.
    pub fn target_ref(&self) -> Option<&TargetRef> {
        self.spec.target.as_ref()?.r#ref.as_ref()
    }
}

// ---------------------------------------------------------------- BackupBlueprint

/// Stash's auto-backup template (cluster-scoped): the Repository and BackupConfiguration
/// made for each AppBinding annotated `stash.appscode.com/backup-blueprint`. The scheduler
/// reads blueprints as raw JSON (`blueprint.rs`), since `${TARGET_*}` variables may sit in
/// any string; this type gives the generated CRD its schema.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stash.appscode.com",
    version = "v1beta1",
    kind = "BackupBlueprint",
    shortname = "bb"
)]
#[serde(rename_all = "camelCase")]
pub struct BackupBlueprintSpec {
    #[serde(default)]
    pub backend: Backend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_out: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_policy: Option<UsagePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<RetentionPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_history_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
    /// Copied into the BackupConfiguration, where `config::hooks` checks it.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub hooks: Option<serde_json::Value>,
    /// Copied into the BackupConfiguration, where `config::retry_policy` checks it.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub retry_config: Option<serde_json::Value>,
}

// ---------------------------------------------------------------- Repository

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stash.appscode.com",
    version = "v1alpha1",
    kind = "Repository",
    namespaced,
    status = "RepositoryStatus",
    shortname = "repo"
)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    #[serde(default)]
    pub backend: Backend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_out: Option<bool>,
    /// Which namespaces may use this Repository; none: only its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_policy: Option<UsagePolicy>,
}

/// kmodules `UsagePolicy`: `allowedNamespaces.from` is `Same` (default), `All` or `Selector`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsagePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    // A string, not a Rust enum: a value the schema let through is refused with a reason
    // (resolve.rs) rather than failing to read the whole Repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["All", "Selector", "Same"]))]
    pub from: Option<String>,
    /// The namespaces allowed when `from` is Selector; stashless refuses Selector (it does
    /// not read namespaces' labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// Stash's other backends: read only to refuse them with a reason, never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub azure: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub b2: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub gcs: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub local: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub rest: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub swift: Option<serde_json::Value>,
}

impl Backend {
    /// The backends set besides `s3`, by their field names.
    pub fn others(&self) -> Vec<&'static str> {
        [
            ("azure", &self.azure),
            ("b2", &self.b2),
            ("gcs", &self.gcs),
            ("local", &self.local),
            ("rest", &self.rest),
            ("swift", &self.swift),
        ]
        .into_iter()
        .filter(|(_, v)| is_set(v.as_ref()))
        .map(|(name, _)| name)
        .collect()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    pub endpoint: String,
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Stash spells it `insecureTLS`, not camelCase.
    #[serde(
        default,
        rename = "insecureTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub insecure_tls: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_backup_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots_removed_on_last_cleanup: Option<i64>,
}

// ---------------------------------------------------------------- AppBinding

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "appcatalog.appscode.com",
    version = "v1alpha1",
    kind = "AppBinding",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct AppBindingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub client_config: ClientConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<LocalTypedRef>,
    /// Free-form (KubeVault's VaultServerConfiguration); stashless reads `backupTokenSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub parameters: Option<serde_json::Value>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub secret_transforms: Option<serde_json::Value>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub tls_secret: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceReference>,
    /// base64 PEM, as in the CRD (`format: byte`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    #[serde(
        default,
        rename = "insecureSkipTLSVerify",
        skip_serializing_if = "Option::is_none"
    )]
    pub insecure_skip_tls_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReference {
    pub scheme: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Read only to refuse it with a reason (`config::refused`); never written back.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub query: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalTypedRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    pub kind: String,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_duration_prints_as_go_does() {
        assert_eq!(go_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(go_duration(Duration::from_millis(0)), "0ms");
        assert_eq!(go_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(go_duration(Duration::from_secs(62)), "1m2s");
        assert_eq!(go_duration(Duration::from_millis(3_723_250)), "1h2m3.25s");
    }

    #[test]
    fn parse_go_duration_reads_what_go_writes() {
        let secs = |s: &str| parse_go_duration(s).map(|d| d.as_secs_f64());
        assert_eq!(secs("30m"), Some(1800.0));
        assert_eq!(secs("1h30m"), Some(5400.0));
        assert_eq!(secs(" 90s "), Some(90.0));
        assert_eq!(secs("500ms"), Some(0.5));
        assert_eq!(secs("1.5h"), Some(5400.0));
        for bad in ["", "30", "m", "5x", "1h-2m", "99999999999999h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
        // What go_duration writes reads back.
        let d = Duration::from_millis(3_723_250);
        assert_eq!(parse_go_duration(&go_duration(d)), Some(d));
    }

    #[test]
    fn human_size_uses_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.000 KiB");
        assert_eq!(human_size(50_712), "49.523 KiB");
        assert_eq!(human_size(3 << 30), "3.000 GiB");
        assert_eq!(human_size(u64::MAX), "16384.000 PiB");
    }

    #[test]
    fn timestamps_are_second_precision_utc() {
        let t = DateTime::parse_from_rfc3339("2026-12-03T06:04:27.987+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(timestamp(t), "2026-12-03T05:04:27Z");
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut c = vec![Condition::new("A", true, "R", "first")];
        c[0].last_transition_time = "2020-01-01T00:00:00Z".into();
        set_condition(&mut c, Condition::new("A", true, "R", "second"));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].message.as_deref(), Some("second"));
        assert_eq!(c[0].last_transition_time, "2020-01-01T00:00:00Z");
        set_condition(&mut c, Condition::new("A", false, "R", "third"));
        assert_ne!(c[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert_eq!(c[0].severity.as_deref(), Some("Warning"));
        note_deadline(&mut c, "vault unreachable");
        assert_eq!(c.len(), 1);
        note_deadline(&mut c, "deadline exceeded: too slow");
        assert!(
            c.iter()
                .any(|c| c.type_ == condition::DEADLINE_EXCEEDED && c.status == "True")
        );
    }

    #[test]
    fn target_references_resolve_with_defaults() {
        let bare = TargetRef {
            name: "vault".into(),
            ..Default::default()
        };
        let r = bare.resolved("team");
        assert_eq!(r.api_version.as_deref(), Some(APPBINDING_API_VERSION));
        assert_eq!(r.kind.as_deref(), Some("AppBinding"));
        assert_eq!(r.namespace.as_deref(), Some("team"));
        let elsewhere = TargetRef {
            namespace: Some("other".into()),
            ..bare.clone()
        };
        assert_eq!(
            elsewhere.resolved("team").namespace.as_deref(),
            Some("other")
        );

        let mut rs = RestoreSession::new(
            "r",
            RestoreSessionSpec {
                target: Some(RestoreTarget {
                    r#ref: Some(bare),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        rs.metadata.namespace = Some("team".into());
        assert_eq!(rs.target_key(), Some(("team".into(), "vault".into())));
        rs.spec.target = None;
        assert_eq!(rs.target_key(), None);
    }
}
