//! Retention after a real backup, over a synthetic history written into a real S3 server:
//! exactly the snapshots the restic rules keep remain, other configurations' snapshots are
//! untouched, `dryRun` removes nothing, and the Repository status counts what is left.

use chrono::{Duration, Utc};
use serde_json::json;
use stashless::api::Repository;
use stashless::archive::SnapshotMeta;
use stashless::backup;
use stashless::events::SessionRef;
use stashless::repository::{
    Invoker, Location, Manifest, ObjectId, StaticCredentials, Store, TargetId, Tuning,
};
use stashless::session::Outcome;
use stashless_tests::procs::openbao::OpenBao;
use stashless_tests::{Cluster, ConfigBuilder, NS, S3Target, init_logs};

async fn history(store: &Store, s3: &S3Target, config: &str, days: &[i64]) -> Vec<String> {
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
            duration_seconds: 0.1,
            vault_version: None,
            vault_cluster_name: None,
            raft: SnapshotMeta::default(),
            files: vec![],
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

async fn setup(tag: &str, policy: serde_json::Value) -> (Cluster, S3Target, Store, OpenBao) {
    init_logs();
    let (s3, bucket) = S3Target::garage_bucket(tag).await.unwrap();
    let store = Store::open(
        Location {
            endpoint: Some(s3.endpoint.clone()),
            region: s3.region.clone(),
            bucket: bucket.clone(),
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
    let bao = OpenBao::start().await.unwrap();
    let cluster = Cluster::start().await.unwrap();
    cluster
        .vault_binding("vault", &bao.addr, &bao.root_token)
        .await
        .unwrap();
    cluster.repository("repo", &s3, &bucket, "r").await.unwrap();
    cluster
        .backup_config(ConfigBuilder::new("cfg").retention(policy))
        .await
        .unwrap();
    cluster.new_session("cfg", "cfg-now").await.unwrap();
    (cluster, s3, store, bao)
}

fn names(ms: &[Manifest]) -> Vec<String> {
    let mut v: Vec<String> = ms.iter().map(|m| m.name.clone()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_exactly_what_the_rules_keep() {
    let (cluster, s3, store, _bao) = setup(
        "ret",
        json!({"name": "p", "keepLast": 2, "keepDaily": 4, "prune": true}),
    )
    .await;
    let mine = history(&store, &s3, "cfg", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).await;
    let other = history(&store, &s3, "other", &[20, 30]).await;
    let ctx = cluster.backup_context(None);
    let r = SessionRef {
        kind: None,
        namespace: NS.into(),
        name: "cfg-now".into(),
    };
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
    let (cluster, s3, store, _bao) = setup(
        "dry",
        json!({"name": "p", "keepLast": 1, "dryRun": true, "prune": true}),
    )
    .await;
    history(&store, &s3, "cfg", &[1, 2, 3]).await;
    let ctx = cluster.backup_context(None);
    let r = SessionRef {
        kind: None,
        namespace: NS.into(),
        name: "cfg-now".into(),
    };
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
    let (cluster, s3, store, _bao) =
        setup("neg", json!({"name": "p", "keepDaily": -3, "prune": true})).await;
    let ctx = cluster.backup_context(None);
    let r = SessionRef {
        kind: None,
        namespace: NS.into(),
        name: "cfg-now".into(),
    };
    let outcome = backup::run(&ctx, &r, None).await.unwrap();
    let Outcome::Failed { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("keepDaily"), "{reason}");
    assert!(
        s3.keys(&store.location.bucket, "")
            .await
            .unwrap()
            .is_empty()
    );
}
