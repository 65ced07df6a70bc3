//! The backup function's logic: BackupSession → verified snapshot in S3 → status, metrics.
//!
//! Steps: re-read the session; claim it (resourceVersion precondition); skip if an earlier
//! session of the same BackupConfiguration is still Running; resolve configuration,
//! Repository and AppBinding; stream the active node's snapshot into a multipart upload
//! while verifying it; complete only a verified upload, then write the manifest; apply
//! retention; clean history; write Repository and session status, an Event and metrics.
//! Every failure after the claim ends in a Failed status with a reason; nothing is left
//! Running and no incomplete upload is left behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::api::{
    self, BackupConfiguration, BackupSession, Condition, ObjectRef, Repository, RepositoryStatus,
    RestoreSession, TargetRef, condition, go_duration, human_size, set_condition, timestamp,
};
use crate::archive::{SnapshotInfo, SnapshotVerifier};
use crate::cluster::{EventType, record_event};
use crate::error::{Error, Result};
use crate::events::SessionRef;
use crate::metrics::{self, Gauge, MetricGroup};
use crate::repository::{Invoker, Manifest, MultipartUpload, ObjectId, Store, TargetId, Tuning};
use crate::retention::{Candidate, KeepPolicy};
use crate::session::{self, Claim};
use crate::vault::Vault;
use crate::{resolve, retention};

/// Stash's name for the single "host" of an application backup.
pub const DEFAULT_HOST: &str = "host-0";

/// Called with the number of snapshot bytes moved so far (for progress bars).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Process-wide settings, read once.
#[derive(Clone)]
pub struct Settings {
    pub tuning: Tuning,
    /// Pushgateway base URL, when metrics should be pushed.
    pub pushgateway: Option<String>,
    /// Session time limit when the BackupConfiguration sets no `timeOut`.
    pub default_timeout: Duration,
    /// How long before the Lambda deadline to stop, to leave time to abort and write status.
    pub deadline_margin: Duration,
    pub progress: Option<Progress>,
    /// Namespaces this function serves (`STASHLESS_NAMESPACES`); empty: all. A session
    /// elsewhere is left untouched, as the scheduler and sweep leave it.
    pub namespaces: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tuning: Tuning::default(),
            pushgateway: None,
            default_timeout: Duration::from_secs(14 * 60),
            deadline_margin: Duration::from_secs(20),
            progress: None,
            namespaces: Vec::new(),
        }
    }
}

