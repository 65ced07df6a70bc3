//! Real OpenBao servers on loopback: a single node ([`OpenBao::start`]) or a
//! raft cluster ([`BaoCluster::start`]), integrated raft storage in a scratch
//! directory, plain HTTP (HTTPS with a test CA: [`OpenBao::start_tls`]), one Shamir
//! unseal key, kv v2 mounted at `secret/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use super::{
    ChildGuard, TempDir, bao_binary, expect_success, free_port, http_client, is_port_clash,
    poll_until, wait_ready,
};

/// How long a node may take to get its HTTP listener up.
const LISTENER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long unsealing / electing a leader may take.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent writers in [`OpenBao::seed`].
const SEED_CONCURRENCY: usize = 16;

/// One OpenBao server process (a single-node cluster, or a member of a
/// [`BaoCluster`]).
#[derive(Debug)]
pub struct OpenBao {
    /// `http://127.0.0.1:PORT` (`https://` from [`OpenBao::start_tls`]), also its `api_addr`.
    pub addr: String,
    /// `https://127.0.0.1:PORT`, its `cluster_addr` (raft + request forwarding).
    pub cluster_addr: String,
    /// Raft node id (`node0`, `node1`, ...).
    pub node_id: String,
    pub root_token: String,
    /// The single Shamir unseal key (hex), threshold 1.
    pub unseal_key: String,
    // Declared before `dir`: fields drop in order, kill before removing files.
    child: Option<ChildGuard>,
    dir: TempDir,
    config: PathBuf,
    log: PathBuf,
    http: reqwest::Client,
    /// Member of a multi-node cluster: after (re)starting it may be a standby.
    clustered: bool,
}

/// Node configuration: loopback listener without TLS (with `tls`: the
/// `cert.pem`/`key.pem` in that directory), raft storage in the node's
/// directory, `performance_multiplier = 1` so that leader elections take ~1 s
/// instead of the production ~5 s.
fn config_hcl(
    data_dir: &Path,
    node_id: &str,
    port: u16,
    cluster_port: u16,
    join: Option<&str>,
    tls: Option<&Path>,
) -> String {
    let retry_join = match join {
        Some(leader) => format!("  retry_join {{\n    leader_api_addr = \"{leader}\"\n  }}\n"),
        None => String::new(),
    };
    let (scheme, listener_tls) = match tls {
        Some(dir) => (
            "https",
            format!(
                "tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            ),
        ),
        None => ("http", "tls_disable = true".to_string()),
    };
    format!(
        r#"ui = false
disable_mlock = true
log_level = "info"
api_addr = "{scheme}://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster_port}"

storage "raft" {{
  path = "{data}"
  node_id = "{node_id}"
  performance_multiplier = 1
  autopilot_reconcile_interval = "1s"
  autopilot_update_interval = "500ms"
{retry_join}}}

listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  {listener_tls}
}}
"#,
        data = data_dir.display(),
    )
}

impl OpenBao {
    /// Start a single-node OpenBao: init (1 share, threshold 1), unseal, wait
    /// until active (`/v1/sys/health` 200) and mount kv v2 at `secret/`.
    pub async fn start() -> Result<OpenBao> {
        OpenBao::start_node(None).await
    }

    /// [`OpenBao::start`] serving HTTPS (`addr` is `https://127.0.0.1:PORT`) with a
    /// server certificate from a fresh test CA ([`TlsMaterial::generate`]); the node's
    /// own client trusts that CA only.
    pub async fn start_tls() -> Result<(OpenBao, TlsMaterial)> {
        let tls = TlsMaterial::generate()?;
        let bao = OpenBao::start_node(Some(&tls)).await?;
        Ok((bao, tls))
    }

    async fn start_node(tls: Option<&TlsMaterial>) -> Result<OpenBao> {
        let started = Instant::now();
        let mut bao = OpenBao::spawn_node("node0", None, None, tls).await?;
        let (root_token, unseal_key) = bao.init().await?;
        bao.root_token = root_token;
        bao.unseal_key = unseal_key;
        bao.unseal().await?;
        bao.mount_kv().await?;
        if std::env::var_os("STASHLESS_PROCS_VERBOSE").is_some() {
            eprintln!("openbao {} active in {:?}", bao.addr, started.elapsed());
        }
        Ok(bao)
    }

