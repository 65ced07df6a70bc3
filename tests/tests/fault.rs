//! The fault suite: faults injected on purpose between the functions and Vault, S3 and the
//! Kubernetes API (an HTTP fault proxy in front of each: `stashless_tests::faults`), each
//! scenario a `fault_…` test. Every test ends with the same invariants
//! ([`Scenario::assert_invariants`]):
//! - no session is left Running;
//! - a Succeeded BackupSession has its manifest and a complete object whose bytes match the
//!   manifest's size and sha256 and verify as an OpenBao snapshot;
//! - no snapshot object without its manifest, no manifest without its object;
//! - no incomplete multipart upload;
//! - a Failed session carries a reason, and no status or Event text holds the Vault token or
//!   the S3 secret key.
//!
//! Restore scenarios also prove Vault's data: a restore that failed left the secret written
//! after the backup in place (nothing unverified was applied).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use http::Method;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stashless::api::{BackupSession, RestoreSession, SessionPhase};
use stashless::archive::SnapshotVerifier;
use stashless::backup;
use stashless::cluster::ClusterSource;
use stashless::context::{Context, NamespaceScope, Settings};
use stashless::repository::Manifest;
use stashless::session::Outcome;
use stashless::sweep::{SweepSettings, sweep};
use stashless_tests::faults::{Action, Fault, HttpProxy, Proxy, Rule};
use stashless_tests::procs::openbao::{BaoCluster, OpenBao};
use stashless_tests::procs::poll_until;
use stashless_tests::{
    ConfigBuilder, NS, World, context_for, failed_reason, init_logs, session_ref,
};

const PREFIX: &str = "vault";

/// Seed sizes: `Small` fits one 5 MiB part; `Parts` needs at least two.
#[derive(Clone, Copy)]
enum Seed {
    Small,
    Parts,
}

/// One scenario's world: in-memory API server, a fresh bucket on the shared Garage, a seeded
/// OpenBao with secret `marker` = "before", and a pass-through fault proxy in front of Vault
/// and of S3 (rules added per test).
async fn world(tag: &str, seed: Seed) -> World {
    let bao = OpenBao::start().await.unwrap();
    match seed {
        Seed::Small => bao.seed(50, 1024).await.unwrap(),
        // Pseudo-random values: the gzip'd snapshot stays above two 5 MiB parts.
        Seed::Parts => bao.seed(160, 64 * 1024).await.unwrap(),
    }
    bao.kv_put("marker", json!({"v": "before"})).await.unwrap();
    World::builder(&format!("f-{tag}"))
        .with_openbao(bao)
        .memory()
        .fault_proxies()
        .app_binding()
        .repository(PREFIX)
        .build()
        .await
}

/// What the fault scenarios do with their world.
trait Scenario {
    async fn config(&self, b: ConfigBuilder);
    async fn backed_up(&self) -> String;
    async fn restore(&self, name: &str) -> Outcome;
    async fn marker(&self) -> String;
    async fn manifests(&self) -> Vec<Manifest>;
    /// The Vault token and S3 secret key: must never appear in status or Event text.
    fn secrets(&self) -> Vec<String>;
    async fn assert_invariants(&self);
}

impl Scenario for World {
    async fn config(&self, b: ConfigBuilder) {
        self.cluster.backup_config(b).await.unwrap();
    }

    /// A good backup `cfg-0`, then the marker changed to "after": the state restores start from.
    async fn backed_up(&self) -> String {
        self.config(ConfigBuilder::new("cfg")).await;
        let Outcome::Succeeded { snapshot, .. } = self.backup("cfg-0").await else {
            panic!("the first backup failed")
        };
        self.bao()
            .kv_put("marker", json!({"v": "after"}))
            .await
            .unwrap();
        snapshot
    }

    async fn restore(&self, name: &str) -> Outcome {
        self.cluster
            .new_restore(name, "repo", "vault", None, false)
            .await
            .unwrap();
        self.run_restore(name).await
    }

    async fn marker(&self) -> String {
        self.bao().wait_serving().await.unwrap();
        let v = self.bao().kv_get("marker").await.unwrap().unwrap();
        v["v"].as_str().unwrap().to_string()
    }

    async fn manifests(&self) -> Vec<Manifest> {
        manifests_in(self).await
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.bao().root_token.clone(), self.s3().secret_key.clone()]
    }

    /// The invariants every fault scenario ends with (see the module docs).
    async fn assert_invariants(&self) {
        invariants(self, &self.secrets(), Objects::AsStored).await;
    }
}

