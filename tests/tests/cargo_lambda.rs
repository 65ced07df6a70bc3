//! The functions as a Lambda developer runs them locally: under `cargo lambda watch` (its
//! Runtime API emulator builds and starts each function on its first invocation), every
//! `events/` sample sent with `cargo lambda invoke`, then one real backup and restore through
//! it. cargo-lambda 1.9 sends a constant deadline in 1970; the functions must not obey it.
//!
//! Ignored by default (it builds the functions with cargo from inside the test): `tests/run.sh`
//! runs the test binary directly, with cargo-lambda on PATH, so that cargo's build lock is
//! free for the build `cargo lambda watch` starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use stashless_tests::World;
use stashless_tests::runtime_api::{backup_then_restore, samples};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cargo lambda watch` on a free port, serving the workspace's functions with `env`.
struct Watch {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl Watch {
    async fn start(env: &[(&str, String)], dir: &Path) -> Result<Watch> {
        let port = free_port();
        let env_file = dir.join("functions.env");
        let lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        std::fs::write(&env_file, lines.join("\n") + "\n")?;
        // Into the run's leak-scan directory when there is one: the functions' logs are in it.
        let log = stashless_tests::leaks::dir()
            .unwrap_or_else(|| dir.to_path_buf())
            .join(format!("stashless-cargo-lambda-watch-{port}.log"));
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new("cargo")
            .args(["lambda", "watch", "--ignore-changes", "--locked", "--quiet"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            .arg("--env-file")
            .arg(&env_file)
            .current_dir(workspace())
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("cargo lambda watch (pip install cargo-lambda)")?;
        let w = Watch { child, port, log };
        // Ready when its invoke endpoint accepts connections.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                bail!("cargo lambda watch never listened:\n{}", w.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(w)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `cargo lambda invoke <function>` with `event`: the function's answer, or its error.
    async fn invoke(
        &self,
        function: &str,
        event: &Value,
    ) -> Result<std::result::Result<Value, String>> {
        let out = tokio::process::Command::new("cargo")
            .args(["lambda", "invoke", function, "--output-format", "json"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(self.port.to_string())
            .arg("--data-ascii")
            .arg(event.to_string())
            .stdin(Stdio::null())
            .output()
            .await?;
        if !out.status.success() {
            return Ok(Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(Ok(serde_json::from_slice(&out.stdout).with_context(
            || {
                format!(
                    "cargo lambda invoke printed {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            },
        )?))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Its functions are its children: end the whole group.
        if let Some(pid) = self.child.id() {
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs cargo lambda watch, which builds the functions; tests/run.sh runs it"]
async fn every_sample_and_a_backup_and_restore_under_cargo_lambda_watch() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::standard("cargolambda", "cargolambda").await;
    let watch = Watch::start(&w.cluster.env(), dir.path()).await.unwrap();

    // A real backup and restore through the emulator, under its 1970 deadline.
    backup_then_restore(&w, async |function, event| {
        match watch.invoke(function, &event).await? {
            Ok(v) => {
                println!("cargo lambda invoke {function}: {v}");
                Ok(v)
            }
            Err(e) => bail!("{function}: {e}\n{}", watch.logs()),
        }
    })
    .await
    .unwrap();
    // Every sample, as `cargo lambda invoke` sends it: malformed ones answered `rejected`
    // (not an error Lambda would retry), the rest answered about sessions this cluster does
    // not hold, or (the scheduler's, after the backup so its tick cannot interfere) a tick.
    for function in ["backup", "restore", "scheduler"] {
        for (name, event) in samples(function) {
            let v = match watch.invoke(function, &event).await.unwrap() {
                Ok(v) => v,
                Err(e) => panic!("{function}/{name}: {e}\n{}", watch.logs()),
            };
            if name.starts_with("malformed") {
                assert_eq!(v["status"], "rejected", "{function}/{name}: {v}");
            } else {
                assert_ne!(v["status"], "rejected", "{function}/{name}: {v}");
                if function != "scheduler" {
                    assert_eq!(v["outcome"], "NotClaimed", "{function}/{name}: {v}");
                }
            }
        }
    }

    let logs = watch.logs();
    assert!(
        logs.contains("the invocation's deadline is already past"),
        "the functions should have warned about cargo-lambda's past deadline:\n{logs}"
    );
}
