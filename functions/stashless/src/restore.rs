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
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;

use crate::api::{RestoreSession, go_duration, human_size};
use crate::archive::SnapshotVerifier;
use crate::cluster::{EventType, record_event};
use crate::config;
use crate::config::hooks::{Ended, Hooks, Summary, ended};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::events::SessionRef;
use crate::hooks::{self, Site};
use crate::metrics;
use crate::repository::{Manifest, Store};
use crate::resolve;
use crate::serve::{Owners, VAULT_RESTORE_TASK};
use crate::session::{self, Claim, HasPhase, Outcome};
use crate::status;
use crate::vault::Vault;

/// Handle one event naming a RestoreSession.
pub async fn run(
    ctx: &Context,
    target: &SessionRef,
    lambda_deadline: Option<Instant>,
) -> Result<Outcome> {
    let started = Instant::now();
    if let Some(why) = ctx.settings.namespaces.refuse(&target.namespace) {
        return Ok(Outcome::NotClaimed { why });
    }
    let api: Api<RestoreSession> = Api::namespaced(ctx.kube.clone(), &target.namespace);
    let rs = match session::fetch(&api, "RestoreSession", &target.namespace, &target.name).await? {
        Ok(s) => s,
        Err(why) => return Ok(Outcome::NotClaimed { why }),
    };
    // Another product's restore (a database's, a volume's) is left exactly as it is.
    if let Some(why) = Owners::new(&ctx.kube)
        .restore_session(&rs)
        .await?
        .others_reason()
    {
        tracing::debug!(session = %target.name, %why, "not a stashless RestoreSession");
        return Ok(Outcome::NotClaimed { why });
    }
    if let Some(why) = session::not_pending("RestoreSession", &rs) {
        return Ok(Outcome::NotClaimed { why });
    }
    // An invalid timeOut fails the session after the claim (in `restore`); the default
    // bounds it until then.
    let limit = config::restore_time_limit(&rs, ctx.settings.default_timeout)
        .unwrap_or(ctx.settings.default_timeout);
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

    // Hooks that do not check fail the session in `restore` (check_restore_refused).
    let hooks = config::hooks::restore_hooks(rs.spec.hooks.as_ref()).unwrap_or_default();
    let mut site = resolve::hook_site(&ctx.kube, &target.namespace, &hooks).await;
    let mut rs = rs;
    let result = match session::check_restore_exclusive(&ctx.kube, &rs).await {
        Err(e) => Err(e),
        Ok(()) => restore(ctx, &mut rs, started, deadline, &hooks, &mut site).await,
    };
    let result = result.map_err(|e| {
        tracing::warn!(error = %e.reason(), kind = ?e.kind(), "restore failed");
        e.reason()
    });
    let result = match hooks.post_for(&rs.conditions(), result.is_ok(), false) {
        None => result,
        Some(post) => {
            let error = result.as_ref().err().cloned();
            let summary = summary(&rs, Some(ended(error, started.elapsed())));
            let at = hooks::post_deadline(deadline, lambda_deadline);
            let ran = hooks::run(post, &summary, &site, at.into()).await;
            rs.set_condition(hooks::condition(post.stage, &ran));
            match result {
                Ok(done) if !ran.ok => Err(format!(
                    "{}; snapshot {} was restored into Vault",
                    ran.message, done.manifest.name
                )),
                Err(reason) if !ran.ok => Err(format!("{reason}; {}", ran.message)),
                other => other,
            }
        }
    };
    finish(ctx, &api, &rs, started, result).await
}

/// Stash's session summary, which hook templates read.
fn summary(rs: &RestoreSession, ended: Option<Ended<'_>>) -> Summary {
    let (ns, name) = (rs.namespace().unwrap_or_default(), rs.name_any());
    Summary::of(
        &name,
        &ns,
        ("RestoreSession", &name),
        rs.target_ref(),
        ended,
    )
}

