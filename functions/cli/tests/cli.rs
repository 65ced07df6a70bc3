//! The `stashless` binary, run as a user runs it: the demo's verified round trip, and each
//! subcommand against the test harness (in-memory API server, Garage, OpenBao), with its
//! error paths.

use std::process::Output;

use serde_json::{Value, json};
use stashless_tests::{NS, World};

/// Run the binary with `kube_env` (how to reach the test's API server) added.
fn stashless(args: &[&str], kube_env: &[(&'static str, String)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stashless"));
    cmd.args(args).envs(kube_env.iter().map(|(k, v)| (*k, v)));
    cmd.output().expect("runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn demo_prints_a_verified_round_trip() {
    let dir = std::env::temp_dir().join(format!("stashless-demo-test-{}", std::process::id()));
    let o = stashless(
        &[
            "demo",
            "--data-dir",
            dir.to_str().unwrap(),
            "--secrets",
            "20",
            "--output",
            "json",
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "demo failed:\n{err}");
    let summary: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(summary["verified"], true);
    assert_eq!(summary["rows"][0]["step"], "backup");
    assert_eq!(summary["rows"][0]["phase"], "Succeeded");
    assert_eq!(summary["rows"][1]["phase"], "Succeeded");
    assert!(summary["rows"][0]["size_bytes"].as_u64().unwrap() > 1000);
    assert!(err.contains("the backed-up value is back"), "{err}");
    // The table form says the same to a person.
    let o = stashless(
        &[
            "demo",
            "--data-dir",
            dir.to_str().unwrap(),
            "--secrets",
            "0",
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("round trip VERIFIED"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn crds_prints_stash_s_six_crds() {
    let o = stashless(&["crds"], &[]);
    assert!(o.status.success());
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&o.stdout)).unwrap();
    let names: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.contains(&"backupsessions.stash.appscode.com"));
    assert!(names.contains(&"backupblueprints.stash.appscode.com"));
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["crds", "--help"],
        vec!["backup", "now", "--help"],
        vec!["snapshots", "list", "--help"],
        vec!["verify", "--help"],
        vec!["restore", "--help"],
    ] {
        let o = stashless(&args, &[]);
        assert!(o.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

/// Cluster + Garage + OpenBao with one BackupConfiguration and the in-process router, so
/// sessions the CLI creates are run by the real functions.
async fn world(tag: &str) -> (World, tokio::task::JoinHandle<()>) {
    let w = World::standard(tag, "cli").await;
    let router = tokio::spawn(stashless::dispatch::route_in_process(w.ctx()));
    (w, router)
}

async fn run(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        stashless(&a, &env)
    })
    .await
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_now_snapshots_list_verify_and_restore() {
    let (w, router) = world("cli").await;
    let (cluster, s3, bucket, bao) = (&w.cluster, w.s3(), w.bucket(), w.bao());
    let env = cluster.env();
    bao.kv_put("app/x", json!({"v": "backed-up"}))
        .await
        .unwrap();

    // backup now → follows the session to Succeeded.
    let o = run(
        args(&["backup", "now", "cfg", "-n", NS, "-o", "json"]),
        env.clone(),
    )
    .await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["phase"], "Succeeded");
    let o = run(args(&["backup", "now", "missing", "-n", NS]), env.clone()).await;
    assert!(!o.status.success());
    assert!(
        text(&o)
            .1
            .contains("BackupConfiguration vault/missing not found"),
        "{}",
        text(&o).1
    );

    // snapshots list.
    let o = run(
        args(&["snapshots", "list", "repo", "-n", NS, "-o", "json"]),
        env.clone(),
    )
    .await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 1);
    let name = list[0]["name"].as_str().unwrap().to_string();
    assert!(list[0]["raft"]["index"].as_u64().unwrap() > 0);
    let o = run(args(&["snapshots", "list", "repo", "-n", NS]), env.clone()).await;
    assert!(text(&o).0.contains(&name));
    let o = run(args(&["snapshots", "list", "nope", "-n", NS]), env.clone()).await;
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("Repository vault/nope not found"),
        "{}",
        text(&o).1
    );

    // verify: good, then a damaged object.
    let o = run(args(&["verify", "repo", &name, "-n", NS]), env.clone()).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("VERIFIED") && out.contains("state.bin"),
        "{out}"
    );

    // restore → the backed-up value is back.
    bao.kv_put("app/x", json!({"v": "changed"})).await.unwrap();
    let o = run(
        args(&[
            "restore",
            "--repository",
            "repo",
            "--target",
            "vault",
            "--name",
            "r1",
            "-n",
            NS,
        ]),
        env.clone(),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(
        bao.kv_get("app/x").await.unwrap().unwrap()["v"],
        "backed-up"
    );
    let o = run(
        args(&[
            "restore",
            "--repository",
            "repo",
            "--target",
            "vault",
            "--snapshot",
            "vault/none",
            "-n",
            NS,
        ]),
        env.clone(),
    )
    .await;
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("is not in the Repository"),
        "{}",
        text(&o).1
    );

    let key = format!("cli/snapshots/{name}.snap");
    let mut body = s3.get(bucket, &key).await.unwrap();
    let mid = body.len() / 2;
    body[mid] ^= 0xff;
    s3.client()
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(body.into())
        .send()
        .await
        .unwrap();
    let o = run(args(&["verify", "repo", "-n", NS]), env.clone()).await;
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("damaged") || text(&o).1.contains("does not match"),
        "{}",
        text(&o).1
    );
    router.abort();
}
