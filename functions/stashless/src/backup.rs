//! The backup function's logic: BackupSession → verified snapshot in S3 → status, metrics.
//!
//! Steps: re-read the session; claim it (resourceVersion precondition); skip if an earlier
//! session of the same BackupConfiguration is still Running; resolve configuration,
//! Repository and AppBinding; stream the active node's snapshot into a multipart upload
//! while verifying it; complete only a verified upload, then write the manifest; apply
//! retention; clean history; write Repository and session status, an Event and metrics.
//! Every failure after the claim ends in a Failed status with a reason; nothing is left
//! Running and no incomplete upload is left behind.

use std::time::{Duration, Instant};

use chrono::Utc;
use kube::{Api, ResourceExt};

use crate::api::{
    self, BackupConfiguration, BackupSession, Condition, Repository, condition, go_duration,
    human_size, set_condition,
};
use crate::cluster::{EventType, record_event};
use crate::config;
use crate::config::hooks::{Ended, Hooks, Summary, ended};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::events::SessionRef;
use crate::hooks::{self, Site};
use crate::metrics::{self, BackupMeasure};
use crate::repository::{Invoker, Manifest, ObjectId, Store};
use crate::resolve;
use crate::retention::{self, Candidate};
use crate::serve::Owners;
use crate::session::{self, Claim, HasPhase, Outcome, RetryPlan};
use crate::snapshot;
use crate::status::{self, FailedTarget, RepositoryTotals};

/// Handle one event naming a BackupSession. `lambda_deadline`: when the runtime will stop us.
/// Returns Err only when nothing could be recorded on the session (retrying may help then).
pub async fn run(
    ctx: &Context,
    target: &SessionRef,
    lambda_deadline: Option<Instant>,
) -> Result<Outcome> {
    let started = Instant::now();
    if let Some(why) = ctx.settings.namespaces.refuse(&target.namespace) {
        return Ok(Outcome::NotClaimed { why });
    }
    let api: Api<BackupSession> = Api::namespaced(ctx.kube.clone(), &target.namespace);
    let session =
        match session::fetch(&api, "BackupSession", &target.namespace, &target.name).await? {
            Ok(s) => s,
            Err(why) => return Ok(Outcome::NotClaimed { why }),
        };
    // Another product's session (a database's, a volume's) is left exactly as it is. The
    // configuration read here also decides the time limit, before the claim, so the
    // deadline written at claim time is the real one; a missing one is reported after it.
    let (verdict, config) = Owners::new(&ctx.kube).backup_session(&session).await?;
    if let Some(why) = verdict.others_reason() {
        tracing::debug!(session = %target.name, %why, "not a stashless BackupSession");
        return Ok(Outcome::NotClaimed { why });
    }
    if let Some(why) = session::not_pending("BackupSession", &session) {
        return match settle_lost(ctx, &api, &session, config.as_ref()).await? {
            Some(outcome) => Ok(outcome),
            None => Ok(Outcome::NotClaimed { why }),
        };
    }
    let invoker = session.spec.invoker.clone();
    // An invalid timeOut fails the session after the claim (check_config); the default
    // bounds it until then.
    let session_limit = config
        .as_ref()
        .and_then(|c| config::backup_time_limit(c, ctx.settings.default_timeout).ok())
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
        return finish_failed(
            ctx,
            &api,
            &session,
            None,
            started,
            reason,
            RetryPlan::NotAsked,
        )
        .await;
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
        None => session::restore_running(&ctx.kube, &config).await?.map(|rs| {
            format!("skipped: RestoreSession {rs} is restoring the same Vault; a snapshot now could hold half-restored data")
        }),
    };
    if let Some(reason) = skip {
        let status = status::backup_skipped(session.conditions(), &reason, started.elapsed());
        session::patch_status(&api, &session.name_any(), &status).await?;
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

    // Hooks that do not check fail the session in `backup` (check_config), before any runs.
    let hooks = config::hooks::backup_hooks(config.spec.hooks.as_ref()).unwrap_or_default();
    let mut site = resolve::hook_site(&ctx.kube, &target.namespace, &hooks).await;
    let mut session = session;
    let result = backup(
        ctx,
        &mut session,
        &config,
        started,
        deadline,
        &hooks,
        &mut site,
    )
    .await;
    // Whether a retry follows a failure (spec.retryConfig) decides OnFinalRetryFailure.
    let retry = match &result {
        Ok(_) => RetryPlan::NotAsked,
        Err(e) => {
            let policy = config::retry_policy(&config).ok().flatten();
            session::retry_plan(&session, policy, e.kind(), Utc::now())
        }
    };
    let post = hooks.post_for(&session.conditions(), result.is_ok(), retry.follows());
    let post_ran = match post {
        None => None,
        Some(post) => {
            let error = result.as_ref().err().map(Error::reason);
            let summary = summary(&session, &config, Some(ended(error, started.elapsed())));
            let at = hooks::post_deadline(deadline, lambda_deadline);
            let ran = hooks::run(post, &summary, &site, at.into()).await;
            session.set_condition(hooks::condition(post.stage, &ran));
            Some(ran)
        }
    };
    match (result, post_ran) {
        (Ok(done), Some(ran)) if !ran.ok => {
            let reason = format!(
                "{}; snapshot {} was stored and verified and stays in the repository",
                ran.message, done.manifest.name
            );
            let retry = RetryPlan::NotAsked;
            finish_failed(ctx, &api, &session, Some(&config), started, reason, retry).await
        }
        (Ok(done), _) => {
            finish_succeeded(ctx, &api, &session, &config, &siblings, started, done).await
        }
        (Err(e), ran) => {
            let mut reason = e.reason();
            tracing::warn!(error = %reason, kind = ?e.kind(), "backup failed");
            if let Some(ran) = ran.filter(|r| !r.ok) {
                reason = format!("{reason}; {}", ran.message);
            }
            finish_failed(ctx, &api, &session, Some(&config), started, reason, retry).await
        }
    }
}