    /// A single node whose raft storage holds `n` seed secrets of `value_bytes` each
    /// ([`OpenBao::seed`]), started from a copy of a data directory cached under `cache`
    /// (seeding 1 GiB takes minutes; copying it, seconds). The first call seeds a fresh
    /// node, stops it cleanly and caches its raft directory with its root token and
    /// unseal key. The copy gets new ports: a single-node raft elects itself by node id.
    pub async fn start_seeded(cache: &Path, n: usize, value_bytes: usize) -> Result<OpenBao> {
        let entry = cache.join(format!("openbao-seed-{n}x{value_bytes}"));
        let keys_file = entry.join("keys.json");
        if !keys_file.exists() {
            let mut bao = OpenBao::start().await?;
            bao.seed(n, value_bytes).await?;
            bao.stop();
            let partial = cache.join(format!(".openbao-seed-{n}x{value_bytes}.partial"));
            let _ = std::fs::remove_dir_all(&partial);
            std::fs::create_dir_all(&partial)?;
            copy_dir(&bao.dir.path().join("raft"), &partial.join("raft"))?;
            std::fs::write(
                partial.join("keys.json"),
                serde_json::to_vec(
                    &json!({"root_token": bao.root_token, "unseal_key": bao.unseal_key}),
                )?,
            )?;
            let _ = std::fs::remove_dir_all(&entry);
            std::fs::rename(&partial, &entry)?;
            bao.launch().await?;
            bao.unseal().await?;
            return Ok(bao);
        }
        let keys: Value = serde_json::from_slice(&std::fs::read(&keys_file)?)?;
        let mut bao = OpenBao::spawn_node("node0", None, Some(&entry.join("raft")), None).await?;
        bao.root_token = keys["root_token"].as_str().unwrap_or_default().to_string();
        bao.unseal_key = keys["unseal_key"].as_str().unwrap_or_default().to_string();
        bao.unseal().await?;
        Ok(bao)
    }

    /// Create the node's directory and config and start the process; returns
    /// once its HTTP listener answers (uninitialized, sealed). Retries on new
    /// ports if another process took one. With `tls` it serves HTTPS with that
    /// server certificate and its own client trusts only that CA.
    async fn spawn_node(
        node_id: &str,
        join: Option<&str>,
        copy_data_from: Option<&Path>,
        tls: Option<&TlsMaterial>,
    ) -> Result<OpenBao> {
        let mut last_err = None;
        for _ in 0..3 {
            let dir = TempDir::new(&format!("openbao-{node_id}"))?;
            let port = free_port()?;
            let cluster_port = free_port()?;
            let data = dir.path().join("raft");
            match copy_data_from {
                Some(from) => copy_dir(from, &data)?,
                None => std::fs::create_dir(&data)?,
            }
            if let Some(tls) = tls {
                std::fs::write(dir.path().join("cert.pem"), &tls.cert_pem)?;
                std::fs::write(dir.path().join("key.pem"), &tls.key_pem)?;
            }
            let config = dir.path().join("config.hcl");
            std::fs::write(
                &config,
                config_hcl(
                    &data,
                    node_id,
                    port,
                    cluster_port,
                    join,
                    tls.map(|_| dir.path()),
                ),
            )?;
            let (scheme, http) = match tls {
                Some(tls) => ("https", tls.client()?),
                None => ("http", http_client()),
            };
            let mut bao = OpenBao {
                addr: format!("{scheme}://127.0.0.1:{port}"),
                cluster_addr: format!("https://127.0.0.1:{cluster_port}"),
                node_id: node_id.to_string(),
                root_token: String::new(),
                unseal_key: String::new(),
                log: dir.path().join("openbao.log"),
                dir,
                config,
                child: None,
                http,
                clustered: join.is_some(),
            };
            match bao.launch().await {
                Ok(()) => return Ok(bao),
                Err(e) if is_port_clash(&e) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap())
    }

    /// Start the process on the existing config and wait for its listener.
    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(bao_binary()?);
        cmd.arg("server")
            .arg(format!("-config={}", self.config.display()))
            .current_dir(self.dir.path());
        for var in [
            "BAO_ADDR",
            "VAULT_ADDR",
            "BAO_TOKEN",
            "VAULT_TOKEN",
            "BAO_CACERT",
            "VAULT_CACERT",
        ] {
            cmd.env_remove(var);
        }
        let mut child = ChildGuard::spawn(&format!("openbao {}", self.node_id), cmd, &self.log)?;
        let http = self.http.clone();
        let url = self.url("sys/health");
        wait_ready(&mut child, "the HTTP listener", LISTENER_TIMEOUT, || {
            let req = http.get(&url).timeout(Duration::from_secs(2));
            async move { Ok(req.send().await.map(|_| true)?) }
        })
        .await?;
        self.child = Some(child);
        Ok(())
    }

