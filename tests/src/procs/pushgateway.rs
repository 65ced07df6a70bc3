//! A real Prometheus Pushgateway on loopback (no persistence, admin API on).

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::OnceCell;

use super::{
    ChildGuard, TempDir, cleanup_at_exit, expect_success, free_port, http_client, is_port_clash,
    pushgateway_binary, wait_ready,
};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Pushgateway {
    /// `http://127.0.0.1:PORT` (push to `{url}/metrics/job/<job>`).
    pub url: String,
    child: ChildGuard,
    dir: TempDir,
}

impl Pushgateway {
    /// Start a Pushgateway owned by the caller (killed on drop).
    pub async fn start() -> Result<Pushgateway> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(pg) => return Ok(pg),
                Err(e) if is_port_clash(&e) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap())
    }

    async fn try_start() -> Result<Pushgateway> {
        let dir = TempDir::new("pushgateway")?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(pushgateway_binary()?);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-admin-api")
            .arg("--log.level=info")
            .current_dir(dir.path());
        let mut child = ChildGuard::spawn("pushgateway", cmd, &dir.path().join("pushgateway.log"))?;
        let http = http_client();
        let ready = format!("{url}/-/ready");
        wait_ready(&mut child, "/-/ready", READY_TIMEOUT, || {
            let req = http.get(&ready).timeout(Duration::from_secs(2));
            async move { Ok(req.send().await?.status().is_success()) }
        })
        .await?;
        Ok(Pushgateway { url, child, dir })
    }

    /// One Pushgateway for the whole test process, started on first use and
    /// killed at exit. Tests sharing it must use their own `job` names.
    pub async fn shared() -> Result<&'static Pushgateway> {
        static SHARED: OnceCell<Pushgateway> = OnceCell::const_new();
        SHARED
            .get_or_try_init(|| async {
                let pg = Pushgateway::start().await?;
                cleanup_at_exit(Some(&pg.child), Some(&pg.dir));
                Ok(pg)
            })
            .await
    }

    /// `GET /metrics`: the exposition text (all pushed groups plus the
    /// gateway's own metrics).
    pub async fn metrics_text(&self) -> Result<String> {
        let resp = http_client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await?;
        Ok(expect_success("reading pushgateway /metrics", resp)
            .await?
            .text()
            .await?)
    }

    /// The sample lines of `/metrics` that carry `job="<job>"` (comments
    /// and other jobs left out).
    pub async fn job_lines(&self, job: &str) -> Result<Vec<String>> {
        let needle = format!("job=\"{job}\"");
        Ok(self
            .metrics_text()
            .await?
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&needle))
            .map(str::to_string)
            .collect())
    }

    /// `DELETE /metrics/job/<job>`: forget the group pushed for `job`
    /// (without other grouping labels).
    pub async fn delete_job(&self, job: &str) -> Result<()> {
        let resp = http_client()
            .delete(format!("{}/metrics/job/{job}", self.url))
            .send()
            .await?;
        expect_success("deleting a pushgateway group", resp).await?;
        Ok(())
    }

    pub fn log_path(&self) -> std::path::PathBuf {
        self.child.log_path().to_path_buf()
    }
}