/// Stash's session summary, which hook templates read.
fn summary(
    session: &BackupSession,
    config: &BackupConfiguration,
    ended: Option<Ended<'_>>,
) -> Summary {
    let ns = session.namespace().unwrap_or_default();
    let invoker = ("BackupConfiguration", config.name_any());
    Summary::of(
        &session.name_any(),
        &ns,
        (invoker.0, &invoker.1),
        config.target_ref(),
        ended,
    )
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
    session: &BackupSession,
    config: Option<&BackupConfiguration>,
) -> Result<Option<Outcome>> {
    let status = session.status.as_ref();
    let running = status.and_then(|s| s.phase) == Some(api::SessionPhase::Running);
    if !running || !session::past_deadline(session, Utc::now()) {
        return Ok(None);
    }
    let ns = session.namespace().unwrap_or_default();
    let invoker = &session.spec.invoker;
    let (Some(config), Some(repo_ref)) = (config, config.and_then(|c| c.spec.repository.as_ref()))
    else {
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
    let (repository, store) = ctx.open_store(&ns, repo_ref).await?;
    let snapshot = format!("{ns}/{}", session.name_any());
    // This session's own manifest only (an earlier session of the same name is not it).
    let manifest = store
        .manifest_of(&snapshot)
        .await?
        .filter(|m| m.session.uid == session.uid());
    let stored = match &manifest {
        Some(m) => store
            .snapshot_info(m)
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
                target_ref: config.target_ref().cloned().unwrap_or_default(),
            };
            finish_succeeded(ctx, api, session, config, &siblings, started, done)
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
            let policy = config::retry_policy(config).ok().flatten();
            let retry = session::retry_plan(session, policy, ErrorKind::Deadline, Utc::now());
            finish_failed(ctx, api, session, Some(config), started, reason, retry)
                .await
                .map(Some)
        }
    }
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
    session: &mut BackupSession,
    config: &BackupConfiguration,
    started: Instant,
    deadline: Instant,
    hooks: &Hooks,
    site: &mut Site,
) -> Result<Done> {
    let ns = session.namespace().unwrap_or_default();
    let spec = &config.spec;
    // Validate everything cheap before touching Vault or S3.
    config::check_config(config)?;
    config::check_session(session, config)?;
    let repo_ref = spec
        .repository
        .as_ref()
        .ok_or_else(|| Error::invalid("BackupConfiguration spec.repository is not set"))?;
    let target_ref = config.target_ref().cloned();
    let opened = ctx
        .open_store_and_vault(&ns, repo_ref, target_ref.as_ref())
        .await?;
    let (repository, store, mut vault) = (opened.repository, opened.store, opened.vault);
    site.set_target(vault.target());

    // The pre-hook runs once everything is resolved, right before the snapshot: a failing
    // one fails the session with nothing taken or sent.
    if let Some(pre) = &hooks.pre {
        let summary = summary(session, config, None);
        let ran = hooks::run(pre, &summary, site, deadline.into()).await;
        session.set_condition(hooks::condition(pre.stage, &ran));
        if !ran.ok {
            return Err(Error::Unavailable {
                message: format!("{}; no snapshot was taken", ran.message),
                source: None,
            });
        }
    }
    let node = vault.active_node().await?;
    ctx.vault_login(&mut vault, &node).await?;
    let t = target_ref.clone().unwrap_or_default();
    let request = snapshot::Request {
        name: format!("{ns}/{}", session.name_any()),
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
        target: (
            t.namespace.clone().unwrap_or_else(|| ns.clone()),
            t.name.clone(),
        ),
        pre_restore: None,
    };
    let taken = Box::pin(snapshot::take(
        ctx,
        &store,
        &vault,
        &opened.app_binding,
        &node,
        request,
        started,
        deadline,
    ))
    .await?;
    Ok(Done {
        store,
        repository,
        manifest: taken.manifest,
        target_ref: t,
        transfer: taken.transfer,
    })
}

