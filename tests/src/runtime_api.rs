//! A local AWS Lambda Runtime API (the `2018-06-01` protocol the real `lambda_runtime` loop
//! speaks), so the function binaries run exactly as in Lambda: the test queues an event,
//! the binary fetches it from `/runtime/invocation/next` and posts its response or error.
//!
//! Not modelled: the Extensions API beyond registration (and an event stream that never
//! sends: no INVOKE/SHUTDOWN events; shutdown is the SIGTERM the test sends), Logs/Telemetry APIs, init
//! timeouts, freezing between invocations, response streaming.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Mutex, Notify};

#[derive(Default)]
struct Inner {
    queue: VecDeque<(String, Value)>,
    results: HashMap<String, std::result::Result<Value, Value>>,
    first_poll: Option<std::time::Instant>,
    polls: u64,
}

#[derive(Clone, Default)]
struct Shared {
    /// Lambda-Runtime-Deadline-Ms sent as is (a local emulator's constant), instead of now +
    /// 120 s as Lambda sends it.
    constant_deadline_ms: Arc<std::sync::atomic::AtomicU64>,
    inner: Arc<Mutex<Inner>>,
    queued: Arc<Notify>,
    done: Arc<Notify>,
}

pub struct RuntimeApi {
    pub addr: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
    next_id: std::sync::atomic::AtomicU64,
}

async fn next(State(s): State<Shared>) -> impl IntoResponse {
    loop {
        let notified = s.queued.notified();
        {
            let mut inner = s.inner.lock().await;
            inner.polls += 1;
            if inner.first_poll.is_none() {
                inner.first_poll = Some(std::time::Instant::now());
            }
            if let Some((id, event)) = inner.queue.pop_front() {
                let constant = s
                    .constant_deadline_ms
                    .load(std::sync::atomic::Ordering::SeqCst);
                let deadline = if constant != 0 {
                    Duration::from_millis(constant)
                } else {
                    SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(120)
                };
                let mut h = HeaderMap::new();
                h.insert(
                    "Lambda-Runtime-Aws-Request-Id",
                    HeaderValue::from_str(&id).unwrap(),
                );
                h.insert(
                    "Lambda-Runtime-Deadline-Ms",
                    HeaderValue::from(deadline.as_millis() as u64),
                );
                h.insert(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    HeaderValue::from_static(
                        "arn:aws:lambda:us-east-1:111122223333:function:stashless",
                    ),
                );
                h.insert(
                    "Lambda-Runtime-Trace-Id",
                    HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793"),
                );
                return (StatusCode::OK, h, event.to_string());
            }
        }
        notified.await;
    }
}

async fn respond(State(s): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body)
        .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    s.inner.lock().await.results.insert(id, Ok(v));
    s.done.notify_waiters();
    StatusCode::ACCEPTED
}

async fn error(State(s): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body)
        .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    s.inner.lock().await.results.insert(id, Err(v));
    s.done.notify_waiters();
    StatusCode::ACCEPTED
}

async fn init_error(State(s): State<Shared>, body: Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.inner.lock().await.results.insert("init".into(), Err(v));
    s.done.notify_waiters();
    StatusCode::ACCEPTED
}

async fn extension_register() -> impl IntoResponse {
    let mut h = HeaderMap::new();
    h.insert(
        "Lambda-Extension-Identifier",
        HeaderValue::from_static("ext-7d1c0a2b"),
    );
    (
        StatusCode::OK,
        h,
        r#"{"functionName":"stashless","functionVersion":"$LATEST","handler":"bootstrap"}"#,
    )
}

/// An extension that subscribed to nothing waits here until shutdown.
async fn extension_next() -> StatusCode {
    std::future::pending::<()>().await;
    StatusCode::OK
}