/// Stored manifests in the world's bucket (read from Garage directly).
async fn manifests_in(w: &World) -> Vec<Manifest> {
    let (s3, bucket) = (w.s3(), w.bucket());
    let mut out = Vec::new();
    for k in s3.keys(bucket, "").await.unwrap() {
        if k.ends_with(".json") {
            let body = s3.get(bucket, &k).await.unwrap();
            out.push(serde_json::from_slice(&body).unwrap());
        }
    }
    out
}

/// Whether Succeeded sessions' objects are expected to match their manifests.
#[derive(Clone, Copy, PartialEq)]
enum Objects {
    AsStored,
    /// The test rewrote an object on purpose.
    Tampered,
}

/// See the module docs.
async fn invariants(w: &World, secrets: &[String], objects: Objects) {
    let (cluster, s3, bucket) = (&w.cluster, w.s3(), w.bucket());
    let keys = s3.keys(bucket, "").await.unwrap();
    for k in &keys {
        assert!(
            k.starts_with(&format!("{PREFIX}/")),
            "object {k} outside the prefix"
        );
        let twin = if let Some(stem) = k.strip_suffix(".snap") {
            format!("{stem}.json")
        } else if let Some(stem) = k.strip_suffix(".json") {
            format!("{stem}.snap")
        } else {
            panic!("unexpected object {k}")
        };
        assert!(keys.contains(&twin), "{k} has no {twin}: half-written");
    }
    assert_eq!(
        s3.open_uploads(bucket).await.unwrap(),
        0,
        "incomplete multipart uploads left"
    );
    let manifests = manifests_in(w).await;
    let mut texts = Vec::new();
    let sessions: Vec<BackupSession> = cluster.sessions().await.unwrap();
    for s in &sessions {
        let name = s.metadata.name.clone().unwrap();
        let st = s.status.clone().unwrap_or_default();
        assert_ne!(st.phase, Some(SessionPhase::Running), "{name} left Running");
        texts.push(serde_json::to_string(&st).unwrap());
        match st.phase {
            Some(SessionPhase::Succeeded) if objects == Objects::AsStored => {
                let m = manifests
                    .iter()
                    .find(|m| m.session.name == name)
                    .unwrap_or_else(|| panic!("{name} Succeeded without a manifest"));
                let body = s3.get(bucket, &m.key).await.unwrap();
                assert_eq!(body.len() as u64, m.size, "{name}: object size");
                assert_eq!(
                    hex::encode(Sha256::digest(&body)),
                    m.sha256,
                    "{name}: object sha256"
                );
                let mut v = SnapshotVerifier::new();
                v.update(&body).unwrap();
                v.finish()
                    .unwrap_or_else(|e| panic!("{name}: stored object does not verify: {e}"));
            }
            Some(SessionPhase::Failed) => {
                let reason = failed_reason_in(&st);
                assert!(reason.len() > 10, "{name} Failed without a reason: {st:?}");
                assert!(
                    manifests.iter().all(|m| m.session.name != name),
                    "{name} Failed but its snapshot is listed"
                );
            }
            _ => {}
        }
    }
    let restores = cluster
        .api::<RestoreSession>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for rs in &restores {
        let st = rs.status.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap();
        assert_ne!(st.phase, Some(SessionPhase::Running), "{name} left Running");
        if st.phase == Some(SessionPhase::Failed) {
            let e = st.stats.first().and_then(|s| s.error.clone());
            assert!(e.is_some_and(|e| e.len() > 10), "{name}: no reason");
        }
        texts.push(serde_json::to_string(&st).unwrap());
    }
    for e in cluster
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        texts.push(e.message.unwrap_or_default());
    }
    for t in &texts {
        for s in secrets {
            assert!(
                !t.contains(s.as_str()),
                "a secret reached status/Event text"
            );
        }
    }
}

fn failed_reason_in(st: &stashless::api::BackupSessionStatus) -> String {
    st.targets
        .first()
        .and_then(|t| t.stats.first())
        .and_then(|s| s.error.clone())
        .or_else(|| {
            st.conditions
                .iter()
                .find(|c| c.status == "True" || c.status == "False")
                .map(|c| c.message.clone().unwrap_or_default())
        })
        .unwrap_or_default()
}

