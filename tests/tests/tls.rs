//! TLS to Vault (issue 9): a real OpenBao serving HTTPS with a certificate from a test CA.
//! The AppBinding's `caBundle` is the only trust (it replaces the public roots),
//! `insecureSkipTLSVerify` turns verification off only when set, and plaintext needs an
//! explicit `http`. Every failure is a Failed session with a readable reason that never
//! holds the Vault token, and leaves no object or incomplete upload behind.

use base64::Engine;
use serde_json::{Value, json};
use stashless::api::SessionPhase;
use stashless::session::Outcome;
use stashless_tests::procs::openbao::{OpenBao, TlsMaterial};
use stashless_tests::{NS, World, failed_reason};

/// One test's world: an in-memory cluster with Repository `repo` on a fresh Garage bucket,
/// BackupConfiguration `cfg`, and AppBinding `vault` with this `clientConfig` and token.
async fn world(tag: &str, token: &str, client_config: Value) -> World {
    World::builder(tag)
        .memory()
        .app_binding_with(client_config, token)
        .backup_to("vault")
        .build()
        .await
}

/// `caBundle` as the CRD holds it (base64 of the PEM).
fn ca_bundle(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}

/// The backup failed with a reason mentioning each of `expect` (case-insensitive) and not
/// the token; the session is Failed with that reason; nothing reached the bucket.
async fn assert_failed_cleanly(
    w: &World,
    session: &str,
    outcome: &Outcome,
    token: &str,
    expect: &[&str],
) {
    let reason = failed_reason(outcome);
    let lower = reason.to_lowercase();
    for e in expect {
        assert!(lower.contains(e), "reason {reason:?} lacks {e:?}");
    }
    assert!(!reason.contains(token), "the token leaked: {reason}");
    let st = w.cluster.session(session).await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Failed));
    let recorded = serde_json::to_string(&st).unwrap();
    assert!(
        !recorded.contains(token),
        "the token leaked into the status"
    );
    assert_eq!(w.s3().open_uploads(w.bucket()).await.unwrap(), 0);
    let keys = w.s3().keys(w.bucket(), "").await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

async fn assert_succeeded(w: &World, outcome: &Outcome) -> String {
    let Outcome::Succeeded { snapshot, .. } = outcome else {
        panic!("expected Succeeded, got {outcome:?}")
    };
    let keys = w.s3().keys(w.bucket(), "vault/snapshots/").await.unwrap();
    let object = format!("vault/snapshots/{snapshot}.snap");
    assert!(keys.contains(&object), "{object} not in {keys:?}");
    assert_eq!(w.s3().open_uploads(w.bucket()).await.unwrap(), 0);
    snapshot.clone()
}

async fn tls_bao() -> (OpenBao, TlsMaterial) {
    OpenBao::start_tls().await.expect("openbao starts with TLS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_appbindings_ca_bundle_backs_up_and_restores() {
    let (bao, tls) = tls_bao().await;
    assert!(bao.addr.starts_with("https://127.0.0.1:"), "{}", bao.addr);
    let w = world(
        "tls-ok",
        &bao.root_token,
        json!({"url": bao.addr, "caBundle": ca_bundle(&tls.ca_pem)}),
    )
    .await;
    bao.kv_put("app/db", json!({"password": "before-backup"}))
        .await
        .unwrap();

    let outcome = w.backup("cfg-1").await;
    assert_succeeded(&w, &outcome).await;
    let st = w.cluster.session("cfg-1").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Succeeded));

    bao.kv_put("app/db", json!({"password": "after-backup"}))
        .await
        .unwrap();
    w.cluster
        .new_restore("restore-1", "repo", "vault", None, false)
        .await
        .unwrap();
    let o = w.run_restore("restore-1").await;
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    bao.wait_serving().await.unwrap();
    let v = bao.kv_get("app/db").await.unwrap().unwrap();
    assert_eq!(v["password"], "before-backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_ca_bundle_fails_on_the_certificate() {
    let (bao, _tls) = tls_bao().await;
    let w = world("tls-noca", &bao.root_token, json!({"url": bao.addr})).await;
    let outcome = w.backup("cfg-1").await;
    assert_failed_cleanly(
        &w,
        "cfg-1",
        &outcome,
        &bao.root_token,
        &["certificate", "cabundle"],
    )
    .await;
}

/// The bundle replaces the trusted roots: a CA other than the server's is no trust at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_bundle_of_another_ca_fails_on_the_certificate() {
    let (bao, tls) = tls_bao().await;
    let w = world(
        "tls-otherca",
        &bao.root_token,
        json!({"url": bao.addr, "caBundle": ca_bundle(&tls.other_ca_pem)}),
    )
    .await;
    let outcome = w.backup("cfg-1").await;
    assert_failed_cleanly(
        &w,
        "cfg-1",
        &outcome,
        &bao.root_token,
        &["certificate", "cabundle"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_tls_verify_without_ca_bundle_succeeds() {
    let (bao, _tls) = tls_bao().await;
    let w = world(
        "tls-insecure",
        &bao.root_token,
        json!({"url": bao.addr, "insecureSkipTLSVerify": true}),
    )
    .await;
    let outcome = w.backup("cfg-1").await;
    assert_succeeded(&w, &outcome).await;
}

/// A caBundle asks for verified TLS; an http URL asks for none: refused before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_bundle_with_an_http_url_is_refused() {
    let tls = TlsMaterial::generate().unwrap();
    let token = "s.never-sent-anywhere";
    let w = world(
        "tls-http",
        token,
        json!({"url": "http://127.0.0.1:1", "caBundle": ca_bundle(&tls.ca_pem)}),
    )
    .await;
    let outcome = w.backup("cfg-1").await;
    assert_failed_cleanly(&w, "cfg-1", &outcome, token, &["cabundle", "http"]).await;
}

/// `service` with no scheme ("nothing will be prefixed" in Stash's CRD) means https: the
/// Service name is pinned to loopback through its EndpointSlice and verified against the
/// caBundle (the server certificate names `vault.<ns>.svc`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reference_without_scheme_uses_https() {
    let (bao, tls) = tls_bao().await;
    let port: u16 = bao.addr.rsplit(':').next().unwrap().parse().unwrap();
    let w = world(
        "tls-svc",
        &bao.root_token,
        json!({
            "service": {"scheme": "", "name": "vault", "port": port},
            "caBundle": ca_bundle(&tls.ca_pem),
        }),
    )
    .await;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "vault-x7k2p", "namespace": NS, "labels": {"kubernetes.io/service-name": "vault"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}, "hostname": "vault-0"}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    w.cluster
        .mem()
        .insert("discovery.k8s.io", "endpointslices", slice)
        .unwrap();
    let outcome = w.backup("cfg-1").await;
    assert_succeeded(&w, &outcome).await;
}
