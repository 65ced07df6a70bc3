//! The scheduler binary under a local Lambda Runtime API: every `events/scheduler` sample is
//! answered (malformed ones rejected), a tick creates the due session and sweeps.

use std::time::Duration;

use serde_json::json;
use stashless_tests::runtime_api::{LambdaProcess, run_samples};
use stashless_tests::{Cluster, ConfigBuilder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_function_under_the_lambda_runtime() {
    let cluster = Cluster::start().await.unwrap();
    cluster
        .backup_config(ConfigBuilder::new("hourly").schedule("0 * * * *"))
        .await
        .unwrap();
    let f = LambdaProcess::start(env!("CARGO_BIN_EXE_scheduler"), "scheduler", &cluster.env())
        .await
        .unwrap();
    run_samples(&f, "scheduler").await.unwrap();
    println!("scheduler start-up: {:?}", f.startup().await);
    let (_, r) = f
        .api
        .invoke(
            json!({"time": "2099-01-01T10:00:30Z"}),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let v = r.unwrap();
    assert_eq!(v["tick"]["created"][0], "vault/hourly-4070944800", "{v}");
    assert!(v["sweep"]["failed"].as_object().unwrap().is_empty(), "{v}");
    // One session to run; no event bus in this environment, so none was sent.
    assert_eq!(v["to_dispatch"], 1, "{v}");
    assert_eq!(v["dispatched"], 0, "{v}");
    assert_eq!(cluster.sessions().await.unwrap().len(), 1);
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
