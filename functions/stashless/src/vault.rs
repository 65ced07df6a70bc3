//! Vault/OpenBao over HTTP: health, active-node discovery, the raft snapshot stream out
//! and (for restores) in. Knows nothing of Kubernetes or S3.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// How to reach one Vault cluster, resolved from an AppBinding.
#[derive(Clone)]
pub struct VaultTarget {
    /// Base address, e.g. `https://vault.vault.svc:8200` (no trailing slash).
    pub addr: String,
    /// The Vault token: from a Secret, or empty until [`Vault::login_aws`] fills it.
    pub token: String,
    /// Log in with the function's IAM role instead of a token Secret (AppBinding
    /// `spec.parameters.awsAuth`).
    pub aws_login: Option<AwsLogin>,
    /// Host names pinned to addresses (cluster DNS names resolved through EndpointSlices).
    pub pins: Vec<(String, Vec<std::net::IpAddr>)>,
    /// PEM CA bundle to trust, from the AppBinding's `caBundle`: the only roots trusted when
    /// set (public and platform roots otherwise).
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_tls_verify: bool,
}

/// Vault's `aws` auth method, IAM flavour: which mount and role to log in as.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsLogin {
    /// Auth mount path, `aws` unless the AppBinding says otherwise.
    pub mount: String,
    pub role: String,
    /// `iam_server_id_header_value` Vault expects, if it is configured with one.
    pub server_id: Option<String>,
    /// Sign for `sts.<region>.amazonaws.com` instead of the global endpoint.
    pub sts_region: Option<String>,
}

impl fmt::Debug for VaultTarget {
    // The token never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultTarget")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .field("aws_login", &self.aws_login)
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .finish()
    }
}

/// `GET /v1/sys/health` (with standby/sealed codes accepted).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Health {
    #[serde(default)]
    pub initialized: bool,
    #[serde(default)]
    pub sealed: bool,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub cluster_name: Option<String>,
}

/// `GET /v1/sys/seal-status`: the seal's type, and for Shamir its shares and threshold.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct SealStatus {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub initialized: bool,
    #[serde(default)]
    pub sealed: bool,
    /// Threshold.
    #[serde(default)]
    pub t: u32,
    /// Shares.
    #[serde(default)]
    pub n: u32,
    #[serde(default)]
    pub progress: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct Leader {
    #[serde(default)]
    is_self: bool,
    #[serde(default)]
    leader_address: String,
}

#[derive(Debug, Clone)]
pub struct Vault {
    http: reqwest::Client,
    target: VaultTarget,
}

