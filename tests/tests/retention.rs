//! Retention after a real backup, over a synthetic history written into a real S3 server:
//! exactly the snapshots the restic rules keep remain, other configurations' snapshots are
//! untouched, `dryRun` removes nothing, and the Repository status counts what is left.

use chrono::{Duration, Utc};
use serde_json::json;
use stashless::api::Repository;
use stashless::archive::SnapshotMeta;
use stashless::backup;
use stashless::repository::{
    Invoker, Location, Manifest, ObjectId, PreRestore, StaticCredentials, Store, TargetId, Tuning,
};
use stashless::session::Outcome;
use stashless_tests::{ConfigBuilder, NS, S3Target, World, failed_reason, session_ref};

async fn history(store: &Store, s3: &S3Target, config: &str, days: &[i64]) -> Vec<String> {
    history_of(store, s3, config, days, None).await
}

/// Like [`history`]; with `undo_expired_days`, each is a restore's undo snapshot (taken by
/// RestoreSession `<config>-hist-<d>`) whose keepUntil is that many days from now.
async fn history_of(
    store: &Store,
    s3: &S3Target,
    config: &str,
    days: &[i64],
    undo_keep_days: Option<i64>,
) -> Vec<String> {
    let mut names = Vec::new();
    for d in days {
        let name = format!("{NS}/{config}-hist-{d}");
        let m = Manifest {
            format_version: 1,
            name: name.clone(),
            key: store.snapshot_key(&name),
            session: ObjectId {
                namespace: NS.into(),
                name: format!("{config}-hist-{d}"),
                uid: None,
            },
            invoker: Invoker {
                namespace: NS.into(),
                kind: "BackupConfiguration".into(),
                name: config.into(),
            },
            target: TargetId {
                namespace: NS.into(),
                kind: "AppBinding".into(),
                name: "vault".into(),
                address: "http://x".into(),
            },
            created_at: Utc::now() - Duration::days(*d),
            size: 3,
            sha256: "0".repeat(64),
            etag: None,
            version_id: None,
            duration_seconds: 0.1,
            vault_version: None,
            vault_cluster_name: None,
            raft: SnapshotMeta::default(),
            files: vec![],
            seal: None,
            pre_restore: undo_keep_days.map(|k| PreRestore {
                restore_session: format!("{NS}/{config}-hist-{d}"),
                replaced_by: format!("{NS}/elsewhere"),
                keep_until: Utc::now() + Duration::days(k),
            }),
        };
        s3.client()
            .put_object()
            .bucket(&store.location.bucket)
            .key(&m.key)
            .body(b"old".to_vec().into())
            .send()
            .await
            .unwrap();
        store.put_manifest(&m).await.unwrap();
        names.push(name);
    }
    names
}

/// A world whose BackupConfiguration `cfg` has this retention policy, its Store, and a
/// Pending session `cfg-now`.
async fn setup(tag: &str, policy: serde_json::Value) -> (World, Store) {
    let w = World::builder(tag)
        .openbao()
        .app_binding()
        .repository("r")
        .backup_configuration(ConfigBuilder::new("cfg").retention(policy))
        .build()
        .await;
    let s3 = w.s3();
    let store = Store::open(
        Location {
            endpoint: Some(s3.endpoint.clone()),
            region: s3.region.clone(),
            bucket: w.bucket().into(),
            prefix: "r".into(),
        },
        Some(StaticCredentials {
            access_key_id: s3.access_key.clone(),
            secret_access_key: s3.secret_key.clone(),
            session_token: None,
        }),
        None,
        Tuning::default(),
    )
    .await
    .unwrap();
    w.cluster.new_session("cfg", "cfg-now").await.unwrap();
    (w, store)
}

