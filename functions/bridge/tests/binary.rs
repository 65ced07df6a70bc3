//! The bridge binary as deployed: configured from the environment, it reports healthy once
//! its watches listed, puts a new BackupSession on the bus (a loopback PutEvents endpoint,
//! via `AWS_ENDPOINT_URL`), and exits 0 on SIGTERM.

use std::time::Duration;

use serde_json::Value;
use stashless_tests::put_events::PutEventsServer;
use stashless_tests::{Cluster, init_logs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_binary_health_delivery_and_shutdown() {
    init_logs();
    let cluster = Cluster::start().await.unwrap();
    let bus = PutEventsServer::start().await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bridge"))
        .envs(cluster.env())
        .env("STASHLESS_EVENT_BUS", "stashless")
        .env("STASHLESS_HEALTH_ADDR", format!("127.0.0.1:{port}"))
        .env("AWS_ENDPOINT_URL", &bus.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bridge never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A session stashless's scheduler created (a Stash CronJob's, of no configuration
    // here, would not be stashless's to dispatch).
    cluster.new_stashless_session("cfg", "cfg-1").await.unwrap();
    let entry = loop {
        if let Some(e) = bus.accepted().await.into_iter().next() {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event reached the bus"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["DetailType"], "BackupSession Added");
    let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["name"], "cfg-1");
    assert_eq!(bus.unsigned(), 0);
    unsafe { libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
