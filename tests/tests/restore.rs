//! Restore end to end: RestoreSession → restore function → snapshot from a real S3 server,
//! verified in flight → real OpenBao. Every failure leaves Vault's data as it was.

use serde_json::json;
use stashless::api::SessionPhase;
use stashless::restore;
use stashless::session::Outcome;
use stashless_tests::procs::openbao::{BaoCluster, OpenBao};
use stashless_tests::procs::pushgateway::Pushgateway;
use stashless_tests::{World, failed_reason, session_ref};

/// Repository `repo` under `vault` on a fresh bucket, BackupConfiguration `cfg`, AppBinding
/// `vault` on this Vault.
async fn world(tag: &str, vault_addr: &str, token: &str) -> World {
    World::builder(tag)
        .app_binding_to(vault_addr, token)
        .backup_to("vault")
        .build()
        .await
}

async fn assert_failed_cleanly(w: &World, name: &str, o: &Outcome, expect: &str) {
    let why = failed_reason(o);
    assert!(
        why.to_lowercase().contains(&expect.to_lowercase()),
        "reason {why:?} lacks {expect:?}"
    );
    let st = w
        .cluster
        .restore_session(name)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Failed));
    assert_eq!(st.stats[0].error.as_deref(), Some(why.as_str()));
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "RestoreCompleted")
        .unwrap();
    assert_eq!(c.status, "False");
    let v = w.cluster.schema_violations("restoresessions", name).await;
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_latest_brings_back_changed_and_deleted_secrets() {
    let bao = OpenBao::start().await.unwrap();
    let w = world("latest", &bao.addr, &bao.root_token).await;
    let pgw = Pushgateway::shared().await.unwrap();
    for i in 0..20 {
        bao.kv_put(&format!("apps/s{i}"), json!({"v": format!("orig-{i}")}))
            .await
            .unwrap();
    }
    let ctx = w.cluster.backup_context(Some(pgw.url.clone()));
    w.cluster.backup_now(&ctx, "cfg", "cfg-1").await.unwrap();
    for i in 0..10 {
        bao.kv_put(&format!("apps/s{i}"), json!({"v": "changed"}))
            .await
            .unwrap();
    }
    for i in 10..20 {
        bao.kv_delete(&format!("apps/s{i}")).await.unwrap();
    }
    bao.kv_put("apps/new-after-backup", json!({"v": "x"}))
        .await
        .unwrap();

    w.cluster
        .new_restore("restore-latest", "repo", "vault", None, false)
        .await
        .unwrap();
    let o = restore::run(&ctx, &session_ref("restore-latest"), None)
        .await
        .unwrap();
    let Outcome::Succeeded { sealed_after, .. } = o else {
        panic!("{o:?}")
    };
    assert!(!sealed_after);
    for i in 0..20 {
        let v = bao
            .kv_get(&format!("apps/s{i}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("s{i} missing"));
        assert_eq!(v["v"], format!("orig-{i}"));
    }
    assert!(bao.kv_get("apps/new-after-backup").await.unwrap().is_none());

    let st = w
        .cluster
        .restore_session("restore-latest")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Succeeded));
    assert!(st.session_duration.is_some());
    assert_eq!(st.stats[0].phase.as_deref(), Some("Succeeded"));
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "RestoreCompleted" && c.status == "True")
    );
    let v = w
        .cluster
        .schema_violations("restoresessions", "restore-latest")
        .await;
    assert!(v.is_empty(), "{v:?}");
    let text = pgw.metrics_text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("stash_restore_session_success{")
                && l.contains("restore-latest")
                && l.ends_with(" 1")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_a_named_older_snapshot() {
    let bao = OpenBao::start().await.unwrap();
    let w = world("named", &bao.addr, &bao.root_token).await;
    let ctx = w.cluster.backup_context(None);
    bao.kv_put("app/cfg", json!({"gen": "one"})).await.unwrap();
    let first = w.cluster.backup_now(&ctx, "cfg", "cfg-1").await.unwrap();
    bao.kv_put("app/cfg", json!({"gen": "two"})).await.unwrap();
    w.cluster.backup_now(&ctx, "cfg", "cfg-2").await.unwrap();
    bao.kv_put("app/cfg", json!({"gen": "three"}))
        .await
        .unwrap();

    w.cluster
        .new_restore("restore-old", "repo", "vault", Some(&first), false)
        .await
        .unwrap();
    let o = w.run_restore("restore-old").await;
    assert!(
        matches!(o, Outcome::Succeeded { ref snapshot, .. } if *snapshot == first),
        "{o:?}"
    );
    assert_eq!(bao.kv_get("app/cfg").await.unwrap().unwrap()["gen"], "one");

    // The bare session name works too when it is unambiguous; `latest` picks cfg-2.
    w.cluster
        .new_restore("restore-latest", "repo", "vault", Some("latest"), false)
        .await
        .unwrap();
    assert!(matches!(
        w.run_restore("restore-latest").await,
        Outcome::Succeeded { .. }
    ));
    assert_eq!(bao.kv_get("app/cfg").await.unwrap().unwrap()["gen"], "two");
    w.cluster
        .new_restore("restore-bare", "repo", "vault", Some("cfg-1"), false)
        .await
        .unwrap();
    assert!(matches!(
        w.run_restore("restore-bare").await,
        Outcome::Succeeded { .. }
    ));
    assert_eq!(bao.kv_get("app/cfg").await.unwrap().unwrap()["gen"], "one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_through_a_standby_goes_to_the_active_node() {
    let bao = BaoCluster::start(3).await.unwrap();
    let leader = bao.leader_index().await.unwrap();
    let active = &bao.nodes[leader];
    let standby = bao.standby();
    let w = world("standby", &standby.addr, &standby.root_token).await;
    active
        .kv_put("app/x", json!({"v": "backed-up"}))
        .await
        .unwrap();
    let ctx = w.cluster.backup_context(None);
    w.cluster.backup_now(&ctx, "cfg", "cfg-1").await.unwrap();
    active
        .kv_put("app/x", json!({"v": "changed"}))
        .await
        .unwrap();
    w.cluster
        .new_restore("rs", "repo", "vault", None, false)
        .await
        .unwrap();
    let o = w.run_restore("rs").await;
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    let leader = bao.leader_index().await.unwrap();
    assert_eq!(
        bao.nodes[leader].kv_get("app/x").await.unwrap().unwrap()["v"],
        "backed-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_restore_into_a_fresh_server_reports_its_seal_state() {
    let source = OpenBao::start().await.unwrap();
    let w = world("force", &source.addr, &source.root_token).await;
    source
        .kv_put("app/migrated", json!({"v": "from-source"}))
        .await
        .unwrap();
    let ctx = w.cluster.backup_context(None);
    let snapshot = w.cluster.backup_now(&ctx, "cfg", "cfg-1").await.unwrap();

    // A second, freshly initialised server with its own keys. Another Vault's snapshot is
    // only restored when named (`latest` takes the target's own snapshots only).
    let fresh = OpenBao::start().await.unwrap();
    w.cluster
        .vault_binding("fresh", &fresh.addr, &fresh.root_token)
        .await
        .unwrap();
    w.cluster
        .new_restore("rs", "repo", "fresh", Some(&snapshot), true)
        .await
        .unwrap();
    let o = w.run_restore("rs").await;
    let Outcome::Succeeded { sealed_after, .. } = o else {
        panic!("{o:?}")
    };
    let health = fresh.health().await.unwrap();
    assert_eq!(
        sealed_after,
        health["sealed"].as_bool().unwrap(),
        "status disagrees with Vault: {health}"
    );
    let st = w
        .cluster
        .restore_session("rs")
        .await
        .unwrap()
        .status
        .unwrap();
    let msg = st
        .conditions
        .iter()
        .find(|c| c.type_ == "RestoreCompleted")
        .unwrap()
        .message
        .clone()
        .unwrap();
    if sealed_after {
        assert!(msg.contains("SEALED") && msg.contains("unseal"), "{msg}");
        // With the source cluster's key the restored data is there.
        fresh.unseal_with(&source.unseal_key).await.unwrap();
    }
    let v = fresh
        .kv_get_with_token("app/migrated", &source.root_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["v"], "from-source");
}

/// Rewrite the stored snapshot and (optionally) its manifest, then restore it: must fail
/// with `expect` in the reason and leave Vault's data unchanged.
async fn tampered(
    tag: &str,
    tamper: impl Fn(&mut Vec<u8>),
    fix_manifest: impl Fn(&mut serde_json::Value, &[u8], Option<String>),
    expect: &str,
) {
    let bao = OpenBao::start().await.unwrap();
    let w = world(tag, &bao.addr, &bao.root_token).await;
    bao.seed(100, 512).await.unwrap();
    bao.kv_put("app/x", json!({"v": "old"})).await.unwrap();
    let ctx = w.cluster.backup_context(None);
    let snap = w.cluster.backup_now(&ctx, "cfg", "cfg-1").await.unwrap();
    bao.kv_put("app/x", json!({"v": "current"})).await.unwrap();

    let (obj_key, man_key) = (
        format!("vault/snapshots/{snap}.snap"),
        format!("vault/snapshots/{snap}.json"),
    );
    let mut body = w.s3().get(w.bucket(), &obj_key).await.unwrap();
    tamper(&mut body);
    let put = w
        .s3()
        .client()
        .put_object()
        .bucket(w.bucket())
        .key(&obj_key)
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&w.s3().get(w.bucket(), &man_key).await.unwrap()).unwrap();
    fix_manifest(&mut manifest, &body, put.e_tag);
    w.s3()
        .client()
        .put_object()
        .bucket(w.bucket())
        .key(&man_key)
        .body(serde_json::to_vec(&manifest).unwrap().into())
        .send()
        .await
        .unwrap();

    w.cluster
        .new_restore("rs", "repo", "vault", None, false)
        .await
        .unwrap();
    let o = w.run_restore("rs").await;
    assert_failed_cleanly(&w, "rs", &o, expect).await;
    assert_eq!(
        bao.kv_get("app/x").await.unwrap().unwrap()["v"],
        "current",
        "Vault's data changed"
    );
}

fn same_size_new_etag(m: &mut serde_json::Value, _body: &[u8], etag: Option<String>) {
    m["etag"] = json!(etag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_object_is_refused_before_anything_is_sent() {
    tampered(
        "replaced",
        |b| {
            let n = b.len() / 2;
            b[n] ^= 0xff;
        },
        |_, _, _| {},
        "replaced after the backup",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_cut_off_in_flight() {
    tampered(
        "corrupt",
        |b| {
            let n = b.len() / 2;
            for byte in &mut b[n..n + 16] {
                *byte ^= 0x5a;
            }
        },
        same_size_new_etag,
        "verification failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_object_is_cut_off_in_flight() {
    tampered(
        "trunc",
        |b| b.truncate(b.len() * 2 / 3),
        |m, body, etag| {
            m["size"] = json!(body.len());
            m["etag"] = json!(etag);
        },
        "truncated",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_with_the_manifest_is_never_applied() {
    // The archive itself is intact; only the manifest's sha256 disagrees. The whole body
    // but the last chunk reaches Vault before the mismatch is known: it must still not apply.
    tampered(
        "sum",
        |_| {},
        |m, _, etag| {
            m["sha256"] = json!("ab".repeat(32));
            m["etag"] = json!(etag);
        },
        "does not match its manifest",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_names_empty_repositories_and_overlaps_fail_with_reasons() {
    let bao = OpenBao::start().await.unwrap();
    let w = world("edge", &bao.addr, &bao.root_token).await;
    // Empty repository.
    w.cluster
        .new_restore("rs-empty", "repo", "vault", None, false)
        .await
        .unwrap();
    let o = w.run_restore("rs-empty").await;
    assert_failed_cleanly(&w, "rs-empty", &o, "holds no snapshots").await;

    let ctx = w.cluster.backup_context(None);
    bao.kv_put("app/x", json!({"v": "old"})).await.unwrap();
    w.cluster.backup_now(&ctx, "cfg", "cfg-1").await.unwrap();
    bao.kv_put("app/x", json!({"v": "current"})).await.unwrap();

    // A snapshot name that does not exist.
    w.cluster
        .new_restore("rs-missing", "repo", "vault", Some("vault/nope-123"), false)
        .await
        .unwrap();
    let o = w.run_restore("rs-missing").await;
    assert_failed_cleanly(
        &w,
        "rs-missing",
        &o,
        "\"vault/nope-123\" is not in the Repository",
    )
    .await;

    // A backup of the same target is Running.
    let running = w.cluster.new_session("cfg", "cfg-2").await.unwrap();
    let stashless::session::Claim::Claimed(_) = stashless::session::claim(
        &w.cluster.api(),
        &running,
        chrono::Utc::now() + chrono::Duration::minutes(5),
    )
    .await
    .unwrap() else {
        panic!("claim")
    };
    w.cluster
        .new_restore("rs-during-backup", "repo", "vault", None, false)
        .await
        .unwrap();
    let o = w.run_restore("rs-during-backup").await;
    assert_failed_cleanly(
        &w,
        "rs-during-backup",
        &o,
        "BackupSession cfg-2 is backing up",
    )
    .await;
    assert_eq!(bao.kv_get("app/x").await.unwrap().unwrap()["v"], "current");
    stashless::session::patch_status(
        &w.cluster.api::<stashless::api::BackupSession>(),
        "cfg-2",
        &json!({"phase": "Failed"}),
    )
    .await
    .unwrap();

    // Duplicate delivery ×3: exactly one restore runs.
    w.cluster
        .new_restore("rs-dup", "repo", "vault", None, false)
        .await
        .unwrap();
    let ctx2 = w.cluster.backup_context(None);
    let rr = session_ref("rs-dup");
    let (a, b, c) = tokio::join!(
        restore::run(&ctx2, &rr, None),
        restore::run(&ctx2, &rr, None),
        restore::run(&ctx2, &rr, None)
    );
    let all = [a.unwrap(), b.unwrap(), c.unwrap()];
    let ok = all
        .iter()
        .filter(|o| matches!(o, Outcome::Succeeded { .. }))
        .count();
    let skipped = all
        .iter()
        .filter(|o| matches!(o, Outcome::NotClaimed { .. }))
        .count();
    assert_eq!((ok, skipped), (1, 2), "{all:?}");
    assert_eq!(bao.kv_get("app/x").await.unwrap().unwrap()["v"], "old");
}

/// Two restores of one Vault claimed at once, the later one first (the race reserved
/// concurrency 1 used to hide): whichever checks finds the other Running and refuses, so
/// they never run side by side, in either order of claiming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_restores_of_one_vault_claimed_at_once_never_both_run() {
    use stashless::session::{Claim, check_restore_exclusive, claim};
    let w = world("rs-race", "http://127.0.0.1:9", "t").await;
    let api = w.cluster.api::<stashless::api::RestoreSession>();
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
    let earlier = w
        .cluster
        .new_restore("rs-earlier", "repo", "vault", None, false)
        .await
        .unwrap();
    let later = w
        .cluster
        .new_restore("rs-later", "repo", "vault", None, false)
        .await
        .unwrap();
    let Claim::Claimed(later) = claim(&api, &later, deadline).await.unwrap() else {
        panic!("claim")
    };
    let Claim::Claimed(earlier) = claim(&api, &earlier, deadline).await.unwrap() else {
        panic!("claim")
    };
    for (me, other) in [(&earlier, "rs-later"), (&later, "rs-earlier")] {
        let e = check_restore_exclusive(&w.cluster.client, me)
            .await
            .unwrap_err();
        assert!(
            e.reason()
                .contains(&format!("RestoreSession {other} is already restoring")),
            "{}",
            e.reason()
        );
    }
}