impl Settings {
    /// From the function's environment: `STASHLESS_PART_SIZE_MIB`, `STASHLESS_PARTS_IN_FLIGHT`,
    /// `STASHLESS_PUSHGATEWAY_URL` (or Stash's `PROMETHEUS_PUSHGATEWAY_URL`).
    pub fn from_env() -> Settings {
        let mut s = Settings::default();
        if let Some(mib) = env_num("STASHLESS_PART_SIZE_MIB") {
            s.tuning.part_size = (mib.clamp(5, 512) as usize) * 1024 * 1024;
        }
        if let Some(n) = env_num("STASHLESS_PARTS_IN_FLIGHT") {
            s.tuning.parts_in_flight = n.clamp(1, 64) as usize;
        }
        s.pushgateway = std::env::var("STASHLESS_PUSHGATEWAY_URL")
            .or_else(|_| std::env::var("PROMETHEUS_PUSHGATEWAY_URL"))
            .ok()
            .filter(|u| !u.is_empty());
        s.namespaces = crate::scheduler::namespaces_from_env();
        s
    }
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Clients built once per process and shared by invocations.
pub struct Context {
    pub kube: Client,
    pub http: reqwest::Client,
    pub settings: Settings,
    /// The process's AWS identity, for Vault IAM logins: loaded on first use from the
    /// default chain (on Lambda, the function's role) unless given.
    aws_credentials:
        tokio::sync::OnceCell<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl Context {
    pub fn new(kube: Client, settings: Settings) -> Arc<Context> {
        Self::build(kube, settings, None)
    }

    /// Like [`Context::new`] with explicit AWS credentials (tests, the CLI).
    pub fn with_aws_credentials(
        kube: Client,
        settings: Settings,
        credentials: aws_credential_types::provider::SharedCredentialsProvider,
    ) -> Arc<Context> {
        Self::build(kube, settings, Some(credentials))
    }

    fn build(
        kube: Client,
        settings: Settings,
        credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    ) -> Arc<Context> {
        crate::install_crypto_provider();
        Arc::new(Context {
            kube,
            http: reqwest::Client::new(),
            settings,
            aws_credentials: tokio::sync::OnceCell::new_with(credentials),
        })
    }

    /// Current credentials of the process's AWS identity.
    pub async fn aws_credentials(&self) -> Result<aws_credential_types::Credentials> {
        use aws_credential_types::provider::ProvideCredentials;
        let provider = self
            .aws_credentials
            .get_or_try_init(|| async {
                let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                aws.credentials_provider().ok_or_else(|| {
                    Error::Invalid(
                        "the AppBinding asks for a Vault IAM login (awsAuth) but no AWS credentials are configured".into(),
                    )
                })
            })
            .await?;
        provider.provide_credentials().await.map_err(|e| {
            Error::Invalid(format!(
                "reading the AWS credentials for the Vault IAM login: {e}"
            ))
        })
    }
}

/// The session's Repository opened as a snapshot store and its AppBinding as a Vault client:
/// what backup and restore both start from.
pub async fn open_store_and_vault(
    ctx: &Context,
    ns: &str,
    repo_ref: &ObjectRef,
    target_ref: Option<&TargetRef>,
) -> Result<(Repository, Store, Vault)> {
    let (_, vault_target) = resolve::vault_target(&ctx.kube, ns, target_ref).await?;
    let (repository, store) = open_store(ctx, ns, repo_ref).await?;
    Ok((repository, store, Vault::new(vault_target)?))
}

/// The session's Repository opened as a snapshot store.
async fn open_store(ctx: &Context, ns: &str, repo_ref: &ObjectRef) -> Result<(Repository, Store)> {
    let repo = resolve::repository(&ctx.kube, ns, repo_ref, ctx.settings.tuning.clone()).await?;
    let store = Store::open(repo.location, repo.credentials, repo.ca_pem, repo.tuning).await?;
    Ok((repo.repository, store))
}

/// Log in to Vault with the process's IAM role when the AppBinding asks for it
/// (`spec.parameters.awsAuth`); a token from a Secret needs nothing here.
pub async fn vault_login(ctx: &Context, vault: &mut Vault, node: &str) -> Result<()> {
    let Some(login) = vault.aws_login().cloned() else {
        return Ok(());
    };
    let credentials = ctx.aws_credentials().await?;
    let request = crate::aws_login::caller_identity_request(
        &credentials,
        login.sts_region.as_deref(),
        login.server_id.as_deref(),
        std::time::SystemTime::now(),
    )?;
    vault.login_aws(node, &login, &request).await
}

/// What an invocation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        snapshot: String,
        size: u64,
        duration: Duration,
    },
    Failed {
        reason: String,
    },
    Skipped {
        reason: String,
    },
    /// Not ours to run: gone, already final, or claimed by another invocation.
    NotClaimed {
        why: String,
    },
}

