//! The backup binary under a local Lambda Runtime API: every `events/backup` sample is
//! answered (malformed ones rejected, not retried), a failing API server surfaces as a
//! retryable error, JSON logs carry the request id, and SIGTERM ends the process cleanly.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_function_under_the_lambda_runtime() {
    stashless_tests::runtime_api::session_function_conformance(
        env!("CARGO_BIN_EXE_backup"),
        "backup",
        "backup",
        "backupsessions",
    )
    .await
    .unwrap();
}

/// A local emulator's deadline already past when the invocation starts (cargo-lambda 1.9
/// sends a constant 600000 ms, a moment in 1970) is not obeyed: the backup runs within the
/// session's own time limit and succeeds, and a warning says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_already_past_falls_back_to_the_sessions_limit() {
    use std::time::Duration;
    let w = stashless_tests::World::standard("pastdl", "pastdl").await;
    w.cluster.new_session("cfg", "cfg-1").await.unwrap();
    let f = stashless_tests::runtime_api::LambdaProcess::start(
        env!("CARGO_BIN_EXE_backup"),
        "backup",
        &w.cluster.env(),
    )
    .await
    .unwrap();
    f.api.send_constant_deadline(600_000);
    let (_, r) = f
        .api
        .invoke(
            serde_json::json!({"namespace": "vault", "name": "cfg-1"}),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let v = r.unwrap();
    assert_eq!(v["phase"], "Succeeded", "{v}");
    let logs = f.logs_handle();
    f.terminate().await.unwrap();
    assert!(
        logs().contains("the invocation's deadline is already past"),
        "no warning about the past deadline"
    );
}