impl Vault {
    pub fn new(target: VaultTarget) -> Result<Vault> {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A stalled snapshot stream must fail, not hang until the deadline.
            .read_timeout(Duration::from_secs(60))
            // A streamed body cannot follow a redirect; we find the active node ourselves.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &target.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::Vault {
                addr: target.addr.clone(),
                message: format!("the AppBinding's caBundle is not a PEM certificate bundle: {e}"),
                kind: ErrorKind::Invalid,
                source: Some(Box::new(e)),
            })?;
            if certs.is_empty() {
                return Err(Error::Vault {
                    addr: target.addr.clone(),
                    message: "the AppBinding's caBundle holds no PEM certificate".into(),
                    kind: ErrorKind::Invalid,
                    source: None,
                });
            }
            // The caBundle is the whole trust: no public or platform CA may vouch for Vault.
            builder = builder.tls_certs_only(certs);
        }
        if target.insecure_skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        for (host, ips) in &target.pins {
            // The port comes from the URL; reqwest ignores the one given here.
            let addrs: Vec<std::net::SocketAddr> = ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, 0))
                .collect();
            builder = builder.resolve_to_addrs(host, &addrs);
        }
        let http = builder.build().map_err(|e| Error::Vault {
            addr: target.addr.clone(),
            message: format!("building the HTTP client: {e}"),
            kind: ErrorKind::Invalid,
            source: Some(Box::new(e)),
        })?;
        Ok(Vault { http, target })
    }

    /// The token as a header value marked sensitive, so no HTTP-layer log prints it.
    fn token_header(&self) -> reqwest::header::HeaderValue {
        let mut v = reqwest::header::HeaderValue::from_str(&self.target.token)
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        v.set_sensitive(true);
        v
    }

    pub fn addr(&self) -> &str {
        &self.target.addr
    }

    /// What it was opened with (address, pins, CA); the token stays inside.
    pub fn target(&self) -> &VaultTarget {
        &self.target
    }

    /// How this target wants to log in with AWS IAM, if it does.
    pub fn aws_login(&self) -> Option<&AwsLogin> {
        self.target.aws_login.as_ref()
    }

    /// `POST /v1/auth/<mount>/login` on `node` with a signed GetCallerIdentity request; the
    /// token Vault answers is used for everything after.
    pub async fn login_aws(
        &mut self,
        node: &str,
        login: &AwsLogin,
        request: &crate::aws_login::CallerIdentityRequest,
    ) -> Result<()> {
        use base64::Engine;
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let headers: std::collections::BTreeMap<&str, Vec<&str>> = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), vec![v.as_str()]))
            .collect();
        let body = serde_json::json!({
            "role": login.role,
            "iam_http_request_method": request.method,
            "iam_request_url": b64(request.url.as_bytes()),
            "iam_request_body": b64(request.body.as_bytes()),
            "iam_request_headers": b64(serde_json::to_string(&headers).unwrap_or_default().as_bytes()),
        });
        let what = format!(
            "logging in as role {:?} on auth/{}",
            login.role, login.mount
        );
        let resp = self
            .http
            .post(format!("{node}/v1/auth/{}/login", login.mount))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.transport_err(node, &what, e))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if matches!(status.as_u16(), 400 | 401 | 403) {
            return Err(self.err(
                node,
                format!(
                    "{what}: Vault refused the IAM login (HTTP {status}): {}; check that role {:?} exists on auth/{} with auth_type=iam and a bound_iam_principal_arn matching the function's IAM role",
                    error_detail(&text),
                    login.role,
                    login.mount
                ),
                false,
            ));
        }
        if !status.is_success() {
            return Err(self.api_error(node, status, &text, &what));
        }
        let token = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["auth"]["client_token"].as_str().map(str::to_string))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.err(
                    node,
                    format!("{what}: the answer carries no client_token"),
                    false,
                )
            })?;
        self.target.token = token;
        Ok(())
    }

    fn err(&self, addr: &str, message: impl Into<String>, retryable: bool) -> Error {
        Error::Vault {
            addr: addr.to_string(),
            message: message.into(),
            kind: ErrorKind::retry_helps(retryable),
            source: None,
        }
    }

    fn transport_err(&self, addr: &str, what: &str, e: reqwest::Error) -> Error {
        let kind = if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "timed out"
        } else {
            "request failed"
        };
        // reqwest's Display carries the URL, never headers: no token leaks here.
        let chain = error_chain(&e);
        let hint = if chain.contains("certificate") {
            " (TLS: the AppBinding's spec.clientConfig.caBundle must hold the CA that signed Vault's certificate, for this host name)"
        } else {
            ""
        };
        self.err(addr, format!("{what}: {kind}: {chain}{hint}"), true)
    }

    /// `GET /v1/sys/health` on `addr` (the configured address when None).
    pub async fn health(&self, addr: Option<&str>) -> Result<Health> {
        let addr = addr.unwrap_or(&self.target.addr);
        let url = format!(
            "{addr}/v1/sys/health?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200"
        );
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport_err(addr, "reading health", e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.err(
                addr,
                format!("health answered HTTP {status}"),
                status.is_server_error(),
            ));
        }
        resp.json()
            .await
            .map_err(|e| self.transport_err(addr, "reading health", e))
    }

    /// The active node's API address, confirmed. Snapshots must be read from and written to
    /// the active node: a standby answers a snapshot GET with its own, possibly lagging,
    /// local copy, and accepts a restore (204) without applying it.
    pub async fn active_node(&self) -> Result<String> {
        let addr = &self.target.addr;
        let resp = self
            .http
            .get(format!("{addr}/v1/sys/leader"))
            .send()
            .await
            .map_err(|e| self.transport_err(addr, "finding the active node", e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(self.api_error(addr, status, &body, "finding the active node"));
        }
        let leader: Leader = resp
            .json()
            .await
            .map_err(|e| self.transport_err(addr, "reading /v1/sys/leader", e))?;
        let node = if leader.is_self {
            addr.clone()
        } else if leader.leader_address.is_empty() {
            return Err(self.err(
                addr,
                "no active node is known (a leader election is in progress): try again shortly",
                true,
            ));
        } else {
            let leader_addr = leader.leader_address.trim_end_matches('/').to_string();
            // An https AppBinding never sends its token to a plain-http leader address.
            if is_https(addr) && !is_https(&leader_addr) {
                return Err(self.err(
                    addr,
                    format!("the active node's address {leader_addr:?} (sys/leader) is not https while the AppBinding's is: refusing to send the token in clear"),
                    false,
                ));
            }
            leader_addr
        };
        let health = self.health(Some(&node)).await?;
        if health.sealed {
            return Err(self.err(
                &node,
                "the active node is sealed: unseal it, then run again",
                true,
            ));
        }
        if health.standby {
            return Err(self.err(&node, "the node named as leader reports standby (leadership is changing): try again shortly", true));
        }
        Ok(node)
    }

    /// Start `GET /v1/sys/storage/raft/snapshot` on `node`; the body streams as it arrives.
    pub async fn snapshot(&self, node: &str) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let resp = self
            .http
            .get(format!("{node}/v1/sys/storage/raft/snapshot"))
            .header("X-Vault-Token", self.token_header())
            .send()
            .await
            .map_err(|e| self.transport_err(node, "starting the snapshot", e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(self.api_error(node, status, &body, "taking a raft snapshot"));
        }
        let node = node.to_string();
        Ok(resp.bytes_stream().map(move |r| {
            r.map_err(|e| Error::Vault {
                addr: node.clone(),
                message: format!("snapshot stream broke: {}", error_chain(&e)),
                kind: ErrorKind::Unavailable,
                source: None,
            })
        }))
    }

    /// `POST /v1/sys/storage/raft/snapshot[-force]` on `node` with a streamed body. The body
    /// is not replayable, so this must go to the active node directly (no redirects). If the
    /// body stream yields an error, the request is cut and Vault rejects the partial upload.
    pub async fn restore<S>(&self, node: &str, body: S, force: bool) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let path = if force { "snapshot-force" } else { "snapshot" };
        let resp = self
            .http
            .post(format!("{node}/v1/sys/storage/raft/{path}"))
            .header("X-Vault-Token", self.token_header())
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| self.transport_err(node, "sending the snapshot", e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            return Err(self.err(
                node,
                format!("answered HTTP {status} (a standby redirecting): the restore must go to the active node"),
                true,
            ));
        }
        let body = resp.text().await.unwrap_or_default();
        Err(self.api_error(node, status, &body, "restoring the snapshot"))
    }

    /// Vault's state once a restore has settled. After a snapshot is applied, Vault holds
    /// authenticated requests (about 5 s) while it re-reads the restored keyring, then
    /// serves, or seals itself when the snapshot's root key is sealed with other keys. One
    /// authenticated request waits that out; health read after it is the real state.
    ///
    /// OpenBao applies the snapshot in a goroutine holding the state lock and seals on
    /// failure before it lets go (`handleStorageRaftSnapshotWrite`), so a request that was
    /// held sees the outcome. One more look shortly after covers a request that slipped in
    /// before that goroutine took the lock.
    pub async fn settle_after_restore(&self, node: &str) -> Result<Health> {
        let _ = self
            .http
            .get(format!("{node}/v1/auth/token/lookup-self"))
            .header("X-Vault-Token", self.token_header())
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        let health = self.health(Some(node)).await?;
        if health.sealed {
            return Ok(health);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        self.health(Some(node)).await
    }

    /// `GET /v1/sys/seal-status` on `addr` (unauthenticated).
    pub async fn seal_status(&self, addr: &str) -> Result<SealStatus> {
        let resp = self
            .http
            .get(format!("{addr}/v1/sys/seal-status"))
            .send()
            .await
            .map_err(|e| self.transport_err(addr, "reading the seal status", e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(self.api_error(addr, status, &body, "reading the seal status"));
        }
        resp.json()
            .await
            .map_err(|e| self.transport_err(addr, "reading the seal status", e))
    }

    /// The API address of every node of the cluster (`GET /v1/sys/ha-status` on `node`),
    /// `node` first.
    pub async fn node_addresses(&self, node: &str) -> Result<Vec<String>> {
        let what = "listing the cluster's nodes (sys/ha-status)";
        let resp = self
            .http
            .get(format!("{node}/v1/sys/ha-status"))
            .header("X-Vault-Token", self.token_header())
            .send()
            .await
            .map_err(|e| self.transport_err(node, what, e))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(self.api_error(node, status, &body, what));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|_| self.err(node, format!("{what}: the answer is not JSON"), true))?;
        let mut nodes = vec![node.to_string()];
        for n in v["nodes"].as_array().into_iter().flatten() {
            if let Some(a) = n["api_address"].as_str().map(|a| a.trim_end_matches('/'))
                && !a.is_empty()
                && !nodes.iter().any(|x| x == a)
            {
                nodes.push(a.to_string());
            }
        }
        Ok(nodes)
    }

    /// Unseal `addr` with `keys`, one share at a time, until it reports unsealed. Vault
    /// discards a partial attempt that another caller left (`reset` first).
    pub async fn unseal(&self, addr: &str, keys: &[String]) -> Result<SealStatus> {
        let what = "unsealing";
        let mut last = self.seal_status(addr).await?;
        if !last.sealed {
            return Ok(last);
        }
        let put = |body: serde_json::Value| {
            self.http
                .put(format!("{addr}/v1/sys/unseal"))
                .json(&body)
                .send()
        };
        // The node may expect another number of shares than the escrow holds (its seal
        // configuration is still its own after another cluster's snapshot): the shares it
        // takes are made from the key the escrowed ones combine into.
        let shares = crate::keys::shares_for(keys, last.t).ok_or_else(|| {
            self.err(
                addr,
                "the unseal keys are not Shamir shares that combine into one key",
                false,
            )
        })?;
        let keys = &shares[..];
        if last.progress > 0 {
            put(serde_json::json!({"reset": true}))
                .await
                .map_err(|e| self.transport_err(addr, what, e))?;
        }
        for key in keys {
            let resp = put(serde_json::json!({ "key": key }))
                .await
                .map_err(|e| self.transport_err(addr, what, e))?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                // Vault's answer names the problem ("invalid key"), never the key.
                return Err(self.api_error(addr, status, &body, what));
            }
            last = serde_json::from_str(&body)
                .map_err(|_| self.err(addr, format!("{what}: the answer is not JSON"), true))?;
            if !last.sealed {
                return Ok(last);
            }
        }
        Err(self.err(
            addr,
            format!(
                "still sealed after {} unseal key(s) (threshold {}, progress {}): these keys do not open this cluster",
                keys.len(),
                last.t,
                last.progress
            ),
            false,
        ))
    }

    /// Use `token` from now on (after a restore, the tokens of the snapshot's cluster are
    /// the valid ones).
    pub fn set_token(&mut self, token: String) {
        self.target.token = token;
    }

    /// One authenticated request (`auth/token/lookup-self`) on `node` succeeds.
    pub async fn check_token(&self, node: &str) -> Result<()> {
        let what = "an authenticated request (auth/token/lookup-self)";
        let resp = self
            .http
            .get(format!("{node}/v1/auth/token/lookup-self"))
            .header("X-Vault-Token", self.token_header())
            .send()
            .await
            .map_err(|e| self.transport_err(node, what, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(self.api_error(node, status, &body, what))
    }

    /// Turn a Vault error answer into a message a person can act on.
    fn api_error(&self, addr: &str, status: reqwest::StatusCode, body: &str, what: &str) -> Error {
        let mut detail = error_detail(body);
        // A proxy in front of Vault may echo the request back: never carry the token on.
        if self.target.token.len() >= 4 {
            detail = detail.replace(&self.target.token, "<token>");
        }
        let (message, retryable) = match status.as_u16() {
            403 => (
                format!(
                    "{what}: permission denied (HTTP 403): the token in the AppBinding's Secret is invalid, expired, or its policy lacks `read` on sys/storage/raft/snapshot ({detail})"
                ),
                false,
            ),
            503 if detail.to_lowercase().contains("sealed") => (
                format!("{what}: Vault is sealed (HTTP 503): unseal it, then run the backup again"),
                true,
            ),
            code if code >= 500 => (format!("{what}: HTTP {status}: {detail}"), true),
            _ => (format!("{what}: HTTP {status}: {detail}"), false),
        };
        self.err(addr, message, retryable)
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

/// Vault's `errors` array joined, else the start of the body.
fn error_detail(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errors").cloned())
        .and_then(|e| e.as_array().cloned())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// `url` starts with `https://` (scheme compared case-insensitively).
fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ca_pem: Option<&[u8]>) -> VaultTarget {
        VaultTarget {
            addr: "https://vault.example:8200".into(),
            token: "s.secret-token".into(),
            aws_login: None,
            pins: Vec::new(),
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            insecure_skip_tls_verify: false,
        }
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        let e = Vault::new(target(Some(b"not a certificate"))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("caBundle"), "{msg}");
        assert!(!msg.contains("secret-token"), "{msg}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn https_is_recognised_whatever_its_case() {
        assert!(is_https("https://10.0.0.1:8200"));
        assert!(is_https("HTTPS://vault:8200"));
        assert!(!is_https("http://10.0.0.1:8200"));
        assert!(!is_https("10.0.0.1:8200"));
        assert!(!is_https(""));
    }
}