impl RuntimeApi {
    pub async fn start() -> Result<RuntimeApi> {
        let shared = Shared::default();
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .route("/2020-01-01/extension/register", post(extension_register))
            .route("/2020-01-01/extension/event/next", get(extension_next))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RuntimeApi {
            addr,
            shared,
            task,
            next_id: Default::default(),
        })
    }

    /// Queue one event and wait for the function's answer: Ok(response) or Err(error body).
    pub async fn invoke(
        &self,
        event: Value,
        timeout: Duration,
    ) -> Result<(String, std::result::Result<Value, Value>)> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("req-{n:04}-8f3e2c1a");
        self.shared
            .inner
            .lock()
            .await
            .queue
            .push_back((id.clone(), event));
        self.shared.queued.notify_waiters();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = self.shared.done.notified();
            {
                let mut inner = self.shared.inner.lock().await;
                if let Some(r) = inner.results.remove(&id) {
                    return Ok((id, r));
                }
                if let Some(Err(e)) = inner.results.get("init") {
                    bail!("the function failed to initialise: {e}");
                }
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                bail!("no answer to {id} within {timeout:?}");
            }
        }
    }

    /// Send this Lambda-Runtime-Deadline-Ms with every invocation from now on, as
    /// cargo-lambda 1.9 does (a constant 600000: ten minutes after the epoch).
    pub fn send_constant_deadline(&self, deadline_ms: u64) {
        self.shared
            .constant_deadline_ms
            .store(deadline_ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// When the function first asked for work (its start-up is done by then).
    pub async fn first_poll(&self) -> Option<std::time::Instant> {
        self.shared.inner.lock().await.first_poll
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every sample in `events/<dir>`, by file name.
pub fn samples(dir: &str) -> Vec<(String, Value)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(dir);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// How a function binary is started: directly, or under an emulator (qemu's user mode runs
/// the arm64 packages on an x86_64 host exactly as built, `bootstrap` and all).
#[derive(Clone, Debug)]
pub struct Program {
    pub program: std::ffi::OsString,
    pub args: Vec<std::ffi::OsString>,
}

impl Program {
    pub fn native(bin: impl AsRef<std::ffi::OsStr>) -> Program {
        Program {
            program: bin.as_ref().to_owned(),
            args: Vec::new(),
        }
    }

    /// `emulator [emulator_args..] bin`, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu bootstrap`.
    pub fn emulated(
        emulator: impl AsRef<std::ffi::OsStr>,
        emulator_args: &[&str],
        bin: impl AsRef<std::ffi::OsStr>,
    ) -> Program {
        let mut args: Vec<std::ffi::OsString> = emulator_args.iter().map(Into::into).collect();
        args.push(bin.as_ref().to_owned());
        Program {
            program: emulator.as_ref().to_owned(),
            args,
        }
    }
}

impl From<&str> for Program {
    fn from(bin: &str) -> Program {
        Program::native(bin)
    }
}

/// A function binary running under the local Runtime API, as Lambda runs it.
pub struct LambdaProcess {
    pub api: RuntimeApi,
    child: tokio::process::Child,
    log: std::path::PathBuf,
    pub spawned: std::time::Instant,
}

impl LambdaProcess {
    /// Start `bin` with the Lambda environment plus `env` (e.g. [`crate::Cluster::env`]).
    pub async fn start(
        bin: impl AsRef<std::ffi::OsStr>,
        function: &str,
        env: &[(&str, String)],
    ) -> Result<LambdaProcess> {
        LambdaProcess::start_program(&Program::native(bin), function, env).await
    }

    /// [`LambdaProcess::start`] for a [`Program`] (e.g. one run under an emulator).
    pub async fn start_program(
        program: &Program,
        function: &str,
        env: &[(&str, String)],
    ) -> Result<LambdaProcess> {
        let api = RuntimeApi::start().await?;
        // Kept for the leak scan when the run collects logs.
        let log = crate::leaks::dir()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!(
                "stashless-{function}-{}-{}.log",
                std::process::id(),
                api.addr.replace(':', "_")
            ));
        let file = std::fs::File::create(&log)?;
        let spawned = std::time::Instant::now();
        let child = tokio::process::Command::new(&program.program)
            .args(&program.args)
            .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_REGION", "us-east-1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()?;
        Ok(LambdaProcess {
            api,
            child,
            log,
            spawned,
        })
    }

    /// The process id, while it runs (for `/proc/<pid>/status` and `/proc/<pid>/io`).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything the function printed (logs, EMF lines).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A closure that reads the logs once the process is gone (after `terminate` consumed
    /// it) and removes the log file.
    pub fn logs_handle(&self) -> impl FnOnce() -> String + use<> {
        let path = self.log.clone();
        move || {
            let logs = std::fs::read_to_string(&path).unwrap_or_default();
            std::fs::remove_file(&path).ok();
            logs
        }
    }

    /// From spawn to the first request for work.
    pub async fn startup(&self) -> Option<Duration> {
        self.api.first_poll().await.map(|t| t - self.spawned)
    }

    /// Send SIGTERM and wait for the process to exit.
    pub async fn terminate(mut self) -> Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        Ok(tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await??)
    }
}

/// One sample's answer.
pub struct Answer {
    pub sample: String,
    pub request_id: String,
    pub response: Value,
}

/// Run every sample of `dir` through the function: `malformed-*` must be answered with a
/// `rejected` response (not an error: Lambda must not retry them), the rest with a normal
/// response. Returns the answers, in order.
pub async fn run_samples(f: &LambdaProcess, dir: &str) -> Result<Vec<Answer>> {
    let mut answers = Vec::new();
    for (name, event) in samples(dir) {
        let (id, r) = f.api.invoke(event, Duration::from_secs(60)).await?;
        let v = match r {
            Ok(v) => v,
            Err(e) => bail!(
                "{dir}/{name}: the function returned an error (Lambda would retry): {e}\n{}",
                f.logs()
            ),
        };
        if name.starts_with("malformed") {
            if v["status"] != "rejected" {
                bail!("{dir}/{name}: expected a rejected response, got {v}");
            }
        } else if v["status"] == "rejected" {
            bail!("{dir}/{name}: a valid sample was rejected: {v}");
        }
        answers.push(Answer {
            sample: name,
            request_id: id,
            response: v,
        });
    }
    Ok(answers)
}

/// SIGTERM ends the function with exit 0 and its shutdown log line (the end of both
/// conformance checks below).
async fn terminate_cleanly(f: LambdaProcess) -> Result<()> {
    let logs = f.logs_handle();
    let status = f.terminate().await?;
    if !status.success() {
        bail!("SIGTERM must end the function cleanly: {status:?}");
    }
    if !logs().contains("SIGTERM: shutting down") {
        bail!("no shutdown log line");
    }
    Ok(())
}

/// The conformance check every session function passes under the Runtime API: all samples
/// of `events/<dir>` answered (malformed ones rejected), JSON logs with the request id, a
/// failing API server (`failing_plural`) surfaced as a retryable error, and SIGTERM ending
/// the process with exit 0 and a log line.
pub async fn session_function_conformance(
    program: impl Into<Program>,
    function: &str,
    dir: &str,
    failing_plural: &str,
) -> Result<()> {
    // Failure injection: the in-memory server, whatever backend the run uses.
    let cluster = crate::Cluster::memory().await?;
    let url = cluster.url();
    let f = LambdaProcess::start_program(&program.into(), function, &[("STASHLESS_KUBE_URL", url)])
        .await?;
    let answers = run_samples(&f, dir).await?;
    // The valid samples name sessions this cluster does not hold: answered with named JSON
    // fields, nothing claimed, nothing written.
    for a in answers
        .iter()
        .filter(|a| !a.sample.starts_with("malformed"))
    {
        let v = &a.response;
        let reason = v["reason"].as_str().unwrap_or_default();
        if v["outcome"] != "NotClaimed"
            || !v["phase"].is_null()
            || !reason.starts_with("there is no ")
        {
            bail!(
                "{dir}/{}: expected {{outcome: NotClaimed, phase: null, reason: there is no …}}, got {v}",
                a.sample
            );
        }
    }
    println!("{function} start-up: {:?}", f.startup().await);
    let logs = f.logs();
    if !logs.contains(&format!("\"requestId\":\"{}\"", answers[0].request_id)) {
        bail!("no request id in the JSON logs:\n{logs}");
    }
    cluster
        .mem()
        .inject_failure(memkube::Failure::new(failing_plural, 500).times(50));
    let (_, r) = f
        .api
        .invoke(
            serde_json::json!({"namespace": "vault", "name": "s-1"}),
            Duration::from_secs(60),
        )
        .await?;
    match r {
        Err(e)
            if e["errorMessage"]
                .as_str()
                .is_some_and(|m| m.contains("Kubernetes API")) => {}
        other => bail!("a failing API server must surface as a retryable error, got {other:?}"),
    }
    cluster.mem().clear_failures();
    terminate_cleanly(f).await
}

/// The scheduler's check under the Runtime API: every `events/scheduler` sample answered
/// (malformed ones rejected), a tick creating the due session of an hourly configuration,
/// and SIGTERM ending the process with exit 0 and a log line.
pub async fn scheduler_function_conformance(program: impl Into<Program>) -> Result<()> {
    let cluster = crate::Cluster::start().await?;
    cluster
        .backup_config(crate::ConfigBuilder::new("hourly").schedule("0 * * * *"))
        .await?;
    let f = LambdaProcess::start_program(&program.into(), "scheduler", &cluster.env()).await?;
    run_samples(&f, "scheduler").await?;
    println!("scheduler start-up: {:?}", f.startup().await);
    let (_, r) = f
        .api
        .invoke(
            serde_json::json!({"time": "2099-01-01T10:00:30Z"}),
            Duration::from_secs(60),
        )
        .await?;
    let v = match r {
        Ok(v) => v,
        Err(e) => bail!("the tick failed: {e}\n{}", f.logs()),
    };
    if v["tick"]["created"][0] != "vault/hourly-4070944800"
        || !v["sweep"]["failed"].as_object().is_some_and(|m| m.is_empty())
        // One session to run; no event bus in this environment, so none was sent.
        || v["to_dispatch"] != 1
        || v["dispatched"] != 0
    {
        bail!("unexpected tick answer: {v}");
    }
    let sessions = cluster.sessions().await?.len();
    if sessions != 1 {
        bail!("the tick should have created one session, the cluster holds {sessions}");
    }
    terminate_cleanly(f).await
}

/// One real backup and restore through the functions, whatever runs them (`invoke` sends an
/// event to the named function and returns its answer): a secret written and backed up by
/// session `cfg-1`, then changed, is back as it was after a RestoreSession of that snapshot.
pub async fn backup_then_restore(
    w: &crate::World,
    invoke: impl AsyncFn(&'static str, Value) -> Result<Value>,
) -> Result<()> {
    let bao = w.bao();
    bao.kv_put("app/cfg", serde_json::json!({"gen": "backed-up"}))
        .await?;
    w.cluster.new_session("cfg", "cfg-1").await?;
    let v = invoke(
        "backup",
        serde_json::json!({"namespace": "vault", "name": "cfg-1"}),
    )
    .await?;
    if v["phase"] != "Succeeded" {
        bail!("the backup did not succeed: {v}");
    }
    let snapshot = v["snapshot"].as_str().unwrap_or_default().to_owned();
    bao.kv_put("app/cfg", serde_json::json!({"gen": "changed"}))
        .await?;
    w.cluster
        .new_restore("rs-1", "repo", "vault", Some(&snapshot), false)
        .await?;
    let v = invoke(
        "restore",
        serde_json::json!({"namespace": "vault", "name": "rs-1"}),
    )
    .await?;
    if v["phase"] != "Succeeded" || v["snapshot"] != snapshot.as_str() {
        bail!("the restore of {snapshot} did not succeed: {v}");
    }
    let now = bao.kv_get("app/cfg").await?;
    if now.as_ref().map(|d| &d["gen"]) != Some(&Value::from("backed-up")) {
        bail!("after the restore app/cfg holds {now:?}, not the backed-up value");
    }
    Ok(())
}

/// [`backup_then_restore`] with the backup and restore binaries each under its own Runtime
/// API, as Lambda runs them.
pub async fn backup_then_restore_under_the_runtime(
    w: &crate::World,
    backup: &Program,
    restore: &Program,
) -> Result<()> {
    let env = w.cluster.env();
    let b = LambdaProcess::start_program(backup, "backup", &env).await?;
    let r = LambdaProcess::start_program(restore, "restore", &env).await?;
    backup_then_restore(w, async |function, event| {
        let f = if function == "backup" { &b } else { &r };
        match f.api.invoke(event, Duration::from_secs(300)).await? {
            (_, Ok(v)) => Ok(v),
            (_, Err(e)) => bail!("{function} returned an error: {e}\n{}", f.logs()),
        }
    })
    .await?;
    for f in [b, r] {
        let status = f.terminate().await?;
        if !status.success() {
            bail!("SIGTERM must end the function cleanly: {status:?}");
        }
    }
    Ok(())
}
