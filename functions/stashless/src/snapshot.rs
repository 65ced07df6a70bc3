//! Taking a snapshot into a Repository: the step a backup and a restore's undo share.
//!
//! Vault → verifier → multipart upload, completed only once the stream verified; the
//! cluster's unseal keys escrowed beside it (sealed for this snapshot, `keys`); then the
//! manifest, last, so a listing never shows a snapshot whose parts are not all stored.
//! On any failure the upload is aborted and what was written is removed.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use kube::ResourceExt;

use crate::api::{AppBinding, go_duration};
use crate::archive::{SnapshotInfo, SnapshotVerifier};
use crate::context::{Context, Progress};
use crate::error::{Error, ErrorKind, Result};
use crate::keys;
use crate::repository::{
    EscrowRecord, Invoker, Manifest, MultipartUpload, ObjectId, PreRestore, SealRecord, Store,
    TargetId,
};
use crate::vault::Vault;

/// What to take and how to name it.
pub struct Request {
    /// `<namespace>/<session>`.
    pub name: String,
    pub session: ObjectId,
    pub invoker: Invoker,
    /// The AppBinding, as (namespace, name).
    pub target: (String, String),
    pub pre_restore: Option<PreRestore>,
}

/// A stored, verified snapshot.
pub struct Taken {
    pub manifest: Manifest,
    pub transfer: Duration,
}

