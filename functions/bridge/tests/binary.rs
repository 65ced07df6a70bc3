//! The bridge binary as deployed: configured from the environment, it reports healthy once
//! its watches listed, puts a new BackupSession on the bus (a loopback PutEvents endpoint,
//! via `AWS_ENDPOINT_URL`), and exits 0 on SIGTERM. The checks live in
//! `stashless_tests::bridge_run`, shared with the test of the OCI image's binary.

use std::time::Duration;

use stashless_tests::bridge_run::bridge_binary_conformance;
use stashless_tests::{Cluster, init_logs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_binary_health_delivery_and_shutdown() {
    init_logs();
    let cluster = Cluster::start().await.unwrap();
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bridge"));
    bridge_binary_conformance(&cluster, cmd, Duration::from_secs(30)).await;
}