/// Handle one event naming a BackupSession. `lambda_deadline`: when the runtime will stop us.
/// Returns Err only when nothing could be recorded on the session (retrying may help then).
pub async fn run(
    ctx: &Context,
    target: &SessionRef,
    lambda_deadline: Option<Instant>,
) -> Result<Outcome> {
    let started = Instant::now();
    if let Some(why) = not_served(&ctx.settings, &target.namespace) {
        return Ok(Outcome::NotClaimed { why });
    }
    let api: Api<BackupSession> = Api::namespaced(ctx.kube.clone(), &target.namespace);
    let session =
        match session::fetch_pending(&api, "BackupSession", &target.namespace, &target.name).await?
        {
            Ok(s) => s,
            Err(why) => {
                return match settle_lost(ctx, &api, &target.name).await? {
                    Some(outcome) => Ok(outcome),
                    None => Ok(Outcome::NotClaimed { why }),
                };
            }
        };

    // The configuration decides the time limit; read it before claiming so the deadline
    // written at claim time is the real one. A missing one is reported after the claim.
    let invoker = session.spec.invoker.clone();
    let config = if invoker.kind == "BackupConfiguration" {
        let cfg_api: Api<BackupConfiguration> =
            Api::namespaced(ctx.kube.clone(), &target.namespace);
        match cfg_api.get_opt(&invoker.name).await {
            Ok(c) => c,
            Err(e) => {
                return Err(Error::kube(
                    format!("reading BackupConfiguration {}", invoker.name),
                    e,
                ));
            }
        }
    } else {
        None
    };
    // An invalid timeOut fails the session after the claim (check_config); the default
    // bounds it until then.
    let session_limit = config
        .as_ref()
        .and_then(|c| time_limit(c, ctx.settings.default_timeout).ok())
        .unwrap_or(ctx.settings.default_timeout);
    let (deadline, deadline_wall) = session::deadline(
        started,
        session_limit,
        lambda_deadline,
        ctx.settings.deadline_margin,
    );
    let session = match session::claim(&api, &session, deadline_wall).await? {
        Claim::Claimed(s) => s,
        Claim::Taken => {
            return Ok(Outcome::NotClaimed {
                why: "another invocation claimed it first".into(),
            });
        }
    };
    tracing::info!(namespace = %target.namespace, session = %target.name, "claimed BackupSession");

    let Some(config) = config else {
        let reason = if invoker.kind == "BackupConfiguration" {
            format!(
                "BackupConfiguration {}/{} not found (spec.invoker)",
                target.namespace, invoker.name
            )
        } else {
            format!(
                "invoker kind {:?} is not supported: stashless runs BackupConfigurations",
                invoker.kind
            )
        };
        return finish_failed(ctx, &api, &session, None, started, reason).await;
    };

    // Skip when an earlier session of the same configuration is still running.
    // Also skip while a restore of the same Vault is Running: a snapshot taken then could
    // hold half-restored data.
    let siblings = session::sessions_of(&api, "BackupConfiguration", &invoker.name).await?;
    let skip = match session::running_before(&siblings, &session, Utc::now()) {
        Some(other) => Some(format!(
            "skipped: BackupSession {} of the same BackupConfiguration is still Running",
            other.name_any()
        )),
        None => restore_running(ctx, &config).await?.map(|rs| {
            format!("skipped: RestoreSession {rs} is restoring the same Vault; a snapshot now could hold half-restored data")
        }),
    };
    if let Some(reason) = skip {
        let mut conditions = current_conditions(&session);
        set_condition(
            &mut conditions,
            Condition::new(
                condition::BACKUP_SKIPPED,
                true,
                "AnotherSessionRunning",
                &reason,
            ),
        );
        session::patch_status(
            &api,
            &session.name_any(),
            json!({"phase": "Skipped", "sessionDuration": go_duration(started.elapsed()), "conditions": conditions}),
        )
        .await?;
        record_event(
            &ctx.kube,
            &session,
            EventType::Warning,
            "BackupSkipped",
            &reason,
        )
        .await;
        return Ok(Outcome::Skipped { reason });
    }

    match backup(ctx, &session, &config, started, deadline).await {
        Ok(done) => finish_succeeded(ctx, &api, &session, &config, &siblings, started, done).await,
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(error = %reason, "backup failed");
            finish_failed(ctx, &api, &session, Some(&config), started, reason).await
        }
    }
}