/// Take a snapshot of the active `node` into `store` as `req.name`, and escrow the
/// cluster's unseal keys beside it. `started` is when the session began (for messages).
#[allow(clippy::too_many_arguments)]
pub async fn take(
    ctx: &Context,
    store: &Store,
    vault: &Vault,
    app_binding: &AppBinding,
    node: &str,
    req: Request,
    started: Instant,
    deadline: Instant,
) -> Result<Taken> {
    let name = req.name.clone();
    let uid = req.session.uid.clone().unwrap_or_default();
    let health = vault.health(Some(node)).await.ok();
    let seal_status = vault.seal_status(node).await.ok();
    make_room(store, &name, &uid).await?;
    let transfer_started = Instant::now();
    let mut upload = store.begin_upload(&name, &uid).await?;
    let mut verifier = SnapshotVerifier::new();
    let transfer = tokio::time::timeout_at(
        deadline.into(),
        stream_into(
            vault,
            node,
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
        // The store kept other bytes than were sent: not a glitch to retry blindly.
        return Err(Error::Storage {
            bucket: store.bucket().into(),
            message: format!(
                "stored object {key} is {} bytes, the snapshot was {} bytes",
                stored.size, info.size
            ),
            kind: ErrorKind::Integrity,
            source: None,
        });
    }
    let transfer = transfer_started.elapsed();
    let seal = escrow(ctx, store, app_binding, &name, &info.sha256, seal_status).await;
    let manifest = Manifest {
        format_version: 1,
        name: name.clone(),
        key,
        session: req.session,
        invoker: req.invoker,
        target: TargetId {
            namespace: req.target.0,
            kind: "AppBinding".into(),
            name: req.target.1,
            address: node.to_string(),
        },
        created_at: Utc::now(),
        size: info.size,
        sha256: info.sha256.clone(),
        etag: stored.etag.clone(),
        version_id: stored.version_id.clone(),
        duration_seconds: transfer.as_secs_f64(),
        vault_version: health.as_ref().and_then(|h| h.version.clone()),
        vault_cluster_name: health.as_ref().and_then(|h| h.cluster_name.clone()),
        raft: info.meta.clone(),
        files: info.files.clone(),
        seal,
        pre_restore: req.pre_restore,
    };
    if let Err(e) = store.put_manifest(&manifest).await {
        // Without its manifest the snapshot is invisible; do not leave it (or its escrow)
        // behind.
        let _ = store.delete_stored(&manifest).await;
        return Err(e);
    }
    tracing::info!(snapshot = %name, size = info.size, secs = transfer.as_secs_f64(), "snapshot stored and verified");
    Ok(Taken { manifest, transfer })
}

/// Escrow the cluster's unseal keys for snapshot `name`. Never fails the snapshot: what
/// could not be escrowed is recorded with the reason (the session's condition shows it).
async fn escrow(
    ctx: &Context,
    store: &Store,
    ab: &AppBinding,
    name: &str,
    sha256: &str,
    seal_status: Option<crate::vault::SealStatus>,
) -> Option<SealRecord> {
    let mut record = SealRecord {
        type_: seal_status
            .as_ref()
            .map(|s| s.type_.clone())
            .unwrap_or_default(),
        shares: seal_status.as_ref().map(|s| s.n).filter(|n| *n > 0),
        threshold: seal_status.as_ref().map(|s| s.t).filter(|t| *t > 0),
        seal_key_id: ab.annotations().get(keys::ANNOTATION_SEAL_KEY_ID).cloned(),
        escrow: None,
        not_escrowed: None,
    };
    match sealed_escrow(ctx, store, ab, name, sha256, &record).await {
        Ok(e) => record.escrow = Some(e),
        Err(why) => {
            tracing::warn!(snapshot = %name, %why, "unseal keys not escrowed");
            record.not_escrowed = Some(why);
        }
    }
    Some(record)
}

async fn sealed_escrow(
    ctx: &Context,
    store: &Store,
    ab: &AppBinding,
    name: &str,
    sha256: &str,
    seal: &SealRecord,
) -> std::result::Result<EscrowRecord, String> {
    match seal.type_.as_str() {
        "shamir" => {}
        "" => {
            return Err(
                "Vault's seal status could not be read, so it is unknown whether keys are needed"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "the {other} seal unseals itself with its KMS key{}: there are no unseal keys to escrow",
                seal.seal_key_id
                    .as_deref()
                    .map(|k| format!(" ({k})"))
                    .unwrap_or_default()
            ));
        }
    }
    let unsealer = keys::store_of(ab)?.ok_or_else(|| {
        format!(
            "AppBinding {}/{} names no unsealer store: set spec.parameters.unsealer.mode (KubeVault) or the annotation {}",
            ab.namespace().unwrap_or_default(),
            ab.name_any(),
            keys::ANNOTATION_KEYS_SECRET
        )
    })?;
    let sealer = ctx.sealer().await.ok_or(
        "no escrow key is configured (STASHLESS_ESCROW_KMS_KEY_ID, the Terraform module's escrow KMS key)".to_string(),
    )?;
    let aws = ctx.aws_for(&unsealer).await;
    let prefix = keys::configured_prefix(ab);
    let (prefix, unseal) = keys::read(&ctx.kube, aws.as_ref(), &unsealer, prefix.as_deref())
        .await
        .map_err(|e| e.reason())?;
    if let Some(t) = seal.threshold
        && unseal.keys.len() < t as usize
    {
        return Err(format!(
            "{} holds {} unseal key(s) but Vault needs {t}: escrowing them could not unseal it",
            unsealer.describe(&prefix),
            unseal.keys.len()
        ));
    }
    let envelope = sealer
        .seal(&unseal, name, sha256)
        .await
        .map_err(|e| e.reason())?;
    // No manifest names this snapshot (make_room checked): an escrow under its name is one
    // this session left when it stopped before the manifest.
    store
        .delete_object(&store.escrow_key(name))
        .await
        .map_err(|e| e.reason())?;
    let key = store
        .put_escrow(name, &envelope)
        .await
        .map_err(|e| e.reason())?;
    Ok(EscrowRecord {
        key,
        store: unsealer.kind().into(),
        source: unsealer.describe(&prefix),
        key_prefix: prefix,
        keys: unseal.keys.len() as u32,
        root_token: unseal.root_token.is_some(),
        kms_key_id: sealer.key_id(),
    })
}

/// Before uploading snapshot `name`: a snapshot stored under that name by another session (a
/// BackupSession deleted and created again with the same name) is never overwritten, so the
/// session is refused before Vault is read. An object this same session left without its
/// manifest (the function stopped between the two writes) is removed first; the upload's
/// If-None-Match would refuse it otherwise.
async fn make_room(store: &Store, name: &str, session_uid: &str) -> Result<()> {
    if let Some(m) = store.manifest_of(name).await? {
        return Err(Error::invalid(format!(
            "snapshot {name} is stored already, from an earlier session of the same name (uid {}, {}): stashless never overwrites a stored snapshot; delete this session and create one with a new name (the scheduler's names carry the time)",
            m.session.uid.as_deref().unwrap_or("unknown"),
            m.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    let key = store.snapshot_key(name);
    if let Some(orphan) = store.object_info(&key).await? {
        if orphan.session_uid.as_deref() != Some(session_uid) {
            return Err(Error::invalid(format!(
                "S3 holds {key} without a manifest, uploaded by another session ({}): stashless never overwrites a stored object; remove it or give this session a new name",
                orphan.session_uid.as_deref().unwrap_or("unknown")
            )));
        }
        tracing::info!(snapshot = %name, "removing this session's own snapshot object left without a manifest");
        store.delete_object(&key).await?;
    }
    Ok(())
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