    /// `PUT /v1/sys/init` with 1 share, threshold 1 → (root token, unseal key).
    async fn init(&self) -> Result<(String, String)> {
        let (token, mut keys) = self.init_shares(1, 1).await?;
        Ok((token, keys.remove(0)))
    }

    /// `PUT /v1/sys/init` with `shares` Shamir shares and `threshold` → (root token, keys),
    /// all registered with the leak scan.
    async fn init_shares(&self, shares: u32, threshold: u32) -> Result<(String, Vec<String>)> {
        let resp = self
            .http
            .put(self.url("sys/init"))
            .json(&json!({"secret_shares": shares, "secret_threshold": threshold}))
            .send()
            .await?;
        let body: Value = expect_success("initializing openbao", resp)
            .await?
            .json()
            .await?;
        let token = body["root_token"]
            .as_str()
            .context("no root_token in sys/init answer")?;
        let keys: Vec<String> = body["keys"]
            .as_array()
            .context("no keys in sys/init answer")?
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        if keys.len() != shares as usize {
            bail!("sys/init gave {} keys, not {shares}", keys.len());
        }
        crate::leaks::secret("Vault root token", token);
        for key in &keys {
            crate::leaks::secret("Vault unseal key", key);
        }
        Ok((token.to_string(), keys))
    }

    /// A single node initialised with `shares` Shamir shares and `threshold`, unsealed with
    /// the first `threshold` of them, kv v2 at `secret/`: the node and all its keys
    /// (`unseal_key` is the first; [`OpenBao::unseal`] cannot unseal it alone).
    pub async fn start_shamir(shares: u32, threshold: u32) -> Result<(OpenBao, Vec<String>)> {
        let mut bao = OpenBao::spawn_node("node0", None, None, None).await?;
        let (root_token, keys) = bao.init_shares(shares, threshold).await?;
        bao.root_token = root_token;
        bao.unseal_key = keys[0].clone();
        for key in keys.iter().take(threshold as usize) {
            let resp = bao
                .http
                .put(bao.url("sys/unseal"))
                .json(&json!({ "key": key }))
                .send()
                .await?;
            expect_success("unsealing", resp).await?;
        }
        bao.wait_health(false).await?;
        bao.mount_kv().await?;
        Ok((bao, keys))
    }

    async fn mount_kv(&self) -> Result<()> {
        let resp = self
            .request(Method::POST, "sys/mounts/secret")
            .json(&json!({"type": "kv", "options": {"version": "2"}}))
            .send()
            .await?;
        expect_success("mounting kv v2 at secret/", resp).await?;
        // A fresh kv v2 mount first "upgrades" itself and answers 400
        // "Upgrading from non-versioned to versioned data" meanwhile: wait
        // until a read of an absent secret gives the normal 404.
        poll_until(
            "kv v2 at secret/ to finish its upgrade",
            ACTIVE_TIMEOUT,
            || async {
                let resp = self
                    .request(Method::GET, "secret/data/stashless-harness-probe")
                    .send()
                    .await?;
                match resp.status() {
                    StatusCode::NOT_FOUND => Ok(Some(())),
                    StatusCode::OK => Ok(Some(())),
                    status => bail!("{status}: {}", resp.text().await.unwrap_or_default().trim()),
                }
            },
        )
        .await
    }

