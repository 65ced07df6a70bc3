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
