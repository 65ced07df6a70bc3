//! A snapshot of ~64 MiB: many multipart parts in flight, byte-exact in S3, restored by the
//! restore function. Prints throughput (backup; restore vs a plain `curl --data-binary`
//! POST of the same file) and this process's peak RSS, for the issue notes and as a smoke
//! benchmark. Its own test binary, so the peak RSS is this test's alone.

use std::time::Instant;

use serde_json::json;
use sha2::Digest;
use stashless::restore;
use stashless::session::Outcome;
use stashless_tests::{World, session_ref};

fn peak_rss_mib() -> f64 {
    stashless_tests::procs::peak_rss_mib(std::process::id()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_spans_many_parts_and_round_trips() {
    let w = World::standard("large", "big").await;
    let (cluster, s3, bucket, bao) = (&w.cluster, w.s3(), w.bucket(), w.bao());
    bao.seed(128, 512 * 1024).await.unwrap();
    bao.kv_put("app/x", json!({"v": "backed-up"}))
        .await
        .unwrap();
    cluster.new_session("cfg", "cfg-1").await.unwrap();

    let rss_before = peak_rss_mib();
    let ctx = w.ctx();
    let t = Instant::now();
    let outcome = stashless::backup::run(&ctx, &session_ref("cfg-1"), None)
        .await
        .unwrap();
    let backup_secs = t.elapsed().as_secs_f64();
    let rss_after_backup = peak_rss_mib();
    let Outcome::Succeeded { snapshot, size, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(size > 40 * 1024 * 1024, "snapshot only {size} bytes");

    // Byte-exact: the object's sha256 (computed here, independently) is the manifest's.
    let body = s3
        .get(bucket, &format!("big/snapshots/{snapshot}.snap"))
        .await
        .unwrap();
    assert_eq!(body.len() as u64, size);
    let manifest: serde_json::Value = serde_json::from_slice(
        &s3.get(bucket, &format!("big/snapshots/{snapshot}.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sha256"], hex::encode(sha2::Sha256::digest(&body)));
    assert_eq!(s3.open_uploads(bucket).await.unwrap(), 0);

    // Baseline: a plain POST of the same file with curl.
    let file = std::env::temp_dir().join(format!("stashless-large-{}.snap", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    drop(body);
    bao.kv_put("app/x", json!({"v": "changed"})).await.unwrap();
    let t = Instant::now();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .args(["-H", &format!("X-Vault-Token: {}", bao.root_token)])
        .arg(format!("{}/v1/sys/storage/raft/snapshot-force", bao.addr))
        .output()
        .await
        .unwrap();
    let curl_secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(&file).ok();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
    bao.wait_health(false).await.unwrap();
    assert_eq!(
        bao.kv_get("app/x").await.unwrap().unwrap()["v"],
        "backed-up"
    );

    // stashless restore of the same snapshot.
    bao.kv_put("app/x", json!({"v": "changed-again"}))
        .await
        .unwrap();
    cluster
        .new_restore("rs", "repo", "vault", None, false)
        .await
        .unwrap();
    let t = Instant::now();
    let o = restore::run(&ctx, &session_ref("rs"), None).await.unwrap();
    let restore_secs = t.elapsed().as_secs_f64();
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    assert_eq!(
        bao.kv_get("app/x").await.unwrap().unwrap()["v"],
        "backed-up"
    );

    let st = cluster.restore_session("rs").await.unwrap().status.unwrap();
    let transfer = stashless::api::parse_go_duration(st.stats[0].duration.as_deref().unwrap())
        .unwrap()
        .as_secs_f64();
    let mib = size as f64 / (1024.0 * 1024.0);
    println!(
        "LARGE snapshot {mib:.1} MiB: backup {backup_secs:.2}s ({:.1} MiB/s end to end, incl. retention and status); \
         restore transfer {transfer:.2}s ({:.1} MiB/s; {restore_secs:.2}s with Vault's post-restore settle) vs curl POST {curl_secs:.2}s ({:.1} MiB/s); \
         peak RSS of the test process: {rss_before:.1} MiB before the backup, {rss_after_backup:.1} MiB after it",
        mib / backup_secs,
        mib / transfer,
        mib / curl_secs,
    );
}