    /// `http://127.0.0.1:PORT/v1/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.addr, path.trim_start_matches('/'))
    }

    /// A request to `/v1/<path>` with the root token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-Vault-Token", &self.root_token)
    }

    /// The node's HTTP client (no redirects are followed unless the caller
    /// builds its own client).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The server's log (stdout+stderr), kept across restarts.
    /// The server's process id, while it runs (for CPU accounting in the benchmark).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.pid())
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// The node's scratch directory (config, raft data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The body of `GET /v1/sys/health` whatever its status (200 active,
    /// 429 standby, 503 sealed, 501 not initialized).
    pub async fn health(&self) -> Result<Value> {
        Ok(self
            .http
            .get(self.url("sys/health"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// The status of `GET /v1/sys/health`: 200 active, 429 standby, 503
    /// sealed, 501 not initialized.
    pub async fn health_status(&self) -> Result<u16> {
        Ok(self
            .http
            .get(self.url("sys/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .status()
            .as_u16())
    }

    /// `GET /v1/sys/leader` (unauthenticated).
    pub async fn leader_info(&self) -> Result<Value> {
        let resp = self.http.get(self.url("sys/leader")).send().await?;
        Ok(expect_success("reading sys/leader", resp)
            .await?
            .json()
            .await?)
    }

    /// Poll until health answers 200 (active), or with `standby_ok` 429 too.
    pub async fn wait_health(&self, standby_ok: bool) -> Result<()> {
        let what = if standby_ok {
            "active or standby"
        } else {
            "active"
        };
        poll_until(
            &format!("openbao {} {} to become {what}", self.node_id, self.addr),
            ACTIVE_TIMEOUT,
            || async {
                let code = self.health_status().await?;
                Ok((code == 200 || (standby_ok && code == 429)).then_some(()))
            },
        )
        .await
        .map_err(|e| self.with_log(e))
    }

    /// Seal (`PUT /v1/sys/seal`) and wait until `sys/seal-status` says sealed.
    pub async fn seal(&self) -> Result<()> {
        let resp = self.request(Method::PUT, "sys/seal").send().await?;
        expect_success("sealing", resp).await?;
        poll_until("openbao to report sealed", ACTIVE_TIMEOUT, || async {
            let status: Value = self
                .http
                .get(self.url("sys/seal-status"))
                .send()
                .await?
                .json()
                .await?;
            Ok((status["sealed"] == json!(true)).then_some(()))
        })
        .await
    }

    /// Unseal with [`Self::unseal_key`] and wait until active (single node)
    /// or active/standby (cluster member). Repeats the unseal call while the
    /// node is still sealed (a node that is joining a cluster accepts the key
    /// only once it has the leader's join challenge).
    pub async fn unseal(&self) -> Result<()> {
        // A node joining a raft cluster takes the key and then joins on its next
        // `retry_join` attempt (every 2 s): submitting the key again every poll can keep
        // a slow join from ever finishing, so submit it at most every 2 s.
        let last_submit: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
        poll_until(
            &format!("openbao {} to unseal", self.node_id),
            ACTIVE_TIMEOUT,
            || async {
                let status: Value = self
                    .http
                    .get(self.url("sys/seal-status"))
                    .send()
                    .await?
                    .json()
                    .await?;
                if status["sealed"] == json!(false) {
                    return Ok(Some(()));
                }
                {
                    let mut last = last_submit.lock().unwrap();
                    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
                        return Ok(None);
                    }
                    *last = Some(std::time::Instant::now());
                }
                let resp = self
                    .http
                    .put(self.url("sys/unseal"))
                    .json(&json!({"key": self.unseal_key}))
                    .send()
                    .await?;
                let body: Value = expect_success("unsealing", resp).await?.json().await?;
                Ok((body["sealed"] == json!(false)).then_some(()))
            },
        )
        .await
        .map_err(|e| self.with_log(e))?;
        self.wait_health(self.clustered).await
    }

    /// Stop the process (SIGTERM, then SIGKILL after 10 s). Data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.terminate(Duration::from_secs(10));
        }
    }

    /// Whether the process is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.exited().is_none())
    }

    /// Stop (if running) and start again on the same data directory and
    /// ports, then unseal and wait until active (or standby in a cluster).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch().await?;
        self.unseal().await
    }

    /// Write kv v2 `secret/data/<path>` with `data` (a JSON object).
    pub async fn kv_put(&self, path: &str, data: Value) -> Result<()> {
        let resp = self
            .request(Method::POST, &format!("secret/data/{path}"))
            .json(&json!({"data": data}))
            .send()
            .await?;
        expect_success(&format!("writing secret/{path}"), resp).await?;
        Ok(())
    }

    /// Latest version of kv v2 `secret/<path>`; `None` if absent or deleted.
    pub async fn kv_get(&self, path: &str) -> Result<Option<Value>> {
        let resp = self
            .request(Method::GET, &format!("secret/data/{path}"))
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: Value = expect_success(&format!("reading secret/{path}"), resp)
            .await?
            .json()
            .await?;
        let data = &body["data"]["data"];
        Ok(if data.is_null() {
            None
        } else {
            Some(data.clone())
        })
    }

    /// Delete kv v2 `secret/<path>` with all its versions (metadata delete).
    pub async fn kv_delete(&self, path: &str) -> Result<()> {
        let resp = self
            .request(Method::DELETE, &format!("secret/metadata/{path}"))
            .send()
            .await?;
        expect_success(&format!("deleting secret/{path}"), resp).await?;
        Ok(())
    }

    /// Write `n` secrets `secret/seed/<i>` = `{"v": <value_bytes characters,
    /// see [`random_ish`]>}` with 16 concurrent writers. OpenBao stores values
    /// encrypted, so a raft snapshot grows by about `n * value_bytes`
    /// (measured: 128 x 512 KiB -> 64.1 MiB snapshot in ~6-12 s on 2 cores,
    /// ~10 MiB/s). Keep `value_bytes` <= ~700 KB: a raft log entry is limited
    /// to 1 MiB (`max_entry_size`); 1 MiB values are refused (500 "put failed
    /// due to value being too large").
    pub async fn seed(&self, n: usize, value_bytes: usize) -> Result<()> {
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..SEED_CONCURRENCY.min(n.max(1)) {
            let next = next.clone();
            let http = self.http.clone();
            let base = self.url("secret/data/seed");
            let token = self.root_token.clone();
            workers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let body = json!({"data": {"v": random_ish(i as u64, value_bytes)}});
                    let resp = http
                        .post(format!("{base}/{i}"))
                        .header("X-Vault-Token", &token)
                        .json(&body)
                        .send()
                        .await?;
                    expect_success(&format!("seeding secret/seed/{i}"), resp).await?;
                }
            });
        }
        while let Some(res) = workers.join_next().await {
            res??;
        }
        if std::env::var_os("STASHLESS_PROCS_VERBOSE").is_some() {
            let secs = started.elapsed().as_secs_f64();
            let mib = (n * value_bytes) as f64 / (1024.0 * 1024.0);
            eprintln!(
                "seeded {n} x {value_bytes} B = {mib:.1} MiB in {secs:.1}s ({:.1} MiB/s)",
                mib / secs
            );
        }
        Ok(())
    }

    /// `GET /v1/sys/storage/raft/snapshot` (must be the active node): the
    /// gzip'd tar snapshot.
    pub async fn snapshot(&self) -> Result<Vec<u8>> {
        let resp = self
            .request(Method::GET, "sys/storage/raft/snapshot")
            .send()
            .await?;
        Ok(expect_success("taking a raft snapshot", resp)
            .await?
            .bytes()
            .await?
            .to_vec())
    }

    /// `POST /v1/sys/storage/raft/snapshot-force` (or `snapshot` when
    /// `force` is false) with `snapshot` (must be the active node), then wait
    /// until it serves requests again: the POST answers 204 at once, but
    /// authenticated requests are then held for ~5 s while the node
    /// re-initializes (health stays 200 meanwhile).
    pub async fn restore(&self, snapshot: Vec<u8>, force: bool) -> Result<()> {
        let path = if force {
            "sys/storage/raft/snapshot-force"
        } else {
            "sys/storage/raft/snapshot"
        };
        let resp = self
            .request(Method::POST, path)
            .body(snapshot)
            .send()
            .await?;
        expect_success("restoring a raft snapshot", resp).await?;
        self.wait_serving().await
    }

    /// Wait until the node serves authenticated requests after a restore (they are held
    /// while it reloads the restored keyring; 1 GiB takes longer than a start-up).
    pub async fn wait_serving(&self) -> Result<()> {
        self.wait_health(self.clustered).await?;
        poll_until(
            "openbao to serve requests after a restore",
            2 * ACTIVE_TIMEOUT,
            || async {
                // 403 (a snapshot of another cluster brings its own tokens) also
                // means it is serving again.
                let status = self
                    .request(Method::GET, "sys/mounts")
                    .send()
                    .await?
                    .status();
                Ok((status.is_success() || status == StatusCode::FORBIDDEN).then_some(()))
            },
        )
        .await
    }

    /// Create a token with these policies (plus `default`) and a 1 h TTL.
    pub async fn create_token(&self, policies: &[&str]) -> Result<String> {
        let resp = self
            .request(Method::POST, "auth/token/create")
            .json(&json!({"policies": policies, "ttl": "1h"}))
            .send()
            .await?;
        let body: Value = expect_success("creating a token", resp)
            .await?
            .json()
            .await?;
        let token = body["auth"]["client_token"]
            .as_str()
            .context("no auth.client_token in answer")?;
        crate::leaks::secret("Vault token", token);
        Ok(token.to_string())
    }

    /// Write ACL policy `name` (`PUT /v1/sys/policies/acl/<name>`).
    pub async fn put_policy(&self, name: &str, hcl: &str) -> Result<()> {
        let resp = self
            .request(Method::PUT, &format!("sys/policies/acl/{name}"))
            .json(&json!({"policy": hcl}))
            .send()
            .await?;
        expect_success(&format!("writing policy {name}"), resp).await?;
        Ok(())
    }

    fn with_log(&self, e: anyhow::Error) -> anyhow::Error {
        e.context(format!(
            "openbao {} ({}); log {}:\n{}",
            self.node_id,
            self.addr,
            self.log.display(),
            super::log_tail(&self.log, super::LOG_TAIL_BYTES)
        ))
    }
}

