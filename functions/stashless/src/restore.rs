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

use crate::api::{self, AppBinding, Condition, RestoreSession, condition, go_duration, human_size};
use crate::archive::SnapshotVerifier;
use crate::cluster::{EventType, record_event};
use crate::config;
use crate::config::hooks::{Ended, Hooks, Summary, ended};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::events::SessionRef;
use crate::hooks::{self, Site};
use crate::keys::{self, UnsealKeys, UnsealerStore};
use crate::metrics;
use crate::repository::{Invoker, Manifest, ObjectId, PreRestore, Store};
use crate::resolve;
use crate::serve::{Owners, VAULT_RESTORE_TASK};
use crate::session::{self, Claim, HasPhase, Outcome};
use crate::snapshot;
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
        // Boxed: the flow's future is large (it holds a whole snapshot step).
        Ok(()) => Box::pin(restore(ctx, &mut rs, started, deadline, &hooks, &mut site)).await,
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
    /// What a forced restore did with the snapshot's unseal keys.
    keys: Option<String>,
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
                // The undo snapshots a restore takes are restored only by name.
                .filter(|m| m.pre_restore.is_none())
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

/// RestoreSession annotation, stashless's own: `"false"` writes the snapshot's unseal keys
/// into the target's store but leaves unsealing to a person.
pub const ANNOTATION_UNSEAL: &str = "stashless.io/unseal";
/// RestoreSession annotation, stashless's own: `"false"` skips the snapshot of the target
/// taken before the restore (the undo).
pub const ANNOTATION_PRE_RESTORE: &str = "stashless.io/pre-restore-snapshot";

fn opted_out(rs: &RestoreSession, annotation: &str) -> bool {
    rs.annotations()
        .get(annotation)
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
}