/// A restore's undo snapshot stays until its keepUntil, whatever the configuration's
/// policy, and goes with the first backup of its target after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_snapshots_stay_until_their_keep_until() {
    let (w, store) = setup(
        "ret-undo",
        json!({"name": "p", "keepLast": 1, "prune": true}),
    )
    .await;
    let (cluster, s3) = (&w.cluster, w.s3());
    let expired = history_of(&store, s3, "undo-old", &[9], Some(-1)).await;
    let kept = history_of(&store, s3, "undo-new", &[1], Some(3)).await;
    let ctx = cluster.backup_context(None);
    let outcome = backup::run(&ctx, &session_ref("cfg-now"), None)
        .await
        .unwrap();
    let Outcome::Succeeded { snapshot, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let left = names(&store.list_manifests().await.unwrap());
    let mut expected = vec![snapshot, kept[0].clone()];
    expected.sort();
    assert_eq!(
        left, expected,
        "expired undo {expired:?} removed, the other kept"
    );
    let keys = s3
        .keys(&store.location.bucket, "r/snapshots/")
        .await
        .unwrap();
    assert!(!keys.iter().any(|k| k.contains("undo-old")), "{keys:?}");
}

fn names(ms: &[Manifest]) -> Vec<String> {
    let mut v: Vec<String> = ms.iter().map(|m| m.name.clone()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_exactly_what_the_rules_keep() {
    let (w, store) = setup(
        "ret",
        json!({"name": "p", "keepLast": 2, "keepDaily": 4, "prune": true}),
    )
    .await;
    let (cluster, s3) = (&w.cluster, w.s3());
    let mine = history(&store, s3, "cfg", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).await;
    let other = history(&store, s3, "other", &[20, 30]).await;
    let ctx = cluster.backup_context(None);
    let r = session_ref("cfg-now");
    let outcome = backup::run(&ctx, &r, None).await.unwrap();
    let Outcome::Succeeded { snapshot, .. } = outcome else {
        panic!("{outcome:?}")
    };
    // keepLast 2: now, day-1. keepDaily 4: now (today), day-1, day-2, day-3.
    let mut expected = vec![snapshot, mine[0].clone(), mine[1].clone(), mine[2].clone()];
    expected.extend(other.clone());
    expected.sort();
    let left = store.list_manifests().await.unwrap();
    assert_eq!(names(&left), expected);
    // The removed snapshots' objects are gone too; the kept ones' objects remain.
    let keys = s3
        .keys(&store.location.bucket, "r/snapshots/")
        .await
        .unwrap();
    assert_eq!(keys.len(), expected.len() * 2, "{keys:?}");
    let repo: Repository = cluster.api().get("repo").await.unwrap();
    let st = repo.status.unwrap();
    assert_eq!(st.snapshot_count, Some(expected.len() as i64));
    assert_eq!(st.snapshots_removed_on_last_cleanup, Some(7));
    let s = cluster.session("cfg-now").await.unwrap().status.unwrap();
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == "RetentionPolicyApplied")
        .unwrap();
    assert!(c.message.as_deref().unwrap().contains("removed 7"), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_removes_nothing() {
    let (w, store) = setup(
        "dry",
        json!({"name": "p", "keepLast": 1, "dryRun": true, "prune": true}),
    )
    .await;
    let (cluster, s3) = (&w.cluster, w.s3());
    history(&store, s3, "cfg", &[1, 2, 3]).await;
    let ctx = cluster.backup_context(None);
    let r = session_ref("cfg-now");
    assert!(matches!(
        backup::run(&ctx, &r, None).await.unwrap(),
        Outcome::Succeeded { .. }
    ));
    assert_eq!(store.list_manifests().await.unwrap().len(), 4);
    let s = cluster.session("cfg-now").await.unwrap().status.unwrap();
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == "RetentionPolicyApplied")
        .unwrap();
    assert!(
        c.message.as_deref().unwrap().contains("would remove 3"),
        "{c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_retention_fails_before_anything_is_uploaded() {
    let (w, store) = setup("neg", json!({"name": "p", "keepDaily": -3, "prune": true})).await;
    let (cluster, s3) = (&w.cluster, w.s3());
    let ctx = cluster.backup_context(None);
    let r = session_ref("cfg-now");
    let outcome = backup::run(&ctx, &r, None).await.unwrap();
    let reason = failed_reason(&outcome);
    assert!(reason.contains("keepDaily"), "{reason}");
    assert!(
        s3.keys(&store.location.bucket, "")
            .await
            .unwrap()
            .is_empty()
    );
}