/// Certificates for an HTTPS OpenBao, made with the `openssl` CLI: a fresh CA, a
/// server certificate it signed for `127.0.0.1`, `localhost` and `vault.<NS>.svc` (a
/// `service` AppBinding reference pinned to loopback), and an unrelated CA.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    /// PEM of another CA that signed nothing here (a wrong `caBundle`).
    pub other_ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl TlsMaterial {
    pub fn generate() -> Result<TlsMaterial> {
        let dir = TempDir::new("tls")?;
        let d = dir.path();
        // Arguments split on whitespace: none here contains a space.
        let openssl = |args: &str| -> Result<()> {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(d)
                .output()
                .context("running openssl")?;
            if !out.status.success() {
                bail!("openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        for (name, cn) in [("ca", "stashless-test-ca"), ("other-ca", "stashless-other")] {
            openssl(&format!(
                "req -x509 -days 2 {ec} -subj /CN={cn} -keyout {name}.key -out {name}.pem \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign"
            ))?;
        }
        openssl(&format!(
            "req -new {ec} -subj /CN=localhost -keyout key.pem -out server.csr"
        ))?;
        std::fs::write(
            d.join("ext.cnf"),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\n\
                 subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:vault.{}.svc\n",
                crate::NS
            ),
        )?;
        openssl(
            "x509 -req -days 2 -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 \
             -extfile ext.cnf -out cert.pem",
        )?;
        let read =
            |f: &str| std::fs::read_to_string(d.join(f)).with_context(|| format!("reading {f}"));
        Ok(TlsMaterial {
            ca_pem: read("ca.pem")?,
            other_ca_pem: read("other-ca.pem")?,
            cert_pem: read("cert.pem")?,
            key_pem: read("key.pem")?,
        })
    }

    /// Like the harness's plain client, trusting [`Self::ca_pem`] only.
    fn client(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(
                self.ca_pem.as_bytes(),
            )?)
            .build()?)
    }
}

