//! moto server: the AWS control-plane APIs (EventBridge, SQS, …) on loopback, for the parts
//! no real server here speaks. Never a live account. Auth is not checked in this mode.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::process::{Child, Command};

pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

impl Moto {
    pub async fn start() -> Result<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bin = std::env::var("STASHLESS_MOTO").unwrap_or_else(|_| "moto_server".into());
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {bin} (run bash tests/setup.sh)"))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{endpoint}/moto-api/")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("moto did not start on {endpoint} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Moto {
            endpoint,
            _child: child,
        })
    }

    /// SDK configuration for this server (dummy credentials, us-east-1).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        stashless::install_crypto_provider();
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new(
                        "testing", "testing", None, None, "moto",
                    ),
                ),
            )
            .build()
    }
}
