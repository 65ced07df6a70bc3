//! Watch streams: newline-delimited JSON watch events over a chunked response.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch as signal};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::selector::Selectors;
use crate::server::{Ctx, Query, error_response, stream_response};
use crate::store::{ApiError, Change, EventType, WatchStart};
use crate::{ResourceKind, Shared};

fn line(etype: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": etype, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(kind: &ResourceKind, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata}),
    )
}

/// Unregisters the watcher when the stream is dropped (client gone, timeout, shutdown).
struct WatchGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.shared.lock().unsubscribe(self.id);
        tracing::debug!(id = self.id, "memkube watch closed");
    }
}

struct WatchState {
    _guard: WatchGuard,
    shared: Arc<Shared>,
    kind: ResourceKind,
    sel: Selectors,
    rx: mpsc::UnboundedReceiver<Arc<Change>>,
    pending: VecDeque<Bytes>,
    last_rv: u64,
    bookmarks: bool,
    interval: Interval,
    deadline: Option<Instant>,
    shutdown: signal::Receiver<bool>,
    done: bool,
}

impl WatchState {
    fn push_change(&mut self, c: &Change) {
        if c.rv <= self.last_rv {
            return;
        }
        self.last_rv = c.rv;
        if let Some((t, o)) = c.view(&self.sel) {
            self.pending.push_back(line(t.as_str(), o));
        }
    }

    async fn step(&mut self) {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let deadline = self.deadline.unwrap_or(far);
        enum Step {
            Stop,
            Change(Arc<Change>),
            Bookmark,
        }
        let step = tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|v| *v) => Step::Stop,
            _ = tokio::time::sleep_until(deadline), if self.deadline.is_some() => Step::Stop,
            msg = self.rx.recv() => msg.map_or(Step::Stop, Step::Change),
            _ = self.interval.tick(), if self.bookmarks => Step::Bookmark,
        };
        match step {
            Step::Stop => self.done = true,
            Step::Change(c) => self.push_change(&c),
            Step::Bookmark => {
                // Every change up to `rv` has been pushed into `rx` (under the same lock), so
                // after draining it the bookmark never promises an event not yet sent.
                let rv = self.shared.lock().resource_version();
                while let Ok(c) = self.rx.try_recv() {
                    self.push_change(&c);
                }
                let rv = rv.max(self.last_rv);
                self.pending.push_back(bookmark(&self.kind, rv, false));
            }
        }
    }
}

/// Answers a `?watch=true` request.
pub(crate) fn watch_response(
    ctx: &Ctx,
    kind: ResourceKind,
    ns: Option<String>,
    sel: Selectors,
    q: &Query,
) -> Response {
    let send_initial = q.flag("sendInitialEvents");
    let start = match q.get("resourceVersion") {
        None | Some("" | "0") => WatchStart::Current {
            initial_events_end: send_initial,
        },
        Some(_) if send_initial => WatchStart::Current {
            initial_events_end: true,
        },
        Some(rv) => match rv.parse::<u64>() {
            Ok(n) => WatchStart::From(n),
            Err(_) => {
                return error_response(&ApiError::bad_request(format!(
                    "invalid resource version: {rv:?}"
                )));
            }
        },
    };
    let deadline = match q.get("timeoutSeconds").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(0) => None,
            Ok(n) => Some(Instant::now() + Duration::from_secs(n)),
            Err(_) => {
                return error_response(&ApiError::bad_request(format!(
                    "invalid timeoutSeconds: {s:?}"
                )));
            }
        },
    };
    let shared = ctx.kube.shared().clone();
    let (sub, bookmark_interval) = {
        let mut inner = shared.lock();
        let sub = inner.subscribe(&kind, ns.as_deref(), &sel, start);
        (sub, inner.bookmark_interval)
    };
    let sub = match sub {
        Ok(s) => s,
        Err(e) => {
            // Like the real server: 200, one ERROR event carrying the Status, end of stream.
            return stream_response(Body::from(line("ERROR", &e.to_status())));
        }
    };
    tracing::debug!(id = sub.id, kind = %kind.plural, "memkube watch opened");
    let mut pending: VecDeque<Bytes> = sub
        .initial
        .iter()
        .map(|(t, o): &(EventType, Value)| line(t.as_str(), o))
        .collect();
    if let Some(rv) = sub.initial_end_bookmark {
        pending.push_back(bookmark(&kind, rv, true));
    }
    let mut interval =
        tokio::time::interval_at(Instant::now() + bookmark_interval, bookmark_interval);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = WatchState {
        _guard: WatchGuard {
            shared: shared.clone(),
            id: sub.id,
        },
        shared,
        kind,
        sel,
        rx: sub.rx,
        pending,
        last_rv: sub.start_rv,
        bookmarks: q.flag("allowWatchBookmarks"),
        interval,
        deadline,
        shutdown: ctx.shutdown.clone(),
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(b) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(b), st));
            }
            if st.done {
                return None;
            }
            st.step().await;
        }
    });
    stream_response(Body::from_stream(stream))
}