/// `cp -a from to` (to must not exist).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cp -a {} {}: {status}", from.display(), to.display());
    }
    Ok(())
}

/// A value of exactly `len` bytes for secret number `seed`: `"<seed>:"`
/// then a window of a fixed 1 MiB pseudo-random pool (64-letter alphabet, no
/// JSON escaping). Cheap to build (a copy, not a PRNG run per byte), and as
/// OpenBao stores values encrypted, snapshots do not compress them anyway.
pub fn random_ish(seed: u64, len: usize) -> String {
    const POOL_LEN: usize = 1 << 20;
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut state: u64 = 0x243F_6A88_85A3_08D3;
        let mut pool = Vec::with_capacity(POOL_LEN);
        while pool.len() < POOL_LEN {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let z = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            pool.extend((0..10).map(|k| ALPHABET[((z >> (6 * k)) & 63) as usize]));
        }
        pool.truncate(POOL_LEN);
        pool
    });
    let mut out = format!("{seed}:").into_bytes();
    out.truncate(len);
    let mut offset = (seed as usize).wrapping_mul(7919) % POOL_LEN;
    while out.len() < len {
        let take = (len - out.len()).min(POOL_LEN - offset);
        out.extend_from_slice(&pool[offset..offset + take]);
        offset = 0;
    }
    String::from_utf8(out).expect("ASCII")
}

