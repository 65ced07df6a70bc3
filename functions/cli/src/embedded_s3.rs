//! The demo's S3-compatible store: s3s + s3s-fs in this process, files under the data
//! directory, SigV4 checked with the credentials from the example storage Secret.

use std::path::Path;

use anyhow::{Context as _, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct EmbeddedS3 {
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl EmbeddedS3 {
    /// Serve `root` on a loopback port; `buckets` are created as directories.
    pub async fn start(
        root: &Path,
        access_key: &str,
        secret_key: &str,
        buckets: &[&str],
    ) -> Result<EmbeddedS3> {
        for b in buckets {
            std::fs::create_dir_all(root.join(b))
                .with_context(|| format!("creating bucket directory {b}"))?;
        }
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| {
            anyhow::anyhow!(
                "opening the embedded store's directory {}: {e:?}",
                root.display()
            )
        })?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key.to_string()));
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(EmbeddedS3 { endpoint, task })
    }
}

impl Drop for EmbeddedS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}
