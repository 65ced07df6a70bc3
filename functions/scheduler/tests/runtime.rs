//! The scheduler binary under a local Lambda Runtime API: every `events/scheduler` sample is
//! answered (malformed ones rejected), a tick creates the due session and sweeps, and SIGTERM
//! ends the process cleanly (the same check the arm64 package passes under emulation).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_function_under_the_lambda_runtime() {
    stashless_tests::runtime_api::scheduler_function_conformance(env!("CARGO_BIN_EXE_scheduler"))
        .await
        .unwrap();
}