/// A BackupSession still Running past its `sessionDeadline` (the sweep hands these back):
/// its function was killed, or finished but could not write the final status (API server
/// down). Settle it from what the repository holds: Succeeded when this session's manifest
/// and an object of the manifest's size are stored, otherwise Failed after aborting any
/// upload it left. `None` when the session is not such a one (or its configuration is gone:
/// the sweep fails those itself).
async fn settle_lost(
    ctx: &Context,
    api: &Api<BackupSession>,
    name: &str,
) -> Result<Option<Outcome>> {
    let Some(session) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading BackupSession {name}"), e))?
    else {
        return Ok(None);
    };
    let status = session.status.as_ref();
    let running = status.and_then(|s| s.phase) == Some(api::SessionPhase::Running);
    if !running || !session::past_deadline(&session, Utc::now()) {
        return Ok(None);
    }
    let ns = session.namespace().unwrap_or_default();
    let invoker = &session.spec.invoker;
    let cfg_api: Api<BackupConfiguration> = Api::namespaced(ctx.kube.clone(), &ns);
    let config = cfg_api
        .get_opt(&invoker.name)
        .await
        .map_err(|e| Error::kube(format!("reading BackupConfiguration {}", invoker.name), e))?;
    let (Some(config), Some(repo_ref)) = (
        config.as_ref(),
        config.as_ref().and_then(|c| c.spec.repository.as_ref()),
    ) else {
        return Ok(None);
    };
    // The session's duration counts from its creation, not from this settling.
    let age = session
        .metadata
        .creation_timestamp
        .as_ref()
        .map(crate::k8s_time)
        .and_then(|c| (Utc::now() - c).to_std().ok())
        .unwrap_or_default();
    let started = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
    let (repository, store) = open_store(ctx, &ns, repo_ref).await?;
    let snapshot = format!("{ns}/{}", session.name_any());
    // This session's own manifest only (an earlier session of the same name is not it).
    let manifest = store
        .manifest_of(&snapshot)
        .await?
        .filter(|m| m.session.uid == session.uid());
    let stored = match &manifest {
        Some(m) => store
            .object_info(&m.key)
            .await?
            .is_some_and(|o| o.size == m.size),
        None => false,
    };
    tracing::info!(session = %snapshot, stored, "settling a BackupSession whose function stopped");
    match manifest.filter(|_| stored) {
        Some(manifest) => {
            let siblings = session::sessions_of(api, "BackupConfiguration", &invoker.name).await?;
            let done = Done {
                store,
                repository,
                transfer: Duration::from_secs_f64(manifest.duration_seconds.max(0.0)),
                manifest,
                target_ref: config
                    .spec
                    .target
                    .as_ref()
                    .and_then(|t| t.r#ref.clone())
                    .unwrap_or_default(),
            };
            finish_succeeded(ctx, api, &session, config, &siblings, started, done)
                .await
                .map(Some)
        }
        None => {
            let aborted = store.abort_uploads_of(&snapshot).await?;
            let reason = format!(
                "deadline exceeded: the function running this session stopped before finishing (sessionDeadline {} passed); no snapshot was stored{}; it runs again at the next schedule",
                status
                    .and_then(|s| s.session_deadline.clone())
                    .unwrap_or_default(),
                if aborted > 0 {
                    "; its partial upload was aborted"
                } else {
                    ""
                }
            );
            finish_failed(ctx, api, &session, Some(config), started, reason)
                .await
                .map(Some)
        }
    }
}

/// Why a session in `namespace` is not this function's to run, when `STASHLESS_NAMESPACES`
/// leaves it out: the functions' identity may reach further than the namespaces the
/// deployment is scoped to, and an event (from anyone who may `PutEvents`) can name any.
pub(crate) fn not_served(settings: &Settings, namespace: &str) -> Option<String> {
    let served = &settings.namespaces;
    if served.is_empty() || served.iter().any(|n| n == namespace) {
        return None;
    }
    Some(format!(
        "namespace {namespace} is not one this function serves (STASHLESS_NAMESPACES: {})",
        served.join(",")
    ))
}

/// The checks of a BackupConfiguration that need no other object: retention counts and
/// `timeOut`. A backup runs them before touching Vault or S3; the scheduler marks a
/// configuration that fails them Invalid.
pub fn check_config(config: &BackupConfiguration) -> Result<()> {
    keep_policy(config)?;
    time_limit(config, Duration::ZERO)?;
    Ok(())
}

fn time_limit(config: &BackupConfiguration, default: Duration) -> Result<Duration> {
    session::time_limit(
        "BackupConfiguration spec.timeOut",
        config.spec.time_out.as_deref(),
        default,
    )
}

/// A Running RestoreSession whose target is this configuration's AppBinding, if any
/// (RestoreSessions in the target's namespace).
async fn restore_running(ctx: &Context, config: &BackupConfiguration) -> Result<Option<String>> {
    let Some(t) = config.spec.target.as_ref().and_then(|t| t.r#ref.as_ref()) else {
        return Ok(None);
    };
    let config_ns = config.namespace().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_else(|| config_ns.clone());
    let api: Api<RestoreSession> = Api::namespaced(ctx.kube.clone(), &ns);
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| Error::kube("listing RestoreSessions", e))?;
    let wanted = Some((ns.clone(), t.name.clone()));
    Ok(list
        .items
        .iter()
        .find(|rs| {
            rs.status.as_ref().and_then(|s| s.phase) == Some(crate::api::SessionPhase::Running)
                && crate::restore::target_key(rs) == wanted
        })
        .map(|rs| format!("{ns}/{}", rs.name_any())))
}

/// What a successful transfer produced.
struct Done {
    store: Store,
    repository: Repository,
    manifest: Manifest,
    target_ref: api::TargetRef,
    transfer: Duration,
}

