//! A local HTTP endpoint for hook tests: records every call (method, path and query,
//! headers, body) with the time it came, answers each path as told (status and body; 200
//! by default), and can stall a path (accepts the request, never answers).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::{DateTime, Utc};

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: DateTime<Utc>,
}

/// How a path answers.
#[derive(Clone, Debug)]
pub enum Answer {
    Status(u16, String),
    /// Never answers.
    Stall,
}

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<Call>>,
    answers: Mutex<HashMap<String, Answer>>,
}

/// The server; stops when dropped.
pub struct HookServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl HookServer {
    pub async fn start() -> anyhow::Result<HookServer> {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HookServer { addr, shared, task })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answer `path` (without query) this way from now on.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.shared
            .answers
            .lock()
            .unwrap()
            .insert(path.to_string(), answer);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// The calls whose path (without query) is `path`.
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path.split('?').next() == Some(path))
            .collect()
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let bare = parts.uri.path().to_string();
    shared.calls.lock().unwrap().push(Call {
        method: parts.method.to_string(),
        path,
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Utc::now(),
    });
    let answer = shared.answers.lock().unwrap().get(&bare).cloned();
    match answer {
        Some(Answer::Stall) => std::future::pending().await,
        Some(Answer::Status(code, text)) => Response::builder()
            .status(code)
            .body(Body::from(text))
            .unwrap(),
        None => Response::new(Body::from("ok")),
    }
}
