//! OpenBao helpers the backup/restore tests need beyond the process harness.

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::procs::bao_binary;
use crate::procs::openbao::OpenBao;

impl OpenBao {
    /// Run the real `bao` CLI against this server with the root token.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new(bao_binary()?)
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("VAULT_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.root_token)
            .env("VAULT_TOKEN", &self.root_token)
            .output()
            .await
            .context("running bao")?;
        if !out.status.success() {
            bail!(
                "bao {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Unseal with another cluster's key (after a force restore from that cluster).
    pub async fn unseal_with(&self, key: &str) -> Result<()> {
        let resp = self
            .http()
            .put(self.url("sys/unseal"))
            .json(&json!({ "key": key }))
            .send()
            .await?;
        let v: Value = resp.json().await?;
        if v["sealed"].as_bool() != Some(false) {
            bail!("still sealed after unseal: {v}");
        }
        self.wait_health(false).await
    }

    /// Read a kv-v2 secret with a given token (e.g. the source cluster's root token).
    pub async fn kv_get_with_token(&self, path: &str, token: &str) -> Result<Option<Value>> {
        let resp = self
            .http()
            .get(self.url(&format!("secret/data/{path}")))
            .header("X-Vault-Token", token)
            .send()
            .await?;
        if resp.status() == 404 {
            return Ok(None);
        }
        let status = resp.status();
        let v: Value = resp.json().await?;
        if !status.is_success() {
            bail!("reading {path}: HTTP {status}: {v}");
        }
        Ok(Some(v["data"]["data"].clone()))
    }

    /// `sys/seal-status` of this node.
    pub async fn seal_status(&self) -> Result<Value> {
        Ok(self
            .http()
            .get(self.url("sys/seal-status"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}
