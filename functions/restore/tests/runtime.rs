//! The restore binary under a local Lambda Runtime API: every `events/restore` sample is
//! answered (malformed ones rejected, not retried), a failing API server surfaces as a
//! retryable error, JSON logs carry the request id, and SIGTERM ends the process cleanly.

use std::time::Duration;

use memkube::Failure;
use serde_json::json;
use stashless_tests::Cluster;
use stashless_tests::runtime_api::{LambdaProcess, run_samples};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_function_under_the_lambda_runtime() {
    let cluster = Cluster::start().await.unwrap();
    let url = cluster.server.url();
    let f = LambdaProcess::start(
        env!("CARGO_BIN_EXE_restore"),
        "restore",
        &[("STASHLESS_KUBE_URL", &url)],
    )
    .await
    .unwrap();
    let ids = run_samples(&f, "restore").await.unwrap();
    println!("restore start-up: {:?}", f.startup().await);
    let logs = f.logs();
    assert!(
        logs.contains(&format!("\"requestId\":\"{}\"", ids[0])),
        "no request id in JSON logs:\n{logs}"
    );

    // The API server failing is worth a retry: the invocation answers with an error.
    cluster
        .kube
        .inject_failure(Failure::new("restoresessions", 500).times(50));
    let (_, r) = f
        .api
        .invoke(
            json!({"namespace": "vault", "name": "b-1"}),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let e = r.expect_err("a failing API server must be retried");
    assert!(
        e["errorMessage"]
            .as_str()
            .unwrap()
            .contains("Kubernetes API"),
        "{e}"
    );
    cluster.kube.clear_failures();

    let log_path_logs = f.logs_handle();
    let status = f.terminate().await.unwrap();
    let logs_after = log_path_logs();
    assert!(
        status.success(),
        "SIGTERM must end the function cleanly: {status:?}"
    );
    assert!(f_logs_contain_shutdown(&logs_after), "no shutdown log line");
}

fn f_logs_contain_shutdown(logs: &str) -> bool {
    logs.contains("SIGTERM: shutting down")
}
