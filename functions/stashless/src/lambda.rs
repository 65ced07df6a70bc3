//! Glue between the Lambda runtime and the library: deadlines and responses.
//!
//! Lambda retries an asynchronous invocation whenever the handler returns an error. So
//! only errors a retry can fix are returned as errors; permanent ones (malformed events,
//! objects that need a person to edit them) are answered with a normal response that says
//! `rejected`, logged at error level, and never re-run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::error::Error;

/// Lambda's deadline (ms since the epoch) as an Instant. None when there is none to obey:
/// absent (0), or already past when the invocation starts. Lambda never sends a past one;
/// local emulators do (cargo-lambda 1.9 sends a constant 600000, a moment in 1970), and
/// obeying it would fail every session at once. The session's own time limit then applies,
/// and a warning says so.
pub fn deadline_instant(deadline_ms: u64) -> Option<Instant> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    let deadline = deadline_at(deadline_ms, now_ms)?;
    if deadline.is_zero() {
        tracing::warn!(
            deadline_ms,
            now_ms,
            "the invocation's deadline is already past (a local emulator?): using the session's own time limit instead"
        );
        return None;
    }
    Some(Instant::now() + deadline)
}

/// Time left until `deadline_ms` at `now_ms`: None without a deadline, zero when past.
fn deadline_at(deadline_ms: u64, now_ms: u64) -> Option<Duration> {
    (deadline_ms != 0).then(|| Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_already_past_is_not_obeyed() {
        // cargo-lambda's constant: 600 s after the epoch.
        assert!(deadline_instant(600_000).is_none());
        assert!(deadline_instant(0).is_none());
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let left = deadline_instant(now_ms + 60_000)
            .expect("a future deadline is obeyed")
            .saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(50) && left <= Duration::from_secs(60),
            "{left:?}"
        );
        assert_eq!(deadline_at(5_000, 2_000), Some(Duration::from_secs(3)));
        assert_eq!(deadline_at(1_000, 2_000), Some(Duration::ZERO));
        assert_eq!(deadline_at(0, 2_000), None);
    }
}
