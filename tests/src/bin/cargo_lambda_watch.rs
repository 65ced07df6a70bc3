//! The functions as a Lambda developer runs them locally: under `cargo lambda watch` (its
//! Runtime API emulator builds and starts each function on its first invocation), every
//! `events/` sample sent with `cargo lambda invoke`, then one real backup and restore through
//! it. cargo-lambda 1.9 sends a constant deadline in 1970; the functions must not obey it.
//!
//! A program, not a test: `cargo lambda watch` builds the functions with cargo, and under
//! `cargo test` that build would wait on the lock cargo test holds. `tests/run.sh` runs it as
//! `cargo run --locked -q -p stashless-tests --bin cargo_lambda_watch`, with cargo-lambda on
//! PATH and the servers `tests/setup.sh` installs; it exits 0 when every check passed, and
//! otherwise non-zero, saying which check failed (with the watch's log where it helps).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use stashless_tests::World;
use stashless_tests::procs::{free_port, poll_until};
use stashless_tests::runtime_api::{backup_then_restore, samples};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `cargo lambda watch` on a free port, serving the workspace's functions with `env`.
struct Watch {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl Watch {
    async fn start(env: &[(&str, String)], dir: &Path) -> Result<Watch> {
        let port = free_port()?;
        let env_file = dir.join("functions.env");
        let lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        std::fs::write(&env_file, lines.join("\n") + "\n")?;
        // Into the run's leak-scan directory when there is one: the functions' logs are in it.
        let log = stashless_tests::leaks::dir()
            .unwrap_or_else(|| dir.to_path_buf())
            .join(format!("stashless-cargo-lambda-watch-{port}.log"));
        let out = std::fs::File::create(&log)?;
        let mut child = tokio::process::Command::new("cargo")
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
        // Ready when its invoke endpoint accepts connections (`None`); `Some(status)` if it
        // exited first (not installed, a bad flag): no wait for the deadline then.
        let ready = poll_until(
            "cargo lambda watch to listen",
            Duration::from_secs(120),
            || {
                let exited = child.try_wait();
                async move {
                    if let Some(status) = exited? {
                        return Ok(Some(Some(status)));
                    }
                    let up = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
                    Ok(up.is_ok().then_some(None))
                }
            },
        )
        .await;
        let w = Watch { child, port, log };
        match ready {
            Ok(None) => Ok(w),
            Ok(Some(status)) => bail!(
                "cargo lambda watch exited ({status}) before it listened:\n{}",
                w.logs()
            ),
            Err(e) => Err(e).context(format!("cargo lambda watch never listened:\n{}", w.logs())),
        }
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

async fn every_sample_and_a_backup_and_restore_under_cargo_lambda_watch() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let w = World::standard("cargolambda", "cargolambda").await;
    let watch = Watch::start(&w.cluster.env(), dir.path()).await?;

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
    .context("a backup and restore under cargo lambda watch")?;
    // Every sample, as `cargo lambda invoke` sends it: malformed ones answered `rejected`
    // (not an error Lambda would retry), the rest answered about sessions this cluster does
    // not hold, or (the scheduler's, after the backup so its tick cannot interfere) a tick.
    for function in ["backup", "restore", "scheduler"] {
        for (name, event) in samples(function) {
            let v = match watch
                .invoke(function, &event)
                .await
                .with_context(|| format!("cargo lambda invoke {function} {name}"))?
            {
                Ok(v) => v,
                Err(e) => bail!("{function}/{name}: {e}\n{}", watch.logs()),
            };
            if name.starts_with("malformed") {
                ensure!(v["status"] == "rejected", "{function}/{name}: {v}");
            } else {
                ensure!(v["status"] != "rejected", "{function}/{name}: {v}");
                if function != "scheduler" {
                    ensure!(v["outcome"] == "NotClaimed", "{function}/{name}: {v}");
                }
            }
        }
    }

    let logs = watch.logs();
    ensure!(
        logs.contains("the invocation's deadline is already past"),
        "the functions should have warned about cargo-lambda's past deadline:\n{logs}"
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match every_sample_and_a_backup_and_restore_under_cargo_lambda_watch().await {
        Ok(()) => {
            println!(
                "cargo_lambda_watch: every events/ sample and a backup and restore under cargo lambda watch: ok"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cargo_lambda_watch: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
