//! A real Kubernetes API server on loopback: etcd 3.4 + kube-apiserver 1.20, TLS with a
//! generated CA, static bearer tokens, RBAC, and the five Stash CRDs.
//!
//! The flags, certificates and CRD installation come from `tests/kube/apiserver.sh`
//! (`prepare`, `install-crds`), the same script a person uses by hand (`up`/`down`); this
//! module owns the two processes so that they die with the test process. The binary is
//! built once by `tests/kube/build.sh` (run by `tests/setup.sh`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::Client;

use super::{
    ChildGuard, TempDir, cache_dir, free_port, http_client, is_executable, is_port_clash,
    wait_ready,
};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Which CRDs to install: Stash's own (what users' clusters already have) or the ones
/// generated from stashless's Rust types (`infra/crds/generated/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrdSet {
    Stash,
    Generated,
}

impl CrdSet {
    pub fn name(self) -> &'static str {
        match self {
            CrdSet::Stash => "stash",
            CrdSet::Generated => "generated",
        }
    }

    /// `STASHLESS_KUBE_CRDS=generated`, else Stash's.
    pub fn from_env() -> CrdSet {
        match std::env::var("STASHLESS_KUBE_CRDS").as_deref() {
            Ok("generated") => CrdSet::Generated,
            _ => CrdSet::Stash,
        }
    }
}

/// A running etcd + kube-apiserver pair, killed on drop.
#[derive(Debug)]
pub struct ApiServer {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Bearer token of `admin` (group `system:masters`).
    pub token: String,
    /// Bearer token of `limited` (no groups: RBAC allows it discovery only).
    pub limited_token: String,
    /// The CA that signed the serving certificate (PEM).
    pub ca_file: PathBuf,
    /// etcd's client URL (its v3 JSON gateway answers there too).
    pub etcd_url: String,
    // Field order is drop order: the API server goes before etcd, the directories last.
    apiserver: ChildGuard,
    etcd: ChildGuard,
    dir: TempDir,
    _etcd_data: TempDir,
}

/// `tests/kube/apiserver.sh`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kube/apiserver.sh")
}

/// `STASHLESS_KUBE_APISERVER`, else where `tests/kube/build.sh` puts it.
pub fn apiserver_binary() -> Result<PathBuf> {
    let path = std::env::var_os("STASHLESS_KUBE_APISERVER")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("kube/bin/kube-apiserver"));
    if is_executable(&path) {
        Ok(path)
    } else {
        bail!(
            "kube-apiserver not found at {}; run `bash tests/kube/build.sh` (or `bash tests/setup.sh`) to build it",
            path.display()
        )
    }
}

fn etcd_binary() -> Result<PathBuf> {
    let path = std::env::var_os("STASHLESS_ETCD")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if is_executable(&path) {
        Ok(path)
    } else {
        bail!(
            "etcd not found at {}; run `bash tests/setup.sh` (installs Debian's etcd-server)",
            path.display()
        )
    }
}