/// `UnsealKeysEscrowed`: what was escrowed where, or why nothing was.
fn escrow_condition(seal: &crate::repository::SealRecord) -> Condition {
    match &seal.escrow {
        Some(e) => Condition::new(
            condition::UNSEAL_KEYS_ESCROWED,
            true,
            "UnsealKeysEscrowed",
            format!(
                "{} unseal key(s){} from {} sealed under KMS key {} beside the snapshot ({})",
                e.keys,
                if e.root_token {
                    " and the root token"
                } else {
                    ""
                },
                e.source,
                e.kms_key_id,
                e.key
            ),
        ),
        None => Condition::new(
            condition::UNSEAL_KEYS_ESCROWED,
            false,
            "UnsealKeysNotEscrowed",
            format!(
                "the unseal keys were not escrowed: {}; a restore into a new cluster will need them from elsewhere",
                seal.not_escrowed.as_deref().unwrap_or("unknown")
            ),
        ),
    }
}

struct RetentionResult {
    removed: Vec<String>,
    kept: usize,
    remaining: Vec<Manifest>,
    dry_run: bool,
}

/// Apply the retention policy to this configuration's snapshots. The newest (the one just
/// written) is always kept. On a failure halfway, what was deleted is reported.
async fn apply_retention(
    store: &Store,
    config: &BackupConfiguration,
    newest: &Manifest,
) -> Result<RetentionResult> {
    let policy = config::keep_policy(config)?;
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
        if !dry_run && let Some(m) = mine.iter().find(|m| m.name == d.id) {
            store.delete_stored(m).await.map_err(|e| Error::Storage {
                bucket: store.bucket().into(),
                message: format!(
                    "retention stopped after removing {} snapshot(s) ({}): {e}",
                    removed.len(),
                    removed.join(", ")
                ),
                kind: e.kind(),
                source: Some(Box::new(e)),
            })?;
        }
        removed.push(d.id.clone());
    }
    // The undo snapshots restores took are kept until their keepUntil, then go with the
    // next backup's retention (whatever configuration's: they belong to no schedule).
    let now = Utc::now();
    for m in all.iter().filter(|m| {
        m.pre_restore.as_ref().is_some_and(|p| p.keep_until < now)
            && m.target.namespace == newest.target.namespace
            && m.target.name == newest.target.name
    }) {
        if !dry_run {
            store.delete_stored(m).await?;
        }
        removed.push(m.name.clone());
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
    let mut conditions = session.conditions();
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

    if let Some(seal) = &done.manifest.seal {
        set_condition(&mut conditions, escrow_condition(seal));
    }

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
                    e.reason(),
                ),
            );
            record_event(
                &ctx.kube,
                session,
                EventType::Warning,
                "RetentionFailed",
                &e.reason(),
            )
            .await;
            done.store.list_manifests().await.ok()
        }
    };
    let removed = retention
        .as_ref()
        .map(|r| if r.dry_run { 0 } else { r.removed.len() })
        .unwrap_or(0);
    let totals = remaining.as_deref().map(RepositoryTotals::of);
    if let Some(totals) = &totals {
        let repo_ns = done.repository.namespace().unwrap_or_else(|| ns.clone());
        let repos: Api<Repository> = Api::namespaced(ctx.kube.clone(), &repo_ns);
        let repo_status = status::repository(&done.repository, totals, removed);
        // Totals are informational: a failed write is a warning, not a failed backup.
        let written =
            session::patch_status(&repos, &done.repository.name_any(), &repo_status).await;
        if let Err(e) = written {
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
                e.reason(),
            ),
        ),
    }

    let duration = started.elapsed();
    let size = done.manifest.size;
    let measure = BackupMeasure {
        success: true,
        duration,
        size: Some(size),
        repository: totals.map(|t| (t.snapshots, t.bytes)),
        removed,
    };
    let repo_name = done.repository.name_any();
    push_metrics(
        ctx,
        &mut conditions,
        config,
        &repo_name,
        &done.target_ref,
        &measure,
    )
    .await;

    let target = done.target_ref.resolved(&ns);
    let status =
        status::backup_succeeded(conditions, target, &done.manifest, done.transfer, duration);
    session::patch_status(api, &session.name_any(), &status).await?;
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
        sealed_after: false,
    })
}