async fn backup(
    ctx: &Context,
    session: &BackupSession,
    config: &BackupConfiguration,
    started: Instant,
    deadline: Instant,
) -> Result<Done> {
    let ns = session.namespace().unwrap_or_default();
    let spec = &config.spec;
    // Validate everything cheap before touching Vault or S3.
    check_config(config)?;
    let repo_ref = spec
        .repository
        .as_ref()
        .ok_or_else(|| Error::Invalid("BackupConfiguration spec.repository is not set".into()))?;
    let target_ref = spec.target.as_ref().and_then(|t| t.r#ref.clone());
    let (repository, store, mut vault) =
        open_store_and_vault(ctx, &ns, repo_ref, target_ref.as_ref()).await?;

    let node = vault.active_node().await?;
    vault_login(ctx, &mut vault, &node).await?;
    let health = vault.health(Some(&node)).await.ok();
    let name = format!("{ns}/{}", session.name_any());
    let transfer_started = Instant::now();
    let mut upload = store.begin_upload(&name).await?;
    let mut verifier = SnapshotVerifier::new();
    let transfer = tokio::time::timeout_at(
        deadline.into(),
        stream_into(
            &vault,
            &node,
            &mut upload,
            &mut verifier,
            ctx.settings.progress.clone(),
        ),
    )
    .await;
    let info: SnapshotInfo = match transfer {
        Err(_) => {
            upload.abort().await;
            return Err(Error::Deadline(format!(
                "the snapshot was not finished within the session's time limit ({} elapsed); the partial upload was aborted",
                go_duration(started.elapsed())
            )));
        }
        Ok(Err(e)) => {
            upload.abort().await;
            return Err(e);
        }
        Ok(Ok(())) => match verifier.finish() {
            Ok(info) => info,
            Err(e) => {
                upload.abort().await;
                return Err(e.into());
            }
        },
    };
    let key = upload.key().to_string();
    // The last parts and CompleteMultipartUpload are bounded by the deadline too: a stalled
    // store must not keep the session Running until the Lambda is killed.
    let stored = match tokio::time::timeout_at(deadline.into(), upload.complete()).await {
        Ok(Ok(stored)) => stored,
        failed => {
            upload.abort().await;
            // Completed but not confirmed: do not leave an object without its manifest.
            let _ = store.delete_snapshot(&name).await;
            return Err(match failed {
                Ok(Err(e)) => e,
                _ => Error::Deadline(format!(
                    "the upload was not completed within the session's time limit ({} elapsed); it was aborted",
                    go_duration(started.elapsed())
                )),
            });
        }
    };
    if stored.size != info.size {
        let _ = store.delete_snapshot(&name).await;
        return Err(Error::Storage {
            bucket: store.bucket().into(),
            message: format!(
                "stored object {key} is {} bytes, the snapshot was {} bytes",
                stored.size, info.size
            ),
            retryable: true,
        });
    }
    let transfer = transfer_started.elapsed();
    let t = target_ref.clone().unwrap_or_default();
    let manifest = Manifest {
        format_version: 1,
        name: name.clone(),
        key,
        session: ObjectId {
            namespace: ns.clone(),
            name: session.name_any(),
            uid: session.uid(),
        },
        invoker: Invoker {
            namespace: ns.clone(),
            kind: "BackupConfiguration".into(),
            name: config.name_any(),
        },
        target: TargetId {
            namespace: t.namespace.clone().unwrap_or_else(|| ns.clone()),
            kind: "AppBinding".into(),
            name: t.name.clone(),
            address: node.clone(),
        },
        created_at: Utc::now(),
        size: info.size,
        sha256: info.sha256.clone(),
        etag: stored.etag.clone(),
        duration_seconds: transfer.as_secs_f64(),
        vault_version: health.as_ref().and_then(|h| h.version.clone()),
        vault_cluster_name: health.as_ref().and_then(|h| h.cluster_name.clone()),
        raft: info.meta.clone(),
        files: info.files.clone(),
    };
    if let Err(e) = store.put_manifest(&manifest).await {
        // Without its manifest the snapshot is invisible; do not leave it behind.
        let _ = store.delete_snapshot(&name).await;
        return Err(e);
    }
    tracing::info!(snapshot = %name, size = info.size, secs = transfer.as_secs_f64(), "snapshot stored and verified");
    Ok(Done {
        store,
        repository,
        manifest,
        target_ref: t,
        transfer,
    })
}

/// Vault → verifier → multipart upload, chunk by chunk.
async fn stream_into(
    vault: &Vault,
    node: &str,
    upload: &mut MultipartUpload,
    verifier: &mut SnapshotVerifier,
    progress: Option<Progress>,
) -> Result<()> {
    let mut stream = std::pin::pin!(vault.snapshot(node).await?);
    let mut moved = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        // Verify before the bytes can reach S3: a bad stream fails here and is aborted.
        verifier.update(&chunk)?;
        upload.write(&chunk).await?;
        moved += chunk.len() as u64;
        if let Some(p) = &progress {
            p(moved);
        }
    }
    Ok(())
}

fn current_conditions(s: &BackupSession) -> Vec<Condition> {
    s.status
        .as_ref()
        .map(|st| st.conditions.clone())
        .unwrap_or_default()
}

fn target_ref_json(t: &api::TargetRef, ns: &str) -> Value {
    json!({
        "apiVersion": t.api_version.clone().unwrap_or_else(|| "appcatalog.appscode.com/v1alpha1".into()),
        "kind": t.kind.clone().unwrap_or_else(|| "AppBinding".into()),
        "name": t.name,
        "namespace": t.namespace.clone().unwrap_or_else(|| ns.into()),
    })
}

struct RetentionResult {
    removed: Vec<String>,
    kept: usize,
    remaining: Vec<Manifest>,
    dry_run: bool,
}