fn run_script(args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .with_context(|| format!("running {} {args:?}", script().display()))?;
    if !out.status.success() {
        bail!(
            "apiserver.sh {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn read_args(path: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

impl ApiServer {
    /// Start a fresh pair with `crds` installed.
    pub async fn start(crds: CrdSet) -> Result<ApiServer> {
        Self::start_with(crds, &[]).await
    }

    /// Like [`ApiServer::start`], with extra kube-apiserver flags (e.g. `--watch-cache=false`).
    pub async fn start_with(crds: CrdSet, extra_args: &[&str]) -> Result<ApiServer> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start(crds, extra_args).await {
                Ok(s) => return Ok(s),
                Err(e) if is_port_clash(&e) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap())
    }

    async fn try_start(crds: CrdSet, extra_args: &[&str]) -> Result<ApiServer> {
        let apiserver_bin = apiserver_binary()?;
        let etcd_bin = etcd_binary()?;
        let dir = TempDir::new("kube")?;
        let etcd_data = TempDir::in_memory("etcd")?;
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let d = dir.path().to_str().context("temp dir path is not UTF-8")?;
        let data = etcd_data.path().join("data");
        run_script(
            &[
                "prepare",
                d,
                &etcd_port.to_string(),
                &peer_port.to_string(),
                &api_port.to_string(),
            ],
            &[("STASHLESS_ETCD_DATA", data.to_str().context("etcd path")?)],
        )?;
        let env: HashMap<String, String> = std::fs::read_to_string(dir.path().join("env"))?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .with_context(|| format!("{k} missing in env"))
        };

        let mut cmd = Command::new(etcd_bin);
        cmd.args(read_args(&dir.path().join("etcd.args"))?);
        let mut etcd = ChildGuard::spawn("etcd", cmd, &dir.path().join("etcd.log"))?;
        let etcd_url = get("ETCD_URL")?;
        let http = http_client();
        let health = format!("{etcd_url}/health");
        wait_ready(&mut etcd, "etcd /health", READY_TIMEOUT, || {
            let req = http.get(&health).timeout(Duration::from_secs(2));
            async move { Ok(req.send().await?.status().is_success()) }
        })
        .await?;

        let mut cmd = Command::new(apiserver_bin);
        cmd.args(read_args(&dir.path().join("kube-apiserver.args"))?)
            .args(extra_args);
        let mut apiserver = ChildGuard::spawn(
            "kube-apiserver",
            cmd,
            &dir.path().join("kube-apiserver.log"),
        )?;
        let url = get("STASHLESS_KUBE_URL")?;
        let token = get("STASHLESS_KUBE_TOKEN")?;
        let ca_file = PathBuf::from(get("STASHLESS_KUBE_CA_FILE")?);
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_file)?)?;
        let tls = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .build()?;
        let readyz = format!("{url}/readyz");
        wait_ready(
            &mut apiserver,
            "kube-apiserver /readyz",
            READY_TIMEOUT,
            || {
                let req = tls
                    .get(&readyz)
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(5));
                async move {
                    Ok(req
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false))
                }
            },
        )
        .await?;
        run_script(&["install-crds", d, crds.name()], &[])?;
        Ok(ApiServer {
            url,
            token,
            limited_token: get("STASHLESS_KUBE_LIMITED_TOKEN")?,
            ca_file,
            etcd_url,
            apiserver,
            etcd,
            dir,
            _etcd_data: etcd_data,
        })
    }

    /// A client as `admin`.
    pub async fn client(&self) -> Result<Client> {
        self.client_as(&self.token).await
    }

    /// A client with another bearer token (e.g. [`ApiServer::limited_token`]).
    pub async fn client_as(&self, token: &str) -> Result<Client> {
        Ok(stashless::cluster::ClusterSource::Url {
            url: self.url.clone(),
            token: Some(token.to_string()),
            ca_file: Some(self.ca_file.clone()),
        }
        .client()
        .await?)
    }

    /// The environment a child process (a function binary, the CLI) needs to reach it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STASHLESS_KUBE_URL", self.url.clone()),
            ("STASHLESS_KUBE_TOKEN", self.token.clone()),
            ("STASHLESS_KUBE_CA_FILE", self.ca_file.display().to_string()),
        ]
    }

    /// Compact etcd's history up to its current revision (through etcd's v3 JSON gateway),
    /// so a watch from an older resourceVersion cannot be resumed. With the API server's
    /// watch cache on (the default) such a watch may still be served from the cache; start
    /// the server with `--watch-cache=false` to see the 410 on demand.
    pub async fn compact(&self) -> Result<i64> {
        let http = http_client();
        let range: serde_json::Value = http
            .post(format!("{}/v3/kv/range", self.etcd_url))
            .json(&serde_json::json!({"key": "AA=="}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let rev: i64 = range["header"]["revision"]
            .as_str()
            .context("etcd range: no header.revision")?
            .parse()?;
        http.post(format!("{}/v3/kv/compaction", self.etcd_url))
            .json(&serde_json::json!({"revision": rev.to_string(), "physical": true}))
            .send()
            .await?
            .error_for_status()?;
        Ok(rev)
    }

    /// The server's log (for failure messages).
    pub fn log_tail(&self) -> String {
        self.apiserver.log_tail(8 * 1024)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether etcd is still running (a test that stops it on purpose can check).
    pub fn etcd_running(&mut self) -> bool {
        self.etcd.exited().is_none()
    }
}
