//! Scheduled backup end to end: scheduler tick → BackupSession → backup function → a
//! verified snapshot in a real S3 server (Garage), taken from a real OpenBao, proven by
//! restoring it with `bao operator raft snapshot restore` and reading the old secret back.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use kube::ResourceExt;
use serde_json::json;
use stashless::api::{BackupConfiguration, SessionPhase};
use stashless::backup;
use stashless::events::{SessionRef, Tick};
use stashless::scheduler::{SchedulerSettings, tick};
use stashless::session::Outcome;
use stashless_tests::faults::{Fault, Proxy};
use stashless_tests::procs::openbao::{BaoCluster, OpenBao};
use stashless_tests::procs::pushgateway::Pushgateway;
use stashless_tests::{
    Cluster, ConfigBuilder, NS, S3Target, World, failed_reason, init_logs, session_ref,
};

/// Every test ends with: nothing Running, no incomplete uploads.
async fn assert_clean(cluster: &Cluster, s3: &S3Target, bucket: &str) {
    for s in cluster.sessions().await.unwrap() {
        let phase = s.status.as_ref().and_then(|st| st.phase);
        assert_ne!(
            phase,
            Some(SessionPhase::Running),
            "session left Running: {:?}",
            s.metadata.name
        );
    }
    assert_eq!(
        s3.open_uploads(bucket).await.unwrap(),
        0,
        "incomplete multipart uploads left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_backup_and_restore_brings_back_the_old_secret() {
    let w = World::builder("e2e")
        .openbao()
        .app_binding()
        .repository("/team-a/vault/")
        .backup_configuration(ConfigBuilder::new("nightly").schedule("*/5 * * * *"))
        .build()
        .await;
    let (cluster, s3, bucket, bao) = (&w.cluster, w.s3(), w.bucket(), w.bao());
    let pgw = Pushgateway::shared().await.unwrap();
    bao.kv_put("app/db", json!({"password": "before-backup"}))
        .await
        .unwrap();
    bao.seed(200, 256).await.unwrap();

    // The tick at 10:02 finds the 10:00 slot due and creates one session.
    let now = Utc.with_ymd_and_hms(2099, 1, 1, 10, 2, 0).unwrap();
    // The config was just created (real clock); use a tick in the future so the slot is after it.
    let t = Tick { time: Some(now) };
    let report = tick(&cluster.client, &t, &SchedulerSettings::default())
        .await
        .unwrap();
    let slot = Utc.with_ymd_and_hms(2099, 1, 1, 10, 0, 0).unwrap();
    let name = format!("nightly-{}", slot.timestamp());
    assert_eq!(report.created, vec![format!("{NS}/{name}")]);
    // A retried tick creates nothing new.
    let again = tick(&cluster.client, &t, &SchedulerSettings::default())
        .await
        .unwrap();
    assert!(again.created.is_empty());
    assert_eq!(again.existing, vec![format!("{NS}/{name}")]);

    let s = cluster.session(&name).await.unwrap();
    assert_eq!(s.labels()["stash.appscode.com/invoker-name"], "nightly");
    assert_eq!(s.spec.invoker.kind, "BackupConfiguration");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("BackupConfiguration", "nightly")
    );

    let ctx = cluster.backup_context(Some(pgw.url.clone()));
    let outcome = backup::run(&ctx, &session_ref(&name), None).await.unwrap();
    let Outcome::Succeeded { snapshot, size, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(size > 1000, "snapshot of {size} bytes");

    // Status as Stash writes it, and nothing a real API server would prune.
    let s = cluster.session(&name).await.unwrap();
    let st = s.status.clone().unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Succeeded));
    assert!(st.session_duration.is_some());
    let snap = &st.targets[0].stats[0].snapshots[0];
    assert_eq!(snap.name.as_deref(), Some(snapshot.as_str()));
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "RetentionPolicyApplied" && c.status == "True")
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "MetricsPushed" && c.status == "True"),
        "{:?}",
        st.conditions
    );
    let v = cluster.schema_violations("backupsessions", &name).await;
    assert!(
        v.is_empty(),
        "BackupSession status fields Stash's CRD lacks: {v:?}"
    );
    let repo = cluster
        .api::<stashless::api::Repository>()
        .get("repo")
        .await
        .unwrap();
    let rs = repo.status.clone().unwrap();
    assert_eq!(rs.snapshot_count, Some(1));
    assert_eq!(rs.integrity, Some(true));
    assert!(rs.last_backup_time.is_some() && rs.first_backup_time.is_some());
    let v = cluster.schema_violations("repositories", "repo").await;
    assert!(
        v.is_empty(),
        "Repository status fields Stash's CRD lacks: {v:?}"
    );

    // The object and its manifest are under the prefix, and the manifest says what it holds.
    let keys = s3.keys(bucket, "team-a/vault/snapshots/").await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let manifest: serde_json::Value = serde_json::from_slice(
        &s3.get(bucket, &format!("team-a/vault/snapshots/{snapshot}.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["size"], size);
    assert!(manifest["raft"]["index"].as_u64().unwrap() > 0);
    assert_eq!(manifest["invoker"]["name"], "nightly");
    let body = s3
        .get(bucket, &format!("team-a/vault/snapshots/{snapshot}.snap"))
        .await
        .unwrap();
    assert_eq!(body.len() as u64, size);

    // Metrics reached the Pushgateway.
    let text = pgw.metrics_text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("stash_backup_session_success{")
                && l.contains("invoker_name=\"nightly\"")
                && l.ends_with(" 1")),
        "{text}"
    );

    // Change the secret, restore the stored object with the real CLI: the old value is back.
    bao.kv_put("app/db", json!({"password": "after-backup"}))
        .await
        .unwrap();
    assert_eq!(
        bao.kv_get("app/db").await.unwrap().unwrap()["password"],
        "after-backup"
    );
    let file = std::env::temp_dir().join(format!("stashless-restore-{}.snap", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    bao.cli(&[
        "operator",
        "raft",
        "snapshot",
        "restore",
        "-force",
        file.to_str().unwrap(),
    ])
    .await
    .unwrap();
    std::fs::remove_file(&file).ok();
    assert_eq!(
        bao.kv_get("app/db").await.unwrap().unwrap()["password"],
        "before-backup"
    );
    assert_clean(cluster, s3, bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_through_a_standby_reads_from_the_active_node() {
    init_logs();
    let bao = BaoCluster::start(3).await.unwrap();
    let leader = bao.leader_index().await.unwrap();
    let standby = bao.standby();
    assert_ne!(standby.addr, bao.nodes[leader].addr);
    let w = World::builder("standby")
        .app_binding_to(&standby.addr, &standby.root_token)
        .backup_to("")
        .build()
        .await;
    let (cluster, s3, bucket) = (&w.cluster, w.s3(), w.bucket());
    cluster.new_session("cfg", "cfg-1").await.unwrap();
    let ctx = cluster.backup_context(None);
    let outcome = backup::run(&ctx, &session_ref("cfg-1"), None)
        .await
        .unwrap();
    let Outcome::Succeeded { snapshot, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &s3.get(bucket, &format!("snapshots/{snapshot}.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["target"]["address"],
        bao.nodes[leader].addr.as_str()
    );
    assert_clean(cluster, s3, bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivery_three_times_yields_one_snapshot() {
    let w = World::standard("dup", "p").await;
    let (cluster, s3, bucket) = (&w.cluster, w.s3(), w.bucket());
    cluster.new_session("cfg", "cfg-1").await.unwrap();
    let ctx = cluster.backup_context(None);
    let r = session_ref("cfg-1");
    let (a, b, c) = tokio::join!(
        backup::run(&ctx, &r, None),
        backup::run(&ctx, &r, None),
        backup::run(&ctx, &r, None)
    );
    let outcomes = [a.unwrap(), b.unwrap(), c.unwrap()];
    let succeeded = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Succeeded { .. }))
        .count();
    let not_claimed = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::NotClaimed { .. }))
        .count();
    assert_eq!((succeeded, not_claimed), (1, 2), "{outcomes:?}");
    let keys = s3.keys(bucket, "p/snapshots/").await.unwrap();
    assert_eq!(keys.len(), 2, "one snapshot and one manifest: {keys:?}");
    assert_eq!(
        cluster
            .session("cfg-1")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(SessionPhase::Succeeded)
    );
    // A late fourth delivery does nothing either.
    assert!(matches!(
        backup::run(&ctx, &r, None).await.unwrap(),
        Outcome::NotClaimed { .. }
    ));
    assert_clean(cluster, s3, bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_of_a_running_config_is_skipped() {
    let w = World::standard("skip", "").await;
    let (cluster, s3, bucket) = (&w.cluster, w.s3(), w.bucket());
    let first = cluster.new_session("cfg", "cfg-1").await.unwrap();
    // cfg-1 is Running (claimed by an invocation that is still working).
    let deadline = Utc::now() + chrono::Duration::minutes(10);
    let stashless::session::Claim::Claimed(_) =
        stashless::session::claim(&cluster.api(), &first, deadline)
            .await
            .unwrap()
    else {
        panic!("claim")
    };
    cluster.new_session("cfg", "cfg-2").await.unwrap();
    let outcome = backup::run(&cluster.backup_context(None), &session_ref("cfg-2"), None)
        .await
        .unwrap();
    let Outcome::Skipped { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("cfg-1"), "{reason}");
    let st = cluster.session("cfg-2").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Skipped));
    assert!(st.conditions.iter().any(|c| c.type_ == "BackupSkipped"));
    assert!(s3.keys(bucket, "").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_paused_schedules_do_not_stop_the_others() {
    init_logs();
    let cluster = Cluster::start().await.unwrap();
    cluster
        .backup_config(ConfigBuilder::new("good").schedule("0 * * * *"))
        .await
        .unwrap();
    cluster
        .backup_config(ConfigBuilder::new("bad").schedule("0 25 * * *"))
        .await
        .unwrap();
    cluster
        .backup_config(ConfigBuilder::new("short").schedule("* * *"))
        .await
        .unwrap();
    cluster
        .backup_config(ConfigBuilder::new("resting").schedule("0 * * * *").paused())
        .await
        .unwrap();
    cluster
        .backup_config(ConfigBuilder::new("berlin").schedule("CRON_TZ=Europe/Berlin 0 11 * * *"))
        .await
        .unwrap();
    let mut snapshotter = ConfigBuilder::new("snapshotter")
        .schedule("0 * * * *")
        .build();
    snapshotter["spec"]["driver"] = json!("VolumeSnapshotter");
    cluster
        .create::<BackupConfiguration>(snapshotter)
        .await
        .unwrap();
    // 10:00 UTC on a winter day is 11:00 in Berlin: both "good" and "berlin" are due.
    let t = Tick {
        time: Some(Utc.with_ymd_and_hms(2099, 1, 5, 10, 0, 30).unwrap()),
    };
    let report = tick(&cluster.client, &t, &SchedulerSettings::default())
        .await
        .unwrap();
    let mut created = report.created.clone();
    created.sort();
    let slot = Utc
        .with_ymd_and_hms(2099, 1, 5, 10, 0, 0)
        .unwrap()
        .timestamp();
    assert_eq!(
        created,
        vec![format!("vault/berlin-{slot}"), format!("vault/good-{slot}")]
    );
    assert_eq!(report.paused, vec!["vault/resting".to_string()]);
    assert_eq!(report.invalid.len(), 3, "{:?}", report.invalid);
    assert!(
        report.invalid["vault/snapshotter"]
            .contains("driver \"VolumeSnapshotter\" is not supported"),
        "{:?}",
        report.invalid
    );
    let bad: BackupConfiguration = cluster.api().get("bad").await.unwrap();
    let st = bad.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Invalid"));
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "ValidationPassed")
        .unwrap();
    assert_eq!(c.status, "False");
    assert!(
        c.message.as_deref().unwrap().contains("0 25 * * *"),
        "{c:?}"
    );
    let short: BackupConfiguration = cluster.api().get("short").await.unwrap();
    assert!(
        short.status.unwrap().conditions[0]
            .message
            .as_deref()
            .unwrap()
            .contains("3 fields")
    );
    let good: BackupConfiguration = cluster.api().get("good").await.unwrap();
    assert_eq!(good.status.unwrap().phase.as_deref(), Some("Ready"));
    let v = cluster
        .schema_violations("backupconfigurations", "bad")
        .await;
    assert!(v.is_empty(), "{v:?}");
    // Missed slots: three hours late, only the latest slot would run, and it is past the deadline.
    let late = Tick {
        time: Some(Utc.with_ymd_and_hms(2099, 1, 5, 13, 30, 0).unwrap()),
    };
    let r = tick(&cluster.client, &late, &SchedulerSettings::default())
        .await
        .unwrap();
    assert!(r.created.is_empty(), "{:?}", r.created);
}

/// One failure scenario (a world without a BackupConfiguration): create `cfg`, run it, and
/// check the session failed with `expect` in its reason, with no object and no incomplete
/// upload left behind.
async fn expect_failure(f: &World, expect: &[&str]) -> String {
    f.cluster
        .backup_config(ConfigBuilder::new("cfg"))
        .await
        .unwrap();
    let outcome = f.backup("cfg-1").await;
    let reason = failed_reason(&outcome);
    for e in expect {
        assert!(
            reason.to_lowercase().contains(&e.to_lowercase()),
            "reason {reason:?} lacks {e:?}"
        );
    }
    let s = f.cluster.session("cfg-1").await.unwrap();
    let st = s.status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Failed));
    assert_eq!(
        st.targets[0].stats[0].error.as_deref(),
        Some(reason.as_str())
    );
    let v = f.cluster.schema_violations("backupsessions", "cfg-1").await;
    assert!(v.is_empty(), "{v:?}");
    if f.s3()
        .client()
        .head_bucket()
        .bucket(f.bucket())
        .send()
        .await
        .is_ok()
    {
        assert!(
            f.s3().keys(f.bucket(), "").await.unwrap().is_empty(),
            "objects left behind"
        );
        assert_clean(&f.cluster, f.s3(), f.bucket()).await;
    }
    assert!(
        !reason.contains("hvs.") && !reason.contains("s.root"),
        "a token leaked into the reason: {reason}"
    );
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_readably_when_vault_is_sealed() {
    let f = World::builder("sealed")
        .openbao()
        .app_binding()
        .repository("")
        .build()
        .await;
    f.bao().seal().await.unwrap();
    expect_failure(&f, &["sealed"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_readably_when_the_token_is_refused() {
    let f = World::builder("token")
        .openbao()
        .repository("")
        .build()
        .await;
    let weak = f.bao().create_token(&["default"]).await.unwrap();
    f.cluster
        .vault_binding("vault", &f.bao().addr, &weak)
        .await
        .unwrap();
    let reason = expect_failure(&f, &["permission denied", "403"]).await;
    assert!(!reason.contains(&weak));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_readably_when_vault_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = World::builder("unreach")
        .app_binding_to(&format!("http://127.0.0.1:{port}"), "s.x")
        .repository("")
        .build()
        .await;
    expect_failure(&f, &["cannot connect", &format!("127.0.0.1:{port}")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_and_aborts_when_the_stream_is_cut_mid_snapshot() {
    let bao = OpenBao::start().await.unwrap();
    bao.seed(300, 1024).await.unwrap();
    let upstream = bao.addr.trim_start_matches("http://").to_string();
    let proxy = Proxy::start(&upstream, Fault::CutAfter(150 * 1024))
        .await
        .unwrap();
    let f = World::builder("cut")
        .app_binding_to(&proxy.addr, &bao.root_token)
        .repository("")
        .build()
        .await;
    let reason = expect_failure(&f, &[]).await;
    assert!(proxy.cuts() >= 1, "the proxy never cut the stream");
    assert!(
        reason.contains("truncated")
            || reason.contains("stream broke")
            || reason.contains("ended early"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_readably_when_the_bucket_is_missing() {
    let f = World::builder("nobucket")
        .openbao()
        .app_binding()
        .s3()
        .build()
        .await;
    f.cluster
        .repository("repo", f.s3(), "no-such-bucket-here", "")
        .await
        .unwrap();
    expect_failure(&f, &["no-such-bucket-here"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_readably_with_wrong_s3_credentials() {
    let f = World::builder("creds")
        .openbao()
        .app_binding()
        .s3()
        .build()
        .await;
    let wrong = S3Target {
        secret_key: "0".repeat(64),
        ..f.s3().clone()
    };
    f.cluster
        .repository("repo", &wrong, f.bucket(), "")
        .await
        .unwrap();
    let reason = expect_failure(&f, &["AWS_SECRET_ACCESS_KEY"]).await;
    assert!(!reason.contains(&"0".repeat(64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_readably_when_objects_are_missing() {
    // AppBinding missing.
    let f = World::builder("noab").repository("").build().await;
    expect_failure(&f, &["AppBinding vault/vault not found"]).await;
    // Repository missing.
    let f = World::builder("norepo")
        .s3()
        .app_binding_to("http://127.0.0.1:1", "x")
        .build()
        .await;
    expect_failure(&f, &["Repository vault/repo not found"]).await;
    // Token Secret missing.
    let f = World::builder("nosecret").repository("").build().await;
    f.cluster
        .create::<stashless::api::AppBinding>(json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": "vault"},
            "spec": {"clientConfig": {"url": "http://127.0.0.1:1"}, "secret": {"kind": "Secret", "name": "gone"}}
        }))
        .await
        .unwrap();
    expect_failure(&f, &["Secret vault/gone not found"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_stale_events_are_refused_quietly() {
    init_logs();
    let cluster = Cluster::start().await.unwrap();
    for bad in [
        json!({}),
        json!({"namespace": "vault"}),
        json!({"namespace": "vault", "name": "A/B"}),
        json!("x"),
    ] {
        let e = SessionRef::from_event(&bad, "BackupSession").unwrap_err();
        assert!(!e.is_retryable(), "{e}");
    }
    // A session that does not exist (deleted before delivery) is not an error.
    let outcome = backup::run(
        &cluster.backup_context(None),
        &session_ref("never-existed"),
        None,
    )
    .await
    .unwrap();
    assert!(matches!(outcome, Outcome::NotClaimed { .. }));
    // A session Stash created whose BackupConfiguration is gone is not ours: untouched.
    let stash = cluster.new_session("vanished", "stash-1").await.unwrap();
    let outcome = backup::run(&cluster.backup_context(None), &session_ref("stash-1"), None)
        .await
        .unwrap();
    assert!(
        matches!(&outcome, Outcome::NotClaimed { why } if why.contains("not one stashless created")),
        "{outcome:?}"
    );
    assert_eq!(
        cluster.session("stash-1").await.unwrap().resource_version(),
        stash.resource_version()
    );
    // One stashless created whose BackupConfiguration is gone fails with that reason.
    cluster
        .new_stashless_session("vanished", "vanished-1")
        .await
        .unwrap();
    let outcome = backup::run(
        &cluster.backup_context(None),
        &session_ref("vanished-1"),
        None,
    )
    .await
    .unwrap();
    assert!(failed_reason(&outcome).contains("BackupConfiguration vault/vanished not found"));
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_past_a_three_second_deadline_fails_and_aborts() {
    let bao = OpenBao::start().await.unwrap();
    bao.seed(100, 4096).await.unwrap();
    let upstream = bao.addr.trim_start_matches("http://").to_string();
    // 64 KiB/s: the snapshot needs far longer than the 3 s the configuration allows.
    let proxy = Proxy::start(&upstream, Fault::Throttle(64 * 1024))
        .await
        .unwrap();
    let f = World::builder("slow")
        .app_binding_to(&proxy.addr, &bao.root_token)
        .repository("")
        .backup_configuration(ConfigBuilder::new("cfg").time_out("3s"))
        .build()
        .await;
    f.cluster.new_session("cfg", "cfg-1").await.unwrap();
    let started = std::time::Instant::now();
    let outcome = backup::run(&f.ctx(), &session_ref("cfg-1"), None)
        .await
        .unwrap();
    let reason = failed_reason(&outcome);
    assert!(reason.starts_with("deadline exceeded"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let st = f.cluster.session("cfg-1").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Failed));
    assert!(st.conditions.iter().any(|c| c.type_ == "DeadlineExceeded"));
    assert_eq!(
        f.s3().open_uploads(f.bucket()).await.unwrap(),
        0,
        "incomplete multipart upload left"
    );
    assert!(f.s3().keys(f.bucket(), "").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_events_are_harmless() {
    let w = World::standard("order", "").await;
    let (cluster, s3, bucket) = (&w.cluster, w.s3(), w.bucket());
    cluster.new_session("cfg", "cfg-1").await.unwrap();
    let envelope = |change: &str, name: &str| {
        json!({"version": "0", "id": "1", "detail-type": format!("BackupSession {change}"), "source": "stashless.bridge",
               "account": "1", "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
               "detail": {"kind": "BackupSession", "namespace": NS, "name": name, "change": change}})
    };
    let ctx = cluster.backup_context(None);
    // A "Deleted" event arriving first: the function reads the object, which exists and is Pending.
    let first = SessionRef::from_event(&envelope("Deleted", "cfg-1"), "BackupSession").unwrap();
    assert!(matches!(
        backup::run(&ctx, &first, None).await.unwrap(),
        Outcome::Succeeded { .. }
    ));
    // The "Added" event arriving late is a no-op.
    let late = SessionRef::from_event(&envelope("Added", "cfg-1"), "BackupSession").unwrap();
    assert!(matches!(
        backup::run(&ctx, &late, None).await.unwrap(),
        Outcome::NotClaimed { .. }
    ));
    // An event for a session deleted in between is a no-op too.
    let gone = SessionRef::from_event(&envelope("Added", "cfg-deleted"), "BackupSession").unwrap();
    assert!(matches!(
        backup::run(&ctx, &gone, None).await.unwrap(),
        Outcome::NotClaimed { .. }
    ));
    assert_eq!(s3.keys(bucket, "snapshots/").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_during_a_restore_of_the_same_vault_is_skipped() {
    let w = World::standard("duringrestore", "").await;
    let (cluster, s3, bucket, bao) = (&w.cluster, w.s3(), w.bucket(), w.bao());
    cluster
        .vault_binding("other", &bao.addr, &bao.root_token)
        .await
        .unwrap();
    // A restore of another AppBinding does not block the backup …
    let elsewhere = cluster
        .new_restore("rs-other", "repo", "other", None, false)
        .await
        .unwrap();
    let deadline = Utc::now() + chrono::Duration::minutes(10);
    let stashless::session::Claim::Claimed(_) =
        stashless::session::claim(&cluster.api(), &elsewhere, deadline)
            .await
            .unwrap()
    else {
        panic!("claim")
    };
    cluster.new_session("cfg", "cfg-1").await.unwrap();
    let ctx = cluster.backup_context(None);
    assert!(matches!(
        backup::run(&ctx, &session_ref("cfg-1"), None)
            .await
            .unwrap(),
        Outcome::Succeeded { .. }
    ));
    // … a Running restore of this configuration's AppBinding does.
    let rs = cluster
        .new_restore("rs-same", "repo", "vault", None, false)
        .await
        .unwrap();
    let stashless::session::Claim::Claimed(_) =
        stashless::session::claim(&cluster.api(), &rs, deadline)
            .await
            .unwrap()
    else {
        panic!("claim")
    };
    cluster.new_session("cfg", "cfg-2").await.unwrap();
    let outcome = backup::run(&ctx, &session_ref("cfg-2"), None)
        .await
        .unwrap();
    let Outcome::Skipped { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("RestoreSession vault/rs-same"), "{reason}");
    assert_eq!(
        cluster
            .session("cfg-2")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(SessionPhase::Skipped)
    );
    assert_eq!(
        s3.keys(bucket, "snapshots/").await.unwrap().len(),
        2,
        "only cfg-1's snapshot and manifest"
    );
}

/// An AppBinding naming a Service (as KubeVault writes them) from outside cluster DNS, as a
/// Lambda in the VPC is: `vault.vault.svc` does not resolve here, so the backup fails until
/// an EndpointSlice gives the Service a ready address; then the name is pinned to it and the
/// same session's retry succeeds. In-memory server only: kube-apiserver 1.20 serves
/// EndpointSlices as v1beta1, EKS (1.21+) as the v1 read here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reference_is_reached_through_its_endpointslice() {
    let bao = OpenBao::start().await.unwrap();
    let port: u16 = bao.addr.rsplit(':').next().unwrap().parse().unwrap();
    let w = World::builder("svc")
        .memory()
        .app_binding_with(
            json!({"service": {"scheme": "http", "name": "vault", "port": port}}),
            &bao.root_token,
        )
        .backup_to("svc")
        .build()
        .await;
    let (cluster, s3, bucket) = (&w.cluster, w.s3(), w.bucket());
    let ctx = w.ctx();

    cluster.new_session("cfg", "cfg-1").await.unwrap();
    let reason = failed_reason(
        &backup::run(&ctx, &session_ref("cfg-1"), None)
            .await
            .unwrap(),
    );
    assert!(reason.contains("vault.vault.svc"), "{reason}");

    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "vault-x7k2p", "namespace": NS, "labels": {"kubernetes.io/service-name": "vault"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["127.0.0.1"], "conditions": {"ready": true}, "hostname": "vault-0"},
            {"addresses": ["10.255.255.1"], "conditions": {"ready": false}, "hostname": "vault-1"},
        ],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    });
    cluster
        .mem()
        .insert("discovery.k8s.io", "endpointslices", slice)
        .unwrap();
    cluster.new_session("cfg", "cfg-2").await.unwrap();
    let outcome = backup::run(&ctx, &session_ref("cfg-2"), None)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    assert_clean(cluster, s3, bucket).await;
}