/// Apply the retention policy to this configuration's snapshots. The newest (the one just
/// written) is always kept. On a failure halfway, what was deleted is reported.
/// The configuration's retentionPolicy as restic-style keep counts.
fn keep_policy(config: &BackupConfiguration) -> Result<KeepPolicy> {
    let rp = &config.spec.retention_policy;
    KeepPolicy::from_counts(
        rp.keep_last,
        rp.keep_hourly,
        rp.keep_daily,
        rp.keep_weekly,
        rp.keep_monthly,
        rp.keep_yearly,
    )
    .map_err(|e| Error::Invalid(e.to_string()))
}

async fn apply_retention(
    store: &Store,
    config: &BackupConfiguration,
    newest: &Manifest,
) -> Result<RetentionResult> {
    let policy = keep_policy(config)?;
    let rp = &config.spec.retention_policy;
    let all = store.list_manifests().await?;
    let mine: Vec<&Manifest> = all.iter().filter(|m| m.invoker == newest.invoker).collect();
    let candidates: Vec<Candidate> = mine
        .iter()
        .map(|m| Candidate {
            id: m.name.clone(),
            time: m.created_at,
        })
        .collect();
    let decisions = retention::plan(&policy, &candidates);
    let dry_run = rp.dry_run.unwrap_or(false);
    let mut removed = Vec::new();
    for d in decisions.iter().filter(|d| !d.keep && d.id != newest.name) {
        if !dry_run {
            store
                .delete_snapshot(&d.id)
                .await
                .map_err(|e| Error::Storage {
                    bucket: store.bucket().into(),
                    message: format!(
                        "retention stopped after removing {} snapshot(s) ({}): {e}",
                        removed.len(),
                        removed.join(", ")
                    ),
                    retryable: true,
                })?;
        }
        removed.push(d.id.clone());
    }
    let remaining = if dry_run {
        all
    } else {
        all.into_iter()
            .filter(|m| !removed.contains(&m.name))
            .collect()
    };
    Ok(RetentionResult {
        kept: decisions.iter().filter(|d| d.keep).count(),
        removed,
        remaining,
        dry_run,
    })
}

async fn finish_succeeded(
    ctx: &Context,
    api: &Api<BackupSession>,
    session: &BackupSession,
    config: &BackupConfiguration,
    siblings: &[BackupSession],
    started: Instant,
    done: Done,
) -> Result<Outcome> {
    let ns = session.namespace().unwrap_or_default();
    let mut conditions = current_conditions(session);
    set_condition(
        &mut conditions,
        Condition::new(
            condition::SNAPSHOT_VERIFIED,
            true,
            "SnapshotVerified",
            format!(
                "gzip/tar stream verified against SHA256SUMS; raft index {} term {}; sha256 {}",
                done.manifest.raft.index, done.manifest.raft.term, done.manifest.sha256
            ),
        ),
    );

    // Retention, then Repository totals from the listing it made.
    let retention = apply_retention(&done.store, config, &done.manifest).await;
    let remaining = match &retention {
        Ok(r) => {
            let verb = if r.dry_run { "would remove" } else { "removed" };
            set_condition(
                &mut conditions,
                Condition::new(
                    condition::RETENTION_POLICY_APPLIED,
                    true,
                    "SuccessfullyAppliedRetentionPolicy",
                    format!(
                        "policy {:?}: kept {}, {verb} {}",
                        config.spec.retention_policy.name,
                        r.kept,
                        r.removed.len()
                    ),
                ),
            );
            Some(r.remaining.clone())
        }
        Err(e) => {
            set_condition(
                &mut conditions,
                Condition::new(
                    condition::RETENTION_POLICY_APPLIED,
                    false,
                    "FailedToApplyRetentionPolicy",
                    e.to_string(),
                ),
            );
            record_event(
                &ctx.kube,
                session,
                EventType::Warning,
                "RetentionFailed",
                &e.to_string(),
            )
            .await;
            done.store.list_manifests().await.ok()
        }
    };
    let removed = retention
        .as_ref()
        .map(|r| if r.dry_run { 0 } else { r.removed.len() })
        .unwrap_or(0);
    let repo_ns = done.repository.namespace().unwrap_or_else(|| ns.clone());
    if let Some(remaining) = &remaining {
        let status = repository_status(&done.repository, remaining, removed);
        let repos: Api<Repository> = Api::namespaced(ctx.kube.clone(), &repo_ns);
        let patch = json!({ "status": status });
        if let Err(e) = repos
            .patch_status(
                &done.repository.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(error = %e, "could not update Repository status");
        }
    }

    // History: keep `backupHistoryLimit` finished sessions (default 1), this one included.
    let limit = config.spec.backup_history_limit.unwrap_or(1).max(0) as usize;
    let others: Vec<BackupSession> = siblings
        .iter()
        .filter(|s| s.name_any() != session.name_any())
        .cloned()
        .collect();
    match session::clean_history(api, &others, limit.saturating_sub(1)).await {
        Ok(n) => set_condition(
            &mut conditions,
            Condition::new(
                condition::BACKUP_HISTORY_CLEANED,
                true,
                "SuccessfullyCleanedBackupHistory",
                format!("removed {n} old BackupSession(s), limit {limit}"),
            ),
        ),
        Err(e) => set_condition(
            &mut conditions,
            Condition::new(
                condition::BACKUP_HISTORY_CLEANED,
                false,
                "FailedToCleanBackupHistory",
                e.to_string(),
            ),
        ),
    }

    let duration = started.elapsed();
    let size = done.manifest.size;
    let gauges = backup_gauges(true, duration, Some(size), remaining.as_deref(), removed);
    push_metrics(
        ctx,
        &mut conditions,
        config,
        &done.repository.name_any(),
        &done.target_ref,
        gauges,
    )
    .await;

    let snapshot_stats = json!({
        "name": done.manifest.name,
        "path": done.manifest.key,
        "totalSize": human_size(size),
        "uploaded": human_size(size),
        "processingTime": go_duration(done.transfer),
    });
    let status = json!({
        "phase": "Succeeded",
        "sessionDuration": go_duration(duration),
        "targets": [{
            "ref": target_ref_json(&done.target_ref, &ns),
            "totalHosts": 1,
            "phase": "Succeeded",
            "stats": [{
                "hostname": DEFAULT_HOST,
                "phase": "Succeeded",
                "duration": go_duration(done.transfer),
                "snapshots": [snapshot_stats],
            }],
        }],
        "conditions": conditions,
    });
    session::patch_status(api, &session.name_any(), status).await?;
    let msg = format!(
        "snapshot {} ({}) stored in s3://{}/{} in {}",
        done.manifest.name,
        human_size(size),
        done.store.bucket(),
        done.manifest.key,
        go_duration(duration)
    );
    record_event(
        &ctx.kube,
        session,
        EventType::Normal,
        "BackupSessionSucceeded",
        &msg,
    )
    .await;
    tracing::info!("{msg}");
    Ok(Outcome::Succeeded {
        snapshot: done.manifest.name,
        size,
        duration,
    })
}