/// Write the Failed status (with what `retry` plans) and its Event; create the retry
/// session at once when it has no delay (the scheduler's tick creates delayed ones, and
/// this one too should the create fail here).
async fn finish_failed(
    ctx: &Context,
    api: &Api<BackupSession>,
    session: &BackupSession,
    config: Option<&BackupConfiguration>,
    started: Instant,
    reason: String,
    retry: RetryPlan,
) -> Result<Outcome> {
    let ns = session.namespace().unwrap_or_default();
    let duration = started.elapsed();
    let mut conditions = session.conditions();
    if let Some(c) = retry.condition() {
        set_condition(&mut conditions, c);
    }
    let target = match config {
        Some(config) => {
            let target_ref = config.target_ref().cloned().unwrap_or_default();
            let repo = config
                .spec
                .repository
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default();
            let measure = BackupMeasure {
                duration,
                ..Default::default()
            };
            push_metrics(ctx, &mut conditions, config, &repo, &target_ref, &measure).await;
            FailedTarget::Named(target_ref.resolved(&ns))
        }
        None => FailedTarget::Unknown,
    };
    let status = status::backup_failed(conditions, &reason, Some(duration), target);
    session::patch_status(api, &session.name_any(), &status).await?;
    record_event(
        &ctx.kube,
        session,
        EventType::Warning,
        "BackupSessionFailed",
        &reason,
    )
    .await;
    if let RetryPlan::Follows { at, .. } = retry
        && at <= Utc::now()
        && let Err(e) = session::create_retry(api, session).await
    {
        tracing::warn!(error = %e.reason(), "could not create the retry now; the next tick does");
    }
    Ok(Outcome::Failed { reason })
}

/// Push Stash-style metrics (when a Pushgateway is configured) and print the CloudWatch
/// EMF line; record the outcome as the MetricsPushed condition.
async fn push_metrics(
    ctx: &Context,
    conditions: &mut Vec<Condition>,
    config: &BackupConfiguration,
    repository: &str,
    target: &api::TargetRef,
    measure: &BackupMeasure,
) {
    let (ns, name) = (config.namespace().unwrap_or_default(), config.name_any());
    let gauges = metrics::backup_gauges(measure);
    let emf = metrics::backup_emf(&ns, &name, &gauges);
    let group = metrics::backup_group(&ns, &name, repository, target, gauges);
    let gateway = ctx.settings.pushgateway.as_deref();
    metrics::report(&ctx.http, gateway, &emf, &group, conditions).await;
}
