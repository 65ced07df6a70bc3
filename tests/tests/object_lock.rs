//! Object Lock for real: a versioned bucket with Object Lock and a default GOVERNANCE
//! retention, as the Terraform module creates it, on moto's S3 (5.2.5; Garage has no Object
//! Lock). moto holds such a bucket to AWS's rules that matter here: a write without a checksum
//! is refused, If-None-Match is honoured, every version is kept and a locked version cannot
//! be deleted. A backup succeeds there and records the version it wrote; retention never fails
//! on a locked object; a stored snapshot or manifest is never overwritten; a restore reads the
//! version its manifest recorded, whatever was written under the key since.

use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumMode, DefaultRetention, ObjectLockConfiguration,
    ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule, VersioningConfiguration,
};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use stashless::api::{BackupSession, Repository};
use stashless::backup;
use stashless::repository::{Location, Manifest, Store, Tuning};
use stashless::session::Outcome;
use stashless_tests::moto::Moto;
use stashless_tests::{ConfigBuilder, NS, S3Target, World, failed_reason, session_ref};

const PREFIX: &str = "locked";

/// moto's S3 with bucket `bucket` locked as the module does it, and a world backing up to it
/// with `keepLast: 1`.
async fn locked_world(tag: &str) -> (World, Moto, aws_sdk_s3::Client, String) {
    let moto = Moto::start().await.unwrap();
    let target = S3Target {
        endpoint: moto.endpoint.clone(),
        region: "us-east-1".into(),
        access_key: "testing".into(),
        secret_key: "testing".into(),
    };
    let s3 = target.client();
    let bucket = format!("{tag}-locked");
    s3.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3.put_object_lock_configuration()
        .bucket(&bucket)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(ObjectLockRetentionMode::Governance)
                                .days(1)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let w = World::builder(tag)
        .openbao()
        .app_binding()
        .s3_on(target, &bucket)
        .backup_configuration(
            ConfigBuilder::new("cfg").retention(json!({"name": "p", "keepLast": 1, "prune": true})),
        )
        .repository(PREFIX)
        .build()
        .await;
    (w, moto, s3, bucket)
}

async fn store_of(w: &World, bucket: &str) -> Store {
    let s3 = w.s3();
    Store::open(
        Location {
            endpoint: Some(s3.endpoint.clone()),
            region: s3.region.clone(),
            bucket: bucket.into(),
            prefix: PREFIX.into(),
        },
        Some(stashless::repository::StaticCredentials {
            access_key_id: s3.access_key.clone(),
            secret_access_key: s3.secret_key.clone(),
            session_token: None,
        }),
        None,
        Tuning::default(),
    )
    .await
    .unwrap()
}

fn succeeded(o: &Outcome) {
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
}