fn has_any(reason: &str, words: &[&str]) -> bool {
    let l = reason.to_lowercase();
    words.iter().any(|w| l.contains(&w.to_lowercase()))
}

/// An S3 error document as S3 writes one.
fn s3_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>"
    )
}

/// S3's 500 InternalError.
fn s3_internal_error() -> Action {
    respond(
        500,
        s3_error("InternalError", "We encountered an internal error."),
    )
}

fn respond(status: u16, body: String) -> Action {
    Action::Respond { status, body }
}

/// Wait for a condition the proxy records (what a request did is only visible there).
async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    poll_until(what, Duration::from_secs(60), || async {
        Ok(cond().then_some(()))
    })
    .await
    .unwrap();
}

/// How many times the proxy saw UploadPart number `n`.
fn part_attempts(p: &HttpProxy, n: u32) -> usize {
    let q = format!("partNumber={n}&");
    p.seen()
        .iter()
        .filter(|s| s.method == Method::PUT && format!("{}&", s.query).contains(&q))
        .count()
}

// ---------------------------------------------------------------------------------------
// Vault

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_sealed() {
    let w = world("sealed", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.bao().seal().await.unwrap();
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(has_any(&reason, &["sealed"]), "{reason}");
    assert!(w.s3().keys(w.bucket(), "").await.unwrap().is_empty());
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_standby_whose_active_node_is_unreachable_or_unknown() {
    // The AppBinding names a standby (sys/leader says so); its active node is out of reach,
    // then unknown (an election). A real standby that can reach its leader is covered in
    // backup.rs (backup_through_a_standby_reads_from_the_active_node).
    let w = world("standby", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let leader = |addr: &str| {
        respond(
            200,
            json!({"ha_enabled": true, "is_self": false, "active_time": "0001-01-01T00:00:00Z",
                   "leader_address": addr, "leader_cluster_address": "", "performance_standby": false,
                   "raft_committed_index": 10, "raft_applied_index": 10})
            .to_string(),
        )
    };
    let gone = format!("http://127.0.0.1:{closed}");
    w.vault_proxy()
        .rule(Rule::new(leader(&gone)).path("/sys/leader").times(1))
        .rule(Rule::new(leader("")).path("/sys/leader").times(1));
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(reason.contains(&gone), "{reason}");
    assert!(has_any(&reason, &["cannot connect"]), "{reason}");
    let reason = failed_reason(&w.backup("cfg-2").await);
    assert!(has_any(&reason, &["no active node"]), "{reason}");
    assert_eq!(w.vault_proxy().faults(), 2);
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_leader_change_mid_snapshot() {
    init_logs();
    let bao = Arc::new(BaoCluster::start(3).await.unwrap());
    let leader = bao.leader();
    leader.seed(100, 32 * 1024).await.unwrap();
    // The snapshot slowed to 256 KiB/s, so the step-down lands while it streams.
    let slow = Proxy::start(
        leader.addr.trim_start_matches("http://"),
        Fault::Throttle(256 * 1024),
    )
    .await
    .unwrap();
    let proxy = HttpProxy::start(&slow.addr).await.unwrap();
    let c = bao.clone();
    let (stepped_tx, stepped_rx) = tokio::sync::oneshot::channel();
    let stepped_tx = std::sync::Mutex::new(Some(stepped_tx));
    proxy.rule(
        Rule::new(Action::Hook(Arc::new(move || {
            let c = c.clone();
            let tx = stepped_tx.lock().unwrap().take();
            tokio::spawn(async move {
                let r = c.step_down().await;
                if let Some(tx) = tx {
                    let _ = tx.send(r.is_ok());
                }
            });
        })))
        .path("/sys/storage/raft/snapshot")
        .times(1),
    );
    let w = World::builder("f-leader")
        .memory()
        .app_binding_to(&proxy.addr, &leader.root_token)
        .repository(PREFIX)
        .backup_configuration(ConfigBuilder::new("cfg"))
        .build()
        .await;
    let k = &w.cluster;
    let ctx = w.ctx();
    k.new_session("cfg", "cfg-1").await.unwrap();
    let o = backup::run(&ctx, &session_ref("cfg-1"), None)
        .await
        .unwrap();
    assert!(stepped_rx.await.unwrap(), "the leader did not step down");
    // Either outcome is honest: the old leader finished a complete snapshot (verified by the
    // invariants below), or the stream broke and the session failed with a reason.
    match &o {
        Outcome::Succeeded { .. } | Outcome::Failed { .. } => {}
        other => panic!("{other:?}"),
    }
    let secrets = vec![leader.root_token.clone(), w.s3().secret_key.clone()];
    invariants(&w, &secrets, Objects::AsStored).await;
    // The next backup, through a node that is now a standby, finds the new leader, once that
    // standby has learnt who it is (until then the backup's answer is an honest "election in
    // progress: try again", which is not what this step checks).
    stashless_tests::procs::poll_until(
        "the old leader to know the new one",
        std::time::Duration::from_secs(60),
        || async {
            let info = leader.leader_info().await?;
            let known = info["is_self"] == json!(false)
                && info["leader_address"]
                    .as_str()
                    .is_some_and(|a| !a.is_empty());
            Ok(known.then_some(()))
        },
    )
    .await
    .unwrap();
    k.api::<stashless::api::AppBinding>()
        .patch(
            "vault",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"clientConfig": {"url": leader.addr}}})),
        )
        .await
        .unwrap();
    k.new_session("cfg", "cfg-2").await.unwrap();
    let o = backup::run(&ctx, &session_ref("cfg-2"), None)
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    invariants(&w, &secrets, Objects::AsStored).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_stream_cut_mid_snapshot() {
    let w = world("vcut", Seed::Parts).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.vault_proxy().rule(
        Rule::new(Action::CutResponseAfter(3 * 1024 * 1024)).path("/sys/storage/raft/snapshot"),
    );
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert_eq!(w.vault_proxy().faults(), 1);
    assert!(
        has_any(&reason, &["truncated", "stream broke", "ended early"]),
        "{reason}"
    );
    assert!(w.s3().keys(w.bucket(), "").await.unwrap().is_empty());
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_stalls_beyond_the_deadline() {
    let w = world("vstall", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg").time_out("3s")).await;
    w.vault_proxy()
        .rule(Rule::new(Action::Stall).path("/sys/storage/raft/snapshot"));
    let started = Instant::now();
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(reason.starts_with("deadline exceeded"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let st = w.cluster.session("cfg-1").await.unwrap().status.unwrap();
    assert!(st.conditions.iter().any(|c| c.type_ == "DeadlineExceeded"));
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_refuses_connections() {
    let w = world("vdown", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.vault_proxy().set_down(true);
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(
        has_any(&reason, &["cannot connect", "connection", "closed"]),
        "{reason}"
    );
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_500_on_the_snapshot() {
    let w = world("v500", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.vault_proxy().rule(
        Rule::new(respond(
            500,
            r#"{"errors":["raft: failed to open snapshot"]}"#.into(),
        ))
        .path("/sys/storage/raft/snapshot"),
    );
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(has_any(&reason, &["500"]), "{reason}");
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_token_revoked_before_the_snapshot() {
    let w = world("v403", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.vault_proxy().rule(
        Rule::new(respond(403, r#"{"errors":["permission denied"]}"#.into()))
            .path("/sys/storage/raft/snapshot"),
    );
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(has_any(&reason, &["permission denied", "403"]), "{reason}");
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_vault_error_page_echoing_the_token_is_not_carried_into_status() {
    // A misconfigured proxy in front of Vault answers with a page that echoes the request,
    // token header included.
    let w = world("echo", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    let page = format!(
        "<html>502 Bad Gateway\nGET /v1/sys/storage/raft/snapshot\nX-Vault-Token: {}\n</html>",
        w.bao().root_token
    );
    w.vault_proxy()
        .rule(Rule::new(respond(502, page)).path("/sys/storage/raft/snapshot"));
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(has_any(&reason, &["502"]), "{reason}");
    assert!(reason.contains("<token>"), "{reason}");
    assert!(!reason.contains(&w.bao().root_token));
    w.assert_invariants().await;
}

// ---------------------------------------------------------------------------------------
// S3

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_500_on_a_part_is_retried() {
    let w = world("p500", Seed::Parts).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.s3_proxy().rule(
        Rule::new(s3_internal_error())
            .method(Method::PUT)
            .query("partNumber=2&")
            .times(1),
    );
    let o = w.backup("cfg-1").await;
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    assert_eq!(w.s3_proxy().faults(), 1, "the fault never fired");
    assert!(
        part_attempts(w.s3_proxy(), 2) >= 2,
        "part 2 was not retried"
    );
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_slowdown_on_a_part_is_retried() {
    let w = world("slowdown", Seed::Parts).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.s3_proxy().rule(
        Rule::new(respond(
            503,
            s3_error("SlowDown", "Please reduce your request rate."),
        ))
        .method(Method::PUT)
        .query("partNumber=1&")
        .times(2),
    );
    let o = w.backup("cfg-1").await;
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    assert_eq!(w.s3_proxy().faults(), 2);
    assert!(part_attempts(w.s3_proxy(), 1) >= 3);
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_connection_reset_mid_part_is_retried() {
    let w = world("reset", Seed::Parts).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.s3_proxy().rule(
        Rule::new(Action::ResetRequestAfter(1024 * 1024))
            .method(Method::PUT)
            .query("partNumber=2&")
            .times(1),
    );
    let o = w.backup("cfg-1").await;
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    assert_eq!(w.s3_proxy().faults(), 1);
    assert!(part_attempts(w.s3_proxy(), 2) >= 2);
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_complete_multipart_upload_fails() {
    let w = world("complete", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    // CompleteMultipartUpload is the POST that carries the uploadId.
    w.s3_proxy().rule(
        Rule::new(s3_internal_error())
            .method(Method::POST)
            .query("uploadId="),
    );
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(has_any(&reason, &["complet"]), "{reason}");
    assert!(w.s3_proxy().faults() >= 1);
    assert!(w.s3().keys(w.bucket(), "").await.unwrap().is_empty());
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_bucket_deleted_mid_backup() {
    let w = world("nobucket", Seed::Parts).await;
    w.config(ConfigBuilder::new("cfg")).await;
    // After the first part, the bucket is gone for every request but the abort (which the
    // real S3 would also refuse; the bucket's lifecycle rule cleans up there).
    let gone = || {
        respond(
            404,
            s3_error("NoSuchBucket", "The specified bucket does not exist"),
        )
    };
    w.s3_proxy()
        .rule(Rule::new(gone()).method(Method::PUT).from_nth(2))
        .rule(Rule::new(gone()).method(Method::POST).query("uploadId="))
        .rule(Rule::new(gone()).method(Method::GET));
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(
        has_any(&reason, &["does not exist", "NoSuchBucket"]),
        "{reason}"
    );
    assert!(reason.contains(w.bucket()), "{reason}");
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_credentials_expire_mid_backup() {
    let w = world("expired", Seed::Parts).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.s3_proxy().rule(
        Rule::new(respond(
            400,
            s3_error("ExpiredToken", "The provided token has expired."),
        ))
        .method(Method::PUT)
        .from_nth(2),
    );
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(has_any(&reason, &["expired"]), "{reason}");
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_manifest_write_fails() {
    let w = world("manifest", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.s3_proxy().rule(
        Rule::new(s3_internal_error())
            .method(Method::PUT)
            .path(".json"),
    );
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(has_any(&reason, &["manifest", ".json"]), "{reason}");
    // The snapshot object was removed with it: nothing invisible left behind.
    assert!(w.s3().keys(w.bucket(), "").await.unwrap().is_empty());
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_s3_stalls_on_a_part_past_the_deadline() {
    let w = world("sstall", Seed::Parts).await;
    w.config(ConfigBuilder::new("cfg").time_out("5s")).await;
    w.s3_proxy().rule(
        Rule::new(Action::Stall)
            .method(Method::PUT)
            .query("partNumber=1&"),
    );
    let reason = failed_reason(&w.backup("cfg-1").await);
    assert!(reason.starts_with("deadline exceeded"), "{reason}");
    w.assert_invariants().await;
}

// ---------------------------------------------------------------------------------------
// Kubernetes API (an HTTP fault proxy in front of the in-memory server)

/// A backup context whose Kubernetes client goes through `proxy`.
async fn ctx_via(proxy: &HttpProxy) -> Arc<Context> {
    let client = ClusterSource::Url {
        url: proxy.addr.clone(),
        token: None,
        ca_file: None,
    }
    .client()
    .await
    .unwrap();
    context_for(client, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kube_409_on_the_final_status_write_is_retried() {
    let w = world("k409", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    let kube = HttpProxy::start(&w.cluster.url()).await.unwrap();
    // The claim is the first status PATCH; the final write is the second.
    kube.rule(
        Rule::new(respond(
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                   "message": "Operation cannot be fulfilled: the object has been modified"}).to_string(),
        ))
        .method(Method::PATCH)
        .path("/status")
        .from_nth(2)
        .times(1),
    );
    let ctx = ctx_via(&kube).await;
    let o = w.backup_with(&ctx, "cfg", "cfg-1", None).await;
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    assert_eq!(kube.faults(), 1);
    let st = w.cluster.session("cfg-1").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Succeeded));
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kube_403_on_the_token_secret() {
    let w = world("k403", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    let kube = HttpProxy::start(&w.cluster.url()).await.unwrap();
    kube.rule(
        Rule::new(respond(
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                   "message": "secrets \"vault-token\" is forbidden: User \"stashless\" cannot get resource \"secrets\" in API group \"\" in the namespace \"vault\""}).to_string(),
        ))
        .method(Method::GET)
        .path("/secrets/"),
    );
    let ctx = ctx_via(&kube).await;
    let reason = failed_reason(&w.backup_with(&ctx, "cfg", "cfg-1", None).await);
    assert!(
        reason.contains("not allowed to read Secret vault/vault-token"),
        "{reason}"
    );
    assert!(reason.contains("grant"), "{reason}");
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kube_down_during_the_status_write_is_settled_by_the_sweep() {
    let w = world("kdown", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg").time_out("1m")).await;
    let kube = HttpProxy::start(&w.cluster.url()).await.unwrap();
    // Every status write after the claim finds the API server gone.
    kube.rule(
        Rule::new(Action::Drop)
            .method(Method::PATCH)
            .path("/status")
            .from_nth(2),
    );
    let ctx = ctx_via(&kube).await;
    w.cluster.new_session("cfg", "cfg-1").await.unwrap();
    let e = backup::run(&ctx, &session_ref("cfg-1"), None)
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    // The snapshot and its manifest are stored; the session still says Running.
    let st = w.cluster.session("cfg-1").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Running));
    assert_eq!(w.manifests().await.len(), 1);
    // A redelivery before the deadline leaves it alone (its function may still be alive).
    let o = backup::run(&w.ctx(), &session_ref("cfg-1"), None)
        .await
        .unwrap();
    assert!(matches!(o, Outcome::NotClaimed { .. }), "{o:?}");
    // The next sweep after the deadline hands it back; the backup function settles it from
    // the repository.
    let after = Utc::now() + chrono::Duration::minutes(2);
    let report = sweep(
        &w.cluster.client,
        &NamespaceScope::all(),
        after,
        &SweepSettings::default(),
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    let back = report
        .redispatch
        .iter()
        .find(|s| s.name == "cfg-1")
        .expect("the sweep hands the lost session back");
    // (The function compares the deadline with its own clock: move the deadline back.)
    w.deadline_passed("cfg-1").await;
    let o = backup::run(&w.ctx(), back, None).await.unwrap();
    let Outcome::Succeeded { snapshot, .. } = o else {
        panic!("{o:?}")
    };
    assert_eq!(snapshot, format!("{NS}/cfg-1"));
    let st = w.cluster.session("cfg-1").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Succeeded));
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_lambda_killed_mid_upload_is_settled_failed_and_its_upload_aborted() {
    let w = world("killed", Seed::Parts).await;
    w.config(ConfigBuilder::new("cfg")).await;
    // Hold part 2 so the function is mid-upload. A Lambda timeout kills the process and no
    // cleanup runs: model that by cancelling the invocation with its abort held (the first
    // AbortMultipartUpload never answers).
    w.s3_proxy()
        .rule(
            Rule::new(Action::Stall)
                .method(Method::PUT)
                .query("partNumber=2&"),
        )
        .rule(
            Rule::new(Action::Stall)
                .method(Method::DELETE)
                .query("uploadId=")
                .times(1),
        );
    w.cluster.new_session("cfg", "cfg-1").await.unwrap();
    let ctx = w.ctx();
    let run = tokio::spawn(async move { backup::run(&ctx, &session_ref("cfg-1"), None).await });
    wait_for("part 2 to be sent", || part_attempts(w.s3_proxy(), 2) > 0).await;
    run.abort();
    let _ = run.await;
    wait_for("the held abort", || {
        w.s3_proxy()
            .seen()
            .iter()
            .any(|s| s.method == Method::DELETE)
    })
    .await;
    assert_eq!(
        w.s3().open_uploads(w.bucket()).await.unwrap(),
        1,
        "the killed function left its upload"
    );
    let st = w.cluster.session("cfg-1").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Running));
    w.deadline_passed("cfg-1").await;
    let report = sweep(
        &w.cluster.client,
        &NamespaceScope::all(),
        Utc::now(),
        &SweepSettings::default(),
    )
    .await
    .unwrap();
    let back = report
        .redispatch
        .iter()
        .find(|s| s.name == "cfg-1")
        .expect("handed back");
    let reason = failed_reason(&backup::run(&w.ctx(), back, None).await.unwrap());
    assert!(reason.contains("partial upload was aborted"), "{reason}");
    w.assert_invariants().await;
}

// ---------------------------------------------------------------------------------------
// Deliveries and deadlines

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_duplicate_concurrent_deliveries() {
    let w = world("dup", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.cluster.new_session("cfg", "cfg-1").await.unwrap();
    let ctx = w.ctx();
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                backup::run(&ctx, &session_ref("cfg-1"), None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut succeeded = 0;
    for h in runs {
        match h.await.unwrap() {
            Outcome::Succeeded { .. } => succeeded += 1,
            Outcome::NotClaimed { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(succeeded, 1);
    assert_eq!(w.manifests().await.len(), 1);
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_out_of_order_and_late_deliveries() {
    let w = world("order", Seed::Small).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.cluster.new_session("cfg", "cfg-1").await.unwrap();
    w.cluster.new_session("cfg", "cfg-2").await.unwrap();
    // The newer session's event arrives first, then the older one's, then both again.
    let ctx = w.ctx();
    let o2 = backup::run(&ctx, &session_ref("cfg-2"), None)
        .await
        .unwrap();
    let o1 = backup::run(&ctx, &session_ref("cfg-1"), None)
        .await
        .unwrap();
    assert!(matches!(o2, Outcome::Succeeded { .. }), "{o2:?}");
    assert!(
        matches!(o1, Outcome::Succeeded { .. } | Outcome::Skipped { .. }),
        "{o1:?}"
    );
    for n in ["cfg-1", "cfg-2"] {
        let again = backup::run(&ctx, &session_ref(n), None).await.unwrap();
        assert!(matches!(again, Outcome::NotClaimed { .. }), "{again:?}");
    }
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_lambda_deadline_reached_mid_snapshot() {
    let w = world("lambda", Seed::Parts).await;
    w.config(ConfigBuilder::new("cfg")).await;
    w.vault_proxy()
        .rule(Rule::new(Action::Stall).path("/sys/storage/raft/snapshot"));
    // The Lambda runtime's deadline, not the configuration's timeOut, is the limit here.
    let lambda_deadline = Instant::now() + Duration::from_secs(8);
    let ctx = Context::new(
        w.cluster.client.clone(),
        Settings {
            deadline_margin: Duration::from_secs(4),
            ..Settings::default()
        },
    );
    let o = w
        .backup_with(&ctx, "cfg", "cfg-1", Some(lambda_deadline))
        .await;
    assert!(
        Instant::now() < lambda_deadline,
        "stopped after the Lambda deadline"
    );
    let reason = failed_reason(&o);
    assert!(reason.starts_with("deadline exceeded"), "{reason}");
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_retention_fails_halfway() {
    let w = world("retention", Seed::Small).await;
    w.config(
        ConfigBuilder::new("cfg")
            .retention(json!({"name": "keep-last-1", "keepLast": 1, "prune": true})),
    )
    .await;
    // Three snapshots, then keepLast 1 with S3 refusing every delete after the first
    // snapshot's two objects.
    let ctx = w.ctx();
    let mut names = Vec::new();
    // Three snapshots kept by a dry run.
    w.cluster
        .api::<stashless::api::BackupConfiguration>()
        .patch(
            "cfg",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"retentionPolicy": {"dryRun": true}}})),
        )
        .await
        .unwrap();
    for i in 1..=3 {
        let Outcome::Succeeded { snapshot, .. } =
            w.backup_with(&ctx, "cfg", &format!("cfg-{i}"), None).await
        else {
            panic!("backup {i}")
        };
        names.push(snapshot);
    }
    w.cluster
        .api::<stashless::api::BackupConfiguration>()
        .patch(
            "cfg",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"retentionPolicy": {"dryRun": false}}})),
        )
        .await
        .unwrap();
    // Deletes: snapshot 1's manifest and object go; the next delete (snapshot 2's manifest)
    // fails for good.
    w.s3_proxy().rule(
        Rule::new(s3_internal_error())
            .method(Method::DELETE)
            .from_nth(3),
    );
    let o = w.backup_with(&ctx, "cfg", "cfg-4", None).await;
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    let st = w.cluster.session("cfg-4").await.unwrap().status.unwrap();
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "RetentionPolicyApplied")
        .expect("retention condition");
    assert_eq!(c.status, "False");
    let msg = c.message.clone().unwrap_or_default();
    assert!(msg.contains("retention stopped after removing 1"), "{msg}");
    // Nothing wrong deleted: the newest is there, exactly one of the three the policy
    // removes is gone (both its objects: the invariants check), and the reason names it.
    let left: Vec<String> = w.manifests().await.into_iter().map(|m| m.name).collect();
    assert!(left.contains(&format!("{NS}/cfg-4")), "{left:?}");
    let gone: Vec<&String> = names.iter().filter(|n| !left.contains(n)).collect();
    assert_eq!(gone.len(), 1, "{left:?}");
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(msg.contains(gone[0].as_str()), "{msg}");
    w.assert_invariants().await;
}

// ---------------------------------------------------------------------------------------
// Restore

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_restore_of_an_object_modified_after_upload() {
    let w = world("modified", Seed::Small).await;
    let snapshot = w.backed_up().await;
    // Someone rewrites the object in place with a valid-looking but different snapshot.
    let key = w
        .manifests()
        .await
        .into_iter()
        .find(|m| m.name == snapshot)
        .unwrap()
        .key;
    let other = w.bao().snapshot().await.unwrap();
    w.s3()
        .client()
        .put_object()
        .bucket(w.bucket())
        .key(&key)
        .body(other.into())
        .send()
        .await
        .unwrap();
    let reason = failed_reason(&w.restore("rs-1").await);
    assert!(
        has_any(
            &reason,
            // A same-sized replacement is caught by its ETag: "replaced after the backup".
            &[
                "changed",
                "modified",
                "replaced",
                "does not match",
                "mismatch"
            ]
        ),
        "{reason}"
    );
    assert_eq!(
        w.marker().await,
        "after",
        "an unverified snapshot was applied"
    );
    invariants(&w, &w.secrets(), Objects::Tampered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_restore_s3_stream_cut() {
    let w = world("rcut", Seed::Parts).await;
    w.backed_up().await;
    w.s3_proxy().rule(
        Rule::new(Action::CutResponseAfter(2 * 1024 * 1024))
            .method(Method::GET)
            .path(".snap"),
    );
    let reason = failed_reason(&w.restore("rs-1").await);
    assert!(w.s3_proxy().faults() >= 1);
    assert!(
        has_any(&reason, &["truncated", "ended early", "broke", "stream"]),
        "{reason}"
    );
    assert_eq!(w.marker().await, "after", "a partial snapshot was applied");
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_restore_vault_connection_dropped_mid_upload() {
    let w = world("rdrop", Seed::Parts).await;
    w.backed_up().await;
    w.vault_proxy().rule(
        Rule::new(Action::ResetRequestAfter(1024 * 1024))
            .method(Method::POST)
            .path("/sys/storage/raft/snapshot"),
    );
    let reason = failed_reason(&w.restore("rs-1").await);
    assert_eq!(w.vault_proxy().faults(), 1);
    assert!(reason.len() > 10);
    assert_eq!(w.marker().await, "after", "a partial snapshot was applied");
    let h = w.bao().health().await.unwrap();
    assert_eq!(h["sealed"], Value::Bool(false), "Vault sealed itself");
    w.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_restore_vault_500_on_apply() {
    let w = world("r500", Seed::Small).await;
    w.backed_up().await;
    w.vault_proxy().rule(
        Rule::new(respond(
            500,
            r#"{"errors":["failed to apply snapshot"]}"#.into(),
        ))
        .method(Method::POST)
        .path("/sys/storage/raft/snapshot"),
    );
    let reason = failed_reason(&w.restore("rs-1").await);
    assert!(has_any(&reason, &["500"]), "{reason}");
    assert_eq!(w.marker().await, "after");
    w.assert_invariants().await;
}
