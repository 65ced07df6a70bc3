//! Glue between the Lambda runtime and the library: deadlines and responses.
//!
//! Lambda retries an asynchronous invocation whenever the handler returns an error. So
//! only errors a retry can fix are returned as errors; permanent ones (malformed events,
//! objects that need a person to edit them) are answered with a normal response that says
//! `rejected`, logged at error level, and never re-run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::error::Error;

/// Lambda's deadline (ms since the epoch) as an Instant.
pub fn deadline_instant(deadline_ms: u64) -> Option<Instant> {
    if deadline_ms == 0 {
        return None;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    Some(Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
}

/// A retryable failure, surfaced to the runtime so Lambda retries the event.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Retryable(pub String);

/// Register for SIGTERM (Lambda sends it at shutdown only to functions with an extension;
/// the runtime registers a no-op internal one for this): log, flush, exit 0. An invocation
/// still running has already been bounded by its deadline, which aborts uploads and writes
/// status before Lambda's own timeout.
pub async fn graceful_shutdown(function: &'static str) {
    lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
        tracing::info!(function, "SIGTERM: shutting down");
    })
    .await;
}

/// Map a handler result to what the runtime should see.
pub fn respond(result: Result<Value, Error>) -> Result<Value, lambda_runtime::Error> {
    match result {
        Ok(v) => Ok(v),
        Err(e) if e.is_retryable() => {
            let reason = e.reason();
            tracing::warn!(error = %reason, kind = ?e.kind(), "retryable failure: returning an error so Lambda retries");
            Err(Box::new(Retryable(reason)))
        }
        Err(e) => {
            let reason = e.reason();
            tracing::error!(error = %reason, kind = ?e.kind(), "permanent failure: not retrying");
            Ok(json!({ "status": "rejected", "kind": e.kind(), "error": reason }))
        }
    }
}
