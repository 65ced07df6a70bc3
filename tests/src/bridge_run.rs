//! The bridge binary as deployed, run as a process: configured from the environment, it
//! reports healthy once its watches listed, puts a new BackupSession on the bus (a loopback
//! PutEvents endpoint, via `AWS_ENDPOINT_URL`), and exits 0 on SIGTERM. Shared by the
//! test of the cargo-built binary (functions/bridge/tests/binary.rs) and the test of the
//! one unpacked from the OCI image (tests/tests/bridge_image.rs).

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::Cluster;
use crate::procs::poll_until;
use crate::put_events::PutEventsServer;

/// Run `cmd` (the bridge, or an emulator running it) against `cluster` and hold it to the
/// above. `startup` bounds each wait: becoming healthy, and the event reaching the bus.
pub async fn bridge_binary_conformance(cluster: &Cluster, mut cmd: Command, startup: Duration) {
    let bus = PutEventsServer::start().await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = cmd
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
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    poll_until("the bridge to become healthy", startup, || {
        // A bridge that died (a bad binary, a missing file) fails here, not at the deadline.
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the bridge exited before becoming healthy: {status:?}");
        }
        let (http, healthz) = (&http, &healthz);
        async move {
            let r = http.get(healthz).send().await?;
            Ok(r.status().is_success().then_some(()))
        }
    })
    .await
    .expect("the bridge never became healthy");
    // A session stashless's scheduler created (a Stash CronJob's, of no configuration
    // here, would not be stashless's to dispatch).
    cluster.new_stashless_session("cfg", "cfg-1").await.unwrap();
    let entry = poll_until("an event on the bus", startup, || async {
        Ok(bus.accepted().await.into_iter().next())
    })
    .await
    .expect("no event reached the bus");
    assert_eq!(entry["DetailType"], "BackupSession Added");
    let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["name"], "cfg-1");
    assert_eq!(bus.unsigned(), 0);
    // SAFETY: a plain kill(2) of our own child, which has not been reaped (no wait yet).
    unsafe { libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