async fn finish_failed(
    ctx: &Context,
    api: &Api<BackupSession>,
    session: &BackupSession,
    config: Option<&BackupConfiguration>,
    started: Instant,
    reason: String,
) -> Result<Outcome> {
    let ns = session.namespace().unwrap_or_default();
    let duration = started.elapsed();
    let mut conditions = current_conditions(session);
    api::note_deadline(&mut conditions, &reason);
    let target_ref = config
        .and_then(|c| c.spec.target.as_ref())
        .and_then(|t| t.r#ref.clone())
        .unwrap_or_default();
    if let Some(config) = config {
        let repo = config
            .spec
            .repository
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let gauges = backup_gauges(false, duration, None, None, 0);
        push_metrics(ctx, &mut conditions, config, &repo, &target_ref, gauges).await;
    }
    let mut status = json!({
        "phase": "Failed",
        "sessionDuration": go_duration(duration),
        "conditions": conditions,
    });
    if config.is_some() {
        status["targets"] = json!([{
            "ref": target_ref_json(&target_ref, &ns),
            "totalHosts": 1,
            "phase": "Failed",
            "stats": [{
                "hostname": DEFAULT_HOST,
                "phase": "Failed",
                "duration": go_duration(duration),
                "error": reason,
            }],
        }]);
    }
    session::patch_status(api, &session.name_any(), status).await?;
    record_event(
        &ctx.kube,
        session,
        EventType::Warning,
        "BackupSessionFailed",
        &reason,
    )
    .await;
    Ok(Outcome::Failed { reason })
}

fn repository_status(
    repo: &Repository,
    remaining: &[Manifest],
    removed: usize,
) -> RepositoryStatus {
    let first = remaining.iter().map(|m| m.created_at).min();
    let last = remaining.iter().map(|m| m.created_at).max();
    let total: u64 = remaining.iter().map(|m| m.size).sum();
    let old = repo.status.clone().unwrap_or_default();
    RepositoryStatus {
        observed_generation: repo.metadata.generation,
        first_backup_time: old.first_backup_time.or(first.map(timestamp)),
        last_backup_time: last.map(timestamp),
        integrity: Some(true),
        total_size: Some(human_size(total)),
        snapshot_count: Some(remaining.len() as i64),
        snapshots_removed_on_last_cleanup: Some(removed as i64),
    }
}

fn backup_gauges(
    success: bool,
    duration: Duration,
    size: Option<u64>,
    remaining: Option<&[Manifest]>,
    removed: usize,
) -> Vec<Gauge> {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    let mut g = vec![
        Gauge {
            name: "stash_backup_session_success",
            help: "Indicates whether the entire backup session succeeded",
            value: b(success),
        },
        Gauge {
            name: "stash_backup_session_duration_seconds",
            help: "Time taken to complete the backup session",
            value: duration.as_secs_f64(),
        },
        Gauge {
            name: "stash_backup_target_success",
            help: "Indicates whether the backup of the target succeeded",
            value: b(success),
        },
        Gauge {
            name: "stash_backup_host_backup_success",
            help: "Indicates whether the backup of the host succeeded",
            value: b(success),
        },
    ];
    if success {
        g.push(Gauge {
            name: "stash_backup_last_success_time_seconds",
            help: "Unix time of the last successful backup",
            value: Utc::now().timestamp() as f64,
        });
    }
    if let Some(size) = size {
        g.push(Gauge {
            name: "stash_backup_host_data_size_bytes",
            help: "Size of the snapshot taken",
            value: size as f64,
        });
        g.push(Gauge {
            name: "stash_backup_host_data_uploaded_bytes",
            help: "Bytes uploaded to the repository",
            value: size as f64,
        });
    }
    if let Some(r) = remaining {
        g.push(Gauge {
            name: "stash_repository_integrity",
            help: "Result of the repository integrity check",
            value: 1.0,
        });
        g.push(Gauge {
            name: "stash_repository_size_bytes",
            help: "Total size of the repository",
            value: r.iter().map(|m| m.size).sum::<u64>() as f64,
        });
        g.push(Gauge {
            name: "stash_repository_snapshot_count",
            help: "Number of snapshots in the repository",
            value: r.len() as f64,
        });
        g.push(Gauge {
            name: "stash_repository_snapshot_cleaned",
            help: "Number of snapshots removed by the last cleanup",
            value: removed as f64,
        });
    }
    g
}

/// Push Stash-style metrics (when a Pushgateway is configured) and print the CloudWatch
/// EMF line; record the outcome as the MetricsPushed condition.
async fn push_metrics(
    ctx: &Context,
    conditions: &mut Vec<Condition>,
    config: &BackupConfiguration,
    repository: &str,
    target: &api::TargetRef,
    gauges: Vec<Gauge>,
) {
    let ns = config.namespace().unwrap_or_default();
    let name = config.name_any();
    let emf: Vec<(&'static str, f64, &'static str)> = gauges
        .iter()
        .filter_map(|g| match g.name {
            "stash_backup_session_success" => Some(("BackupSuccess", g.value, "Count")),
            "stash_backup_session_duration_seconds" => Some(("BackupDuration", g.value, "Seconds")),
            "stash_backup_host_data_size_bytes" => Some(("SnapshotSize", g.value, "Bytes")),
            _ => None,
        })
        .collect();
    metrics::emit_emf(&metrics::emf_line(
        &[("BackupConfiguration", format!("{ns}/{name}"))],
        &emf,
    ));
    let group = MetricGroup {
        job: "stash-backup",
        grouping: vec![("namespace", ns.clone()), ("invoker_name", name.clone())],
        labels: vec![
            ("invoker_kind", "BackupConfiguration".into()),
            ("invoker_name", name.clone()),
            ("namespace", ns.clone()),
            ("repository", repository.into()),
            (
                "target_kind",
                target.kind.clone().unwrap_or_else(|| "AppBinding".into()),
            ),
            ("target_name", target.name.clone()),
            ("host", DEFAULT_HOST.into()),
        ],
        gauges,
    };
    publish(ctx, conditions, &group).await;
}

/// Push a metric group to the Pushgateway when one is configured, and record the outcome
/// as the `MetricsPushed` condition (shared by backup and restore).
pub(crate) async fn publish(ctx: &Context, conditions: &mut Vec<Condition>, group: &MetricGroup) {
    let Some(gateway) = &ctx.settings.pushgateway else {
        return;
    };
    let c = match metrics::push(&ctx.http, gateway, group).await {
        Ok(()) => Condition::new(
            condition::METRICS_PUSHED,
            true,
            "SuccessfullyPushedMetrics",
            "metrics pushed to the Pushgateway",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "pushing metrics failed");
            Condition::new(
                condition::METRICS_PUSHED,
                false,
                "FailedToPushMetrics",
                e.to_string(),
            )
        }
    };
    set_condition(conditions, c);
}
