//! A loopback endpoint speaking EventBridge's `PutEvents` JSON protocol (AWS JSON 1.1,
//! `X-Amz-Target: AWSEvents.PutEvents`). It records accepted entries, refuses unsigned
//! requests, and can fail chosen entries to exercise retries. Only PutEvents is spoken.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Clone, Default)]
struct Shared {
    accepted: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
    unsigned: Arc<AtomicUsize>,
    /// Fail this many entries (the first ones) of the next request.
    fail_next: Arc<AtomicUsize>,
}

pub struct PutEventsServer {
    pub endpoint: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

async fn handle(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.starts_with("AWS4-HMAC-SHA256 Credential=")
        || !auth.contains("SignedHeaders=")
        || !auth.contains("Signature=")
    {
        s.unsigned.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::FORBIDDEN,
            json!({"__type": "MissingAuthenticationTokenException"}).to_string(),
        );
    }
    if target != "AWSEvents.PutEvents" {
        return (
            StatusCode::BAD_REQUEST,
            json!({"__type": "UnknownOperationException"}).to_string(),
        );
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let entries = req["Entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() || entries.len() > 10 {
        return (
            StatusCode::BAD_REQUEST,
            json!({"__type": "ValidationException"}).to_string(),
        );
    }
    let fail = s.fail_next.swap(0, Ordering::SeqCst);
    let mut results = Vec::new();
    let mut failed = 0;
    for (i, e) in entries.into_iter().enumerate() {
        if i < fail {
            failed += 1;
            results
                .push(json!({"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}));
        } else {
            s.accepted.lock().await.push(e);
            results.push(json!({"EventId": format!("evt-{i}")}));
        }
    }
    (
        StatusCode::OK,
        json!({"FailedEntryCount": failed, "Entries": results}).to_string(),
    )
}

impl PutEventsServer {
    pub async fn start() -> anyhow::Result<PutEventsServer> {
        let shared = Shared::default();
        let app = Router::new()
            .route("/", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(PutEventsServer {
            endpoint,
            shared,
            task,
        })
    }

    pub fn fail_next(&self, entries: usize) {
        self.shared.fail_next.store(entries, Ordering::SeqCst);
    }

    pub async fn accepted(&self) -> Vec<Value> {
        self.shared.accepted.lock().await.clone()
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn unsigned(&self) -> usize {
        self.shared.unsigned.load(Ordering::SeqCst)
    }

    /// An EventBridge client for this endpoint (signed with dummy credentials).
    pub fn client(&self) -> aws_sdk_eventbridge::Client {
        stashless::install_crypto_provider();
        let conf = aws_sdk_eventbridge::Config::builder()
            .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
            .region(aws_sdk_eventbridge::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .build();
        aws_sdk_eventbridge::Client::from_conf(conf)
    }
}

impl Drop for PutEventsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