fn task_param(rs: &RestoreSession, name: &str) -> Option<String> {
    rs.spec
        .task
        .as_ref()
        .and_then(|t| t.param(name))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The snapshot's own unseal keys, opened from its escrow, and where they go.
struct Carried {
    keys: UnsealKeys,
    store: UnsealerStore,
    prefix: String,
    unseal: bool,
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
    let opened = ctx
        .open_store_and_vault(&ns, repo_ref, rs.target_ref())
        .await?;
    let (store, mut vault, target_ab) = (opened.store, opened.vault, opened.app_binding);
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
    let force = force_requested(rs);
    // Into another cluster: the snapshot's own keys, opened and checked against it before
    // anything is sent, and the target's store they will go to, found.
    let carried = if force {
        carried_keys(ctx, &store, &manifest, rs, &target_ab).await?
    } else {
        None
    };

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
    // Listed while the target's own token is valid: after the restore it is not.
    let nodes = match &carried {
        Some(c) if c.unseal => vault.node_addresses(&node).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e.reason(), "could not list the cluster's nodes; unsealing the active node only");
            vec![node.clone()]
        }),
        _ => Vec::new(),
    };
    if !opted_out(rs, ANNOTATION_PRE_RESTORE) {
        let taken = Box::pin(take_undo(ctx, &store, &vault, &target_ab, &node, rs, &manifest, started, deadline))
            .await
            .map_err(|e| e.within("taking the pre-restore snapshot of the target (the undo) failed, so nothing was restored"))?;
        rs.set_condition(Condition::new(
            condition::PRE_RESTORE_SNAPSHOT,
            true,
            "PreRestoreSnapshotTaken",
            format!(
                "snapshot {} holds the target as it was before this restore; restoring it (with force, if the keys differ) undoes this restore. Retention keeps it until {}",
                taken.name,
                taken
                    .pre_restore
                    .as_ref()
                    .map(|p| p.keep_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default()
            ),
        ));
    };
    let transfer_started = Instant::now();
    let transfer = tokio::time::timeout_at(
        deadline.into(),
        stream_to_vault(ctx, &store, &vault, &node, &manifest, force),
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
    let mut sealed_after = health.is_some_and(|h| h.sealed);
    let keys = match carried {
        None => None,
        Some(c) => {
            let done = apply_keys(ctx, &mut vault, &nodes, c, deadline)
                .await
                .map_err(|e| {
                    e.within(format!(
                        "snapshot {} was restored into Vault, but its unseal keys were not fully applied (they stay in the escrow)",
                        manifest.name
                    ))
                })?;
            sealed_after = done.sealed;
            Some(done.message)
        }
    };
    Ok(Done {
        manifest,
        transfer,
        sealed_after,
        keys,
    })
}

/// With `force`: the keys escrowed with `manifest`, opened (KMS checks they belong to this
/// snapshot), and the target's unsealer store and prefix they will be written to. None when
/// the snapshot carries no escrow (older snapshots, clusters whose keys were not escrowed).
async fn carried_keys(
    ctx: &Context,
    store: &Store,
    manifest: &Manifest,
    rs: &RestoreSession,
    target_ab: &AppBinding,
) -> Result<Option<Carried>> {
    let Some(escrow) = manifest.seal.as_ref().and_then(|s| s.escrow.as_ref()) else {
        return Ok(None);
    };
    let name = &manifest.name;
    // Stash's oldKeyPrefix names the source cluster's prefix: it must be the escrowed one.
    if let Some(old) = task_param(rs, "oldKeyPrefix")
        && old != escrow.key_prefix
    {
        return Err(Error::invalid(format!(
            "spec.task.params oldKeyPrefix is {old:?} but snapshot {name} escrowed the keys of prefix {:?}; nothing was restored",
            escrow.key_prefix
        )));
    }
    let sealer = ctx.sealer().await.ok_or_else(|| {
        Error::invalid(format!(
            "snapshot {name} carries escrowed unseal keys but this function has no escrow key configured (STASHLESS_ESCROW_KMS_KEY_ID); nothing was restored"
        ))
    })?;
    let envelope = store.escrow_of(escrow).await?.ok_or_else(|| {
        Error::Integrity(format!(
            "the escrow of snapshot {name} ({}) is missing from the Repository, so its unseal keys cannot come with it; nothing was restored",
            escrow.key
        ))
    })?;
    let keys = sealer
        .open(&envelope, name, &manifest.sha256)
        .await
        .map_err(|e| {
            e.within(format!(
                "opening the escrowed unseal keys of snapshot {name} failed; nothing was restored"
            ))
        })?;
    if keys.keys.len() != escrow.keys as usize {
        return Err(Error::Integrity(format!(
            "the escrow of snapshot {name} holds {} key(s), its manifest says {}; nothing was restored",
            keys.keys.len(),
            escrow.keys
        )));
    }
    let label = format!(
        "target AppBinding {}/{}",
        target_ab.namespace().unwrap_or_default(),
        target_ab.name_any()
    );
    let target_store = keys::store_of(target_ab)
        .map_err(|why| Error::invalid(format!("{label}: {why}; nothing was restored")))?
        .ok_or_else(|| {
            Error::invalid(format!(
                "{label} names no unsealer store to write snapshot {name}'s unseal keys into (spec.parameters.unsealer.mode, or the annotation {}); nothing was restored",
                keys::ANNOTATION_KEYS_SECRET
            ))
        })?;
    let configured = task_param(rs, "keyPrefix").or_else(|| keys::configured_prefix(target_ab));
    let prefix = keys::target_prefix(
        &ctx.kube,
        &target_store,
        configured.as_deref(),
        &escrow.key_prefix,
    )
    .await
    .map_err(|e| {
        e.within(format!(
            "finding where {label}'s unseal keys go failed; nothing was restored"
        ))
    })?;
    Ok(Some(Carried {
        keys,
        store: target_store,
        prefix,
        unseal: !opted_out(rs, ANNOTATION_UNSEAL),
    }))
}

struct KeysApplied {
    message: String,
    sealed: bool,
}

/// After a forced restore: the snapshot's keys into the target's store, then (unless opted
/// out) every node unsealed with them, an active node waited for, and one authenticated
/// request with the snapshot's root token.
async fn apply_keys(
    ctx: &Context,
    vault: &mut Vault,
    nodes: &[String],
    c: Carried,
    deadline: Instant,
) -> Result<KeysApplied> {
    let aws = ctx.aws_for(&c.store).await;
    let written = keys::write(&ctx.kube, aws.as_ref(), &c.store, &c.prefix, &c.keys).await?;
    if !c.unseal {
        return Ok(KeysApplied {
            message: format!(
                "{written}; not unsealed ({ANNOTATION_UNSEAL}: \"false\"): unseal with them"
            ),
            sealed: true,
        });
    }
    for addr in nodes {
        vault.unseal(addr, &c.keys.keys).await?;
    }
    let active = loop {
        match vault.active_node().await {
            Ok(n) => break n,
            Err(e) if e.is_retryable() && Instant::now() + Duration::from_secs(1) < deadline => {
                tracing::info!(error = %e.reason(), "waiting for an active node after unsealing");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    };
    // The AppBinding's own token belonged to the data just replaced.
    let own_token = match vault.check_token(&active).await {
        Ok(()) => "",
        Err(_) => {
            "; the AppBinding's token belonged to the replaced data and is no longer valid: put a token of the restored cluster into its Secret before the next backup"
        }
    };
    let check = match c.keys.root_token {
        Some(token) => {
            vault.set_token(token);
            vault.check_token(&active).await?;
            "an authenticated request with the snapshot's root token succeeded"
        }
        None => "no root token was escrowed, so no authenticated request was made",
    };
    Ok(KeysApplied {
        message: format!(
            "{written}; Vault is unsealed: {} node(s) unsealed with the snapshot's keys, active node {active}; {check}{own_token}",
            nodes.len()
        ),
        sealed: false,
    })
}

/// Snapshot the target as it is, before another snapshot replaces it: the undo.
#[allow(clippy::too_many_arguments)]
async fn take_undo(
    ctx: &Context,
    store: &Store,
    vault: &Vault,
    target_ab: &AppBinding,
    node: &str,
    rs: &RestoreSession,
    replaced_by: &Manifest,
    started: Instant,
    deadline: Instant,
) -> Result<Manifest> {
    let ns = rs.namespace().unwrap_or_default();
    let rs_name = rs.name_any();
    let request = snapshot::Request {
        name: format!("{ns}/{rs_name}-pre-restore"),
        session: ObjectId {
            namespace: ns.clone(),
            name: rs_name.clone(),
            uid: rs.uid(),
        },
        invoker: Invoker {
            namespace: ns.clone(),
            kind: "RestoreSession".into(),
            name: rs_name.clone(),
        },
        target: rs.target_key().unwrap_or_default(),
        pre_restore: Some(PreRestore {
            restore_session: format!("{ns}/{rs_name}"),
            replaced_by: replaced_by.name.clone(),
            keep_until: chrono::Utc::now()
                + chrono::Duration::from_std(ctx.settings.pre_restore_keep)
                    .unwrap_or_else(|_| chrono::Duration::days(7)),
        }),
    };
    let taken = Box::pin(snapshot::take(
        ctx, store, vault, target_ab, node, request, started, deadline,
    ))
    .await?;
    Ok(taken.manifest)
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
            let sealed_note = done.sealed_after.then(|| match &done.keys {
                Some(_) => "Vault is SEALED: the snapshot's unseal keys were written to its unsealer store but not used (stashless.io/unseal: \"false\"); unseal it with them.".to_string(),
                None => format!(
                    "Vault is SEALED now: the snapshot came from a cluster with other unseal keys{}. Unseal it with the unseal keys (or KMS) of the cluster the snapshot was taken from.",
                    done.manifest
                        .seal
                        .as_ref()
                        .and_then(|s| s.not_escrowed.as_deref())
                        .map(|why| format!(", and they were not escrowed with it ({why})"))
                        .unwrap_or_default()
                ),
            });
            if let Some(keys) = &done.keys {
                api::set_condition(
                    &mut conditions,
                    Condition::new(
                        condition::UNSEAL_KEYS_RESTORED,
                        true,
                        "UnsealKeysRestored",
                        keys,
                    ),
                );
            }
            let msg = format!(
                "restored snapshot {} ({}, raft index {}) in {}.{}{}",
                done.manifest.name,
                human_size(done.manifest.size),
                done.manifest.raft.index,
                go_duration(done.transfer),
                done.keys
                    .as_ref()
                    .map(|k| format!(" {k}."))
                    .unwrap_or_default(),
                sealed_note
                    .as_ref()
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default()
            );
            let status = status::restore_succeeded(
                conditions,
                &msg,
                sealed_note.as_deref(),
                done.transfer,
                duration,
            );
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