struct Done {
    manifest: Manifest,
    transfer: Duration,
    sealed_after: bool,
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
        return Err(Error::invalid(
            "the Repository holds no snapshots to restore",
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
                Error::invalid(format!(
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
                [] => Err(Error::invalid(format!(
                    "snapshot {name:?} is not in the Repository ({} snapshots; names look like {:?})",
                    manifests.len(),
                    manifests.last().map(|m| m.name.as_str()).unwrap_or("")
                ))),
                many => Err(Error::invalid(format!(
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
    rs: &mut RestoreSession,
    started: Instant,
    deadline: Instant,
    hooks: &Hooks,
    site: &mut Site,
) -> Result<Done> {
    let ns = rs.namespace().unwrap_or_default();
    config::restore_time_limit(rs, Duration::ZERO)?;
    config::check_driver(rs.spec.driver.as_deref(), "restores")?;
    config::check_task(rs.spec.task.as_ref(), VAULT_RESTORE_TASK)?;
    config::check_restore_refused(rs)?;
    let repo_ref = rs
        .spec
        .repository
        .as_ref()
        .ok_or_else(|| Error::invalid("RestoreSession spec.repository is not set"))?;
    let (_, store, mut vault) = ctx
        .open_store_and_vault(&ns, repo_ref, rs.target_ref())
        .await?;
    site.set_target(vault.target());

    let manifests = store.list_manifests().await?;
    let requested = requested_snapshot(rs);
    let target = rs.target_key();
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
    let stored = store.snapshot_info(&manifest).await?.ok_or_else(|| {
        Error::Integrity(format!(
            "snapshot {} has a manifest but its object {} is missing",
            manifest.name, manifest.key
        ))
    })?;
    if stored.size != manifest.size {
        return Err(Error::Integrity(format!(
            "snapshot {} is {} bytes in S3 but its manifest says {}: the object changed after the backup; not restoring it",
            manifest.name, stored.size, manifest.size
        )));
    }
    if let (Some(want), Some(have)) = (&manifest.etag, &stored.etag)
        && want != have
    {
        return Err(Error::Integrity(format!(
            "snapshot {} has ETag {have} in S3 but {want} in its manifest: the object was replaced after the backup; not restoring it",
            manifest.name
        )));
    }

    // The pre-hook runs once the snapshot checked out, right before Vault is touched: a
    // failing one fails the session with Vault as it was.
    if let Some(pre) = &hooks.pre {
        let ran = hooks::run(pre, &summary(rs, None), site, deadline.into()).await;
        rs.set_condition(hooks::condition(pre.stage, &ran));
        if !ran.ok {
            return Err(Error::Unavailable {
                message: format!("{}; nothing was restored", ran.message),
                source: None,
            });
        }
    }
    let node = vault.active_node().await?;
    ctx.vault_login(&mut vault, &node).await?;
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
        sealed_after: health.is_some_and(|h| h.sealed),
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
    let mut object = store.open_snapshot(manifest).await?;
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
                        kind: ErrorKind::Unavailable,
                        source: Some(Box::new(e)),
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
                Err(Error::Integrity(format!(
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
    let ns = rs.namespace().unwrap_or_default();
    let mut conditions = rs.conditions();
    // Metrics first: their condition goes into the one status write.
    let (name, success) = (rs.name_any(), result.is_ok());
    let target = rs.target_ref().cloned().unwrap_or_default();
    let emf = metrics::restore_emf(&ns, &name, success, duration);
    let group = metrics::restore_group(&ns, &name, &target, success, duration);
    let gateway = ctx.settings.pushgateway.as_deref();
    metrics::report(&ctx.http, gateway, &emf, &group, &mut conditions).await;
    let (status, outcome, event) = match result {
        Ok(done) => {
            let sealed_note = done.sealed_after.then_some(
                "Vault is SEALED now: the snapshot came from a cluster with other unseal keys. Unseal it with the unseal keys (or KMS) of the cluster the snapshot was taken from.",
            );
            let msg = format!(
                "restored snapshot {} ({}, raft index {}) in {}.{}",
                done.manifest.name,
                human_size(done.manifest.size),
                done.manifest.raft.index,
                go_duration(done.transfer),
                sealed_note.map(|n| format!(" {n}")).unwrap_or_default()
            );
            let status =
                status::restore_succeeded(conditions, &msg, sealed_note, done.transfer, duration);
            let kind = if done.sealed_after {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let outcome = Outcome::Succeeded {
                snapshot: done.manifest.name,
                size: done.manifest.size,
                duration,
                sealed_after: done.sealed_after,
            };
            (status, outcome, (kind, "RestoreSessionSucceeded", msg))
        }
        Err(reason) => (
            status::restore_failed(conditions, &reason, Some(duration)),
            Outcome::Failed {
                reason: reason.clone(),
            },
            (EventType::Warning, "RestoreSessionFailed", reason),
        ),
    };
    session::patch_status(api, &rs.name_any(), &status).await?;
    record_event(&ctx.kube, rs, event.0, event.1, &event.2).await;
    Ok(outcome)
}
