//! stashless: Stash-compatible backup and restore of Vault/OpenBao raft snapshots,
//! as small functions. Each module owns one step of the flow and talks to at most one
//! outside system. The modules form layers; a module imports only from its own layer or
//! the ones above it in this table, never from below, and the functions never import
//! each other:
//!
//! | layer | modules | what they own |
//! |---|---|---|
//! | types and pure policy | `api`, `error`, `schedule`, `retention`, `archive`, `events`, `crds` | Stash's objects, error kinds, cron, keep policy, the snapshot verifier, event parsing |
//! | one outside system each | `cluster`, `eks`, `aws_login`, `resolve`, `repository`, `vault`, `manifests` | the API server, EKS tokens, the Vault IAM login, AppBinding/Repository/Secrets, S3, Vault |
//! | steps shared by the functions | `config`, `context`, `serve`, `session`, `status`, `metrics` | configuration checks, clients and scope, which objects are ours, claiming and exclusion, typed status, gauges |
//! | the functions | `backup`, `restore`, `scheduler`, `sweep` | one handler each |
//! | composition | `dispatch`, `lambda` | the watch bridge, in-process and EventBridge dispatch, the scheduler's tick + sweep + dispatch, Lambda responses |
//!
//! The binaries under `functions/*/src/main.rs` are thin: tracing, clients, `run(service_fn(..))`.

pub mod api;
pub mod archive;
pub mod aws_login;
pub mod backup;
pub mod blueprint;
pub mod cluster;
pub mod config;
pub mod context;
pub mod crds;
pub mod dispatch;
pub mod eks;
pub mod error;
pub mod events;
pub mod hooks;
pub mod keys;
pub mod lambda;
pub mod manifests;
pub mod metrics;
pub mod repository;
pub mod resolve;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod serve;
pub mod session;
pub mod snapshot;
pub mod status;
pub mod sweep;
pub mod vault;

pub use error::{Error, Result};

/// rustls needs exactly one process-wide crypto provider; kube, reqwest and the AWS SDK
/// are all built on aws-lc-rs here. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A Kubernetes timestamp as chrono.
pub fn k8s_time(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

/// Part buffers are megabytes each and are freed on other threads than the ones that
/// filled them. glibc's malloc raises its mmap threshold after the first such free, then
/// serves later buffers from per-thread arenas it keeps, so peak RSS grew with the
/// snapshot (the benchmark: 50 MiB at 256 MiB, 66 MiB at 1 GiB). A fixed threshold keeps
/// every allocation of 1 MiB or more in its own mapping, handed back on free.
pub fn keep_large_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning (it takes the arena lock itself).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// The log filter: `RUST_LOG` when set (a full filter), else Lambda's advanced logging
/// level `AWS_LAMBDA_LOG_LEVEL` (TRACE, DEBUG, INFO, WARN, ERROR, FATAL), else `default`.
pub fn log_filter(rust_log: Option<&str>, lambda_level: Option<&str>, default: &str) -> String {
    if let Some(f) = rust_log.map(str::trim).filter(|f| !f.is_empty()) {
        return f.to_string();
    }
    match lambda_level
        .map(|l| l.trim().to_ascii_uppercase())
        .as_deref()
    {
        Some("TRACE") => "trace",
        Some("DEBUG") => "debug",
        Some("INFO") => "info",
        Some("WARN") => "warn",
        Some("ERROR") | Some("FATAL") => "error",
        _ => default,
    }
    .to_string()
}

/// Logging set-up for the function binaries: JSON when Lambda asks for it
/// (`AWS_LAMBDA_LOG_FORMAT=JSON`), text otherwise; level from [`log_filter`]. Colour only
/// when stderr is a terminal (Lambda's and a redirected run's logs get plain text).
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = log_filter(
        std::env::var("RUST_LOG").ok().as_deref(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        "info",
    );
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(false);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .without_time()
            .try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_filter_prefers_rust_log_then_lambdas_level() {
        use super::log_filter;
        assert_eq!(
            log_filter(Some("stashless=debug"), Some("ERROR"), "info"),
            "stashless=debug"
        );
        assert_eq!(log_filter(Some(" "), Some("warn"), "info"), "warn");
        assert_eq!(log_filter(None, Some("FATAL"), "info"), "error");
        assert_eq!(log_filter(None, Some("TRACE"), "info"), "trace");
        assert_eq!(log_filter(None, Some("loud"), "info"), "info");
        assert_eq!(log_filter(None, None, "warn"), "warn");
    }
}
