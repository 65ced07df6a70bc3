//! stashless: Stash-compatible backup and restore of Vault/OpenBao raft snapshots,
//! as small functions. Each module owns one step of the flow and talks to at most one
//! outside system; `backup` and `scheduler` compose them into the Lambda handlers.

pub mod api;
pub mod archive;
pub mod aws_login;
pub mod backup;
pub mod cluster;
pub mod crds;
pub mod dispatch;
pub mod eks;
pub mod error;
pub mod events;
pub mod lambda;
pub mod manifests;
pub mod metrics;
pub mod repository;
pub mod resolve;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod session;
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

/// Logging set-up for the function binaries: JSON when Lambda asks for it
/// (`AWS_LAMBDA_LOG_FORMAT=JSON`), text otherwise; level from `RUST_LOG`, default info.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