/// A raft cluster of OpenBao nodes on loopback: node 0 is initialized and
/// becomes the first leader, the others `retry_join` it
/// (`leader_api_addr`); all share the unseal key and root token.
///
/// Observed with OpenBao 2.7.2 (what a standby does):
/// * `GET /v1/sys/storage/raft/snapshot` on a standby: 200 with a snapshot
///   of the standby's *own* raft state (no 307, not forwarded; it may lag
///   the leader by the entries it has not applied yet).
/// * `POST /v1/sys/storage/raft/snapshot-force` with a valid snapshot on a
///   standby: 204, but nothing is restored ("node is not the leader" in its
///   log) and that standby seals itself. Restore only on the active node.
/// * Reads on a standby are served locally: a write just made on the leader
///   may not be visible there for a few tens of ms.
/// * `GET /v1/sys/leader` on a sealed node: 503 `{"errors":["Vault is sealed"]}`.
#[derive(Debug)]
pub struct BaoCluster {
    pub nodes: Vec<OpenBao>,
    /// Index of the last leader seen by `start`, `leader_index`, `step_down`.
    leader: AtomicUsize,
}

impl BaoCluster {
    /// Start `n` nodes, init and unseal node 0, mount kv v2, unseal the
    /// others and wait until all `n` are raft voters and one is active.
    /// Start an `n`-node cluster; if it does not form (a join stuck on a loaded machine),
    /// tear it down and start a fresh one, once. Only set-up is retried, never a test.
    pub async fn start(n: usize) -> Result<BaoCluster> {
        match Self::start_once(n).await {
            Ok(c) => Ok(c),
            Err(first) => {
                eprintln!(
                    "the {n}-node OpenBao cluster did not form ({first:#}); starting a fresh one"
                );
                Self::start_once(n).await
            }
        }
    }