/// Versions (version id, is latest) of `key`, and whether a delete marker is on top.
async fn versions(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (Vec<String>, bool) {
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .unwrap();
    let ids = out
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key))
        .map(|v| v.version_id().unwrap_or_default().to_string())
        .collect();
    let marker = out
        .delete_markers()
        .iter()
        .any(|m| m.key() == Some(key) && m.is_latest() == Some(true));
    (ids, marker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_retention_and_restore_on_a_locked_bucket() {
    let (w, _moto, s3, bucket) = locked_world("lock").await;
    let bao = w.bao();
    let store = store_of(&w, &bucket).await;
    bao.kv_put("apps/db", json!({"password": "first"}))
        .await
        .unwrap();

    // 1. A backup succeeds on the locked bucket (the manifest's PutObject carries the checksum
    //    a bucket with default retention requires) and records the version it wrote.
    succeeded(&w.backup("cfg-1").await);
    let first: Manifest = store
        .manifest_of(&format!("{NS}/cfg-1"))
        .await
        .unwrap()
        .unwrap();
    let first_version = first
        .version_id
        .clone()
        .expect("a versioned bucket gives a version id");
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key(&first.key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.version_id(), Some(first_version.as_str()));

    // 2. A second backup; retention (keepLast 1) removes the first without failing on its lock:
    //    a delete marker hides it, the locked version stays until the lifecycle expires it.
    bao.kv_put("apps/db", json!({"password": "second"}))
        .await
        .unwrap();
    succeeded(&w.backup("cfg-2").await);
    let st = w.cluster.session("cfg-2").await.unwrap().status.unwrap();
    let applied = st
        .conditions
        .iter()
        .find(|c| c.type_ == "RetentionPolicyApplied")
        .expect("retention condition");
    assert_eq!(applied.status, "True", "{applied:?}");
    assert!(
        applied
            .message
            .as_deref()
            .unwrap_or("")
            .contains("removed 1"),
        "{applied:?}"
    );
    assert!(
        store
            .manifest_of(&format!("{NS}/cfg-1"))
            .await
            .unwrap()
            .is_none()
    );
    let (ids, hidden) = versions(&s3, &bucket, &first.key).await;
    assert_eq!(ids, vec![first_version.clone()]);
    assert!(hidden, "the first snapshot is not behind a delete marker");
    // The lock is real: the first manifest's version cannot be deleted. (moto gives the
    // bucket's default retention to PutObject only, not to a completed multipart upload, so
    // the manifest is the object whose lock it enforces.)
    let manifest_key = store.manifest_key(&format!("{NS}/cfg-1"));
    let (manifest_versions, manifest_hidden) = versions(&s3, &bucket, &manifest_key).await;
    assert!(manifest_hidden);
    let [only]: [String; 1] = manifest_versions.try_into().unwrap();
    let denied = s3
        .delete_object()
        .bucket(&bucket)
        .key(&manifest_key)
        .version_id(&only)
        .send()
        .await;
    assert!(denied.is_err(), "moto let a locked version be deleted");

    // 3. Someone writes other bytes under the second snapshot's key (a new version: Object
    //    Lock allows that). The restore reads the version its manifest recorded.
    let second = store
        .manifest_of(&format!("{NS}/cfg-2"))
        .await
        .unwrap()
        .unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key(&second.key)
        .body(b"not a snapshot".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(versions(&s3, &bucket, &second.key).await.0.len(), 2);
    bao.kv_put("apps/db", json!({"password": "third"}))
        .await
        .unwrap();
    w.cluster
        .new_restore("restore-2", "repo", "vault", None, false)
        .await
        .unwrap();
    let o = w.run_restore("restore-2").await;
    succeeded(&o);
    let v = bao.kv_get("apps/db").await.unwrap().unwrap();
    assert_eq!(v["password"], "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_snapshot_is_never_overwritten() {
    let (w, _moto, s3, bucket) = locked_world("nover").await;
    let store = store_of(&w, &bucket).await;
    succeeded(&w.backup("cfg-1").await);
    let name = format!("{NS}/cfg-1");
    let before = store.manifest_of(&name).await.unwrap().unwrap();

    // The session is deleted and one of the same name created: refused before Vault is read,
    // the stored snapshot and manifest untouched.
    w.cluster
        .api::<BackupSession>()
        .delete("cfg-1", &DeleteParams::default())
        .await
        .unwrap();
    w.cluster.new_session("cfg", "cfg-1").await.unwrap();
    let o = backup::run(&w.ctx(), &session_ref("cfg-1"), None)
        .await
        .unwrap();
    let why = failed_reason(&o);
    assert!(
        why.contains("stored already") && why.contains("never overwrites"),
        "{why}"
    );
    assert_eq!(store.manifest_of(&name).await.unwrap().unwrap(), before);
    assert_eq!(versions(&s3, &bucket, &before.key).await.0.len(), 1);
    assert_eq!(
        versions(&s3, &bucket, &store.manifest_key(&name))
            .await
            .0
            .len(),
        1
    );

    // The store itself refuses a second manifest under the same name (If-None-Match), the
    // guard against a race the check above cannot see.
    let again = store.put_manifest(&before).await.unwrap_err().to_string();
    assert!(
        again.contains("412") && again.contains("never overwrites"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_bucket_without_checksums_fails_with_the_fix() {
    let (w, _moto, s3, bucket) = locked_world("nosum").await;
    // The annotation for S3-compatibles that break on checksums turns them off; a bucket with
    // Object Lock refuses writes without one, and the reason says which annotation to drop.
    w.cluster
        .api::<Repository>()
        .patch(
            "repo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"stashless.io/s3-checksums": "when-required"}}})),
        )
        .await
        .unwrap();
    let o = w.backup("cfg-1").await;
    let why = failed_reason(&o);
    assert!(
        why.contains("Object Lock") && why.contains("stashless.io/s3-checksums"),
        "{why}"
    );
    // Nothing half-written is listed: no manifest, the snapshot object hidden.
    let store = store_of(&w, &bucket).await;
    assert!(store.list_manifests().await.unwrap().is_empty());
    let key = store.snapshot_key(&format!("{NS}/cfg-1"));
    let (_, hidden) = versions(&s3, &bucket, &key).await;
    let present = s3
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .is_ok();
    assert!(
        hidden || !present,
        "a snapshot without a manifest is left visible"
    );
}