    async fn start_once(n: usize) -> Result<BaoCluster> {
        if n == 0 {
            bail!("a cluster needs at least one node");
        }
        let mut first = OpenBao::spawn_node("node0", None, None, None).await?;
        first.clustered = n > 1;
        let join = first.addr.clone();
        let mut nodes = vec![first];
        // The others start concurrently (each takes ~1 s to listen).
        let mut joining = tokio::task::JoinSet::new();
        for i in 1..n {
            let join = join.clone();
            joining.spawn(async move {
                (
                    i,
                    OpenBao::spawn_node(&format!("node{i}"), Some(&join), None, None).await,
                )
            });
        }
        let mut others = Vec::new();
        while let Some(res) = joining.join_next().await {
            let (i, node) = res?;
            others.push((i, node?));
        }
        others.sort_by_key(|(i, _)| *i);
        nodes.extend(others.into_iter().map(|(_, node)| node));
        let (root_token, unseal_key) = nodes[0].init().await?;
        for node in &mut nodes {
            node.root_token = root_token.clone();
            node.unseal_key = unseal_key.clone();
        }
        nodes[0].unseal().await?;
        nodes[0].wait_health(false).await?;
        nodes[0].mount_kv().await?;
        // Joining nodes are promoted from non-voter to voter by autopilot
        // after `server_stabilization_time` (10 s by default): shorten it.
        let resp = nodes[0]
            .request(Method::POST, "sys/storage/raft/autopilot/configuration")
            .json(&json!({"server_stabilization_time": "1s", "last_contact_threshold": "2s"}))
            .send()
            .await?;
        expect_success("configuring raft autopilot", resp).await?;
        // Unseal the others together: each joins on its next `retry_join`
        // attempt (every 2 s) once it has the key.
        let mut unsealing = tokio::task::JoinSet::new();
        for node in nodes.drain(1..) {
            unsealing.spawn(async move {
                let res = node.unseal().await;
                (node, res)
            });
        }
        let mut others = Vec::new();
        while let Some(res) = unsealing.join_next().await {
            let (node, res) = res?;
            res?;
            others.push(node);
        }
        others.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        nodes.extend(others);
        let cluster = BaoCluster {
            nodes,
            leader: AtomicUsize::new(0),
        };
        cluster.wait_voters(n).await?;
        cluster.leader_index().await?;
        Ok(cluster)
    }

    /// The raft configuration (`GET /v1/sys/storage/raft/configuration` on
    /// the leader): `data.config.servers[]` with `node_id`, `address`,
    /// `leader`, `voter`.
    pub async fn raft_configuration(&self) -> Result<Value> {
        let leader = &self.nodes[self.leader.load(Ordering::Relaxed)];
        let resp = leader
            .request(Method::GET, "sys/storage/raft/configuration")
            .send()
            .await?;
        Ok(expect_success("reading raft configuration", resp)
            .await?
            .json()
            .await?)
    }

    async fn wait_voters(&self, n: usize) -> Result<()> {
        poll_until(&format!("{n} raft voters"), ACTIVE_TIMEOUT, || async {
            let config = self.raft_configuration().await?;
            let voters = config["data"]["config"]["servers"]
                .as_array()
                .map(|servers| servers.iter().filter(|s| s["voter"] == json!(true)).count())
                .unwrap_or(0);
            Ok((voters == n).then_some(()))
        })
        .await
    }

    /// Index of the active node (the one whose `/v1/sys/health` is 200),
    /// polling while there is none (during an election).
    pub async fn leader_index(&self) -> Result<usize> {
        let idx = poll_until("an active openbao node", ACTIVE_TIMEOUT, || async {
            for (i, node) in self.nodes.iter().enumerate() {
                if node.child.is_some() && matches!(node.health_status().await, Ok(200)) {
                    return Ok(Some(i));
                }
            }
            Ok(None)
        })
        .await?;
        self.leader.store(idx, Ordering::Relaxed);
        Ok(idx)
    }

    /// The last leader seen (by `start`, `leader_index` or `step_down`).
    pub fn leader(&self) -> &OpenBao {
        &self.nodes[self.leader.load(Ordering::Relaxed)]
    }

    /// A node that is not the last leader seen (see [`Self::leader`]).
    pub fn standby(&self) -> &OpenBao {
        let leader = self.leader.load(Ordering::Relaxed);
        &self.nodes[(leader + 1) % self.nodes.len()]
    }

    /// `PUT /v1/sys/step-down` on the leader, then wait until another node is
    /// active (the one that stepped down comes back as a standby).
    pub async fn step_down(&self) -> Result<()> {
        let old = self.leader_index().await?;
        let resp = self.nodes[old]
            .request(Method::PUT, "sys/step-down")
            .send()
            .await?;
        expect_success("stepping down", resp).await?;
        let new = poll_until(
            "a new active openbao node after step-down",
            ACTIVE_TIMEOUT,
            || async {
                for (i, node) in self.nodes.iter().enumerate() {
                    if i != old
                        && node.child.is_some()
                        && matches!(node.health_status().await, Ok(200))
                    {
                        return Ok(Some(i));
                    }
                }
                Ok(None)
            },
        )
        .await?;
        self.leader.store(new, Ordering::Relaxed);
        // The old leader must be back as a standby (not stuck sealed).
        self.nodes[old].wait_health(true).await
    }
}
