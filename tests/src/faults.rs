//! Fault injection between a function and a real server. `Proxy`: a loopback TCP proxy that
//! cuts the server→client stream after N bytes or throttles it. `HttpProxy` (below): an
//! HTTP reverse proxy with per-request rules (answer 5xx/429/SlowDown on the Nth request,
//! drop, delay, stall, cut a response, reset mid-request-body).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// Close both sides after this many bytes went from server to client on one connection.
    CutAfter(u64),
    /// Pass server→client bytes at most this fast (bytes per second): a slow stream.
    Throttle(u64),
}

pub struct Proxy {
    pub addr: String,
    task: JoinHandle<()>,
    cuts: Arc<AtomicU64>,
}

impl Proxy {
    /// Proxy to `upstream` (`host:port`) with `fault` on every connection.
    pub async fn start(upstream: &str, fault: Fault) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let upstream = upstream.to_string();
        let cuts = Arc::new(AtomicU64::new(0));
        let cuts2 = cuts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let cuts = cuts2.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, fault, cuts).await;
                    }
                });
            }
        });
        Ok(Proxy { addr, task, cuts })
    }

    /// How many connections were cut.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, fault: Fault, cuts: Arc<AtomicU64>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let (limit, rate) = match fault {
        Fault::None => (u64::MAX, None),
        Fault::CutAfter(n) => (n, None),
        Fault::Throttle(bps) => (u64::MAX, Some(bps.max(1))),
    };
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let mut buf = vec![0u8; if rate.is_some() { 4 * 1024 } else { 64 * 1024 }];
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let allowed = (limit - sent).min(n as u64) as usize;
        if cw.write_all(&buf[..allowed]).await.is_err() {
            break;
        }
        sent += allowed as u64;
        if let Some(bps) = rate {
            // Hold the stream back to the rate: the time these bytes are due at.
            let due = started + std::time::Duration::from_secs_f64(sent as f64 / bps as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        if sent >= limit {
            cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
    }
    up.abort();
    // Dropping both halves closes the connection: the client sees the body end early.
}

// ---------------------------------------------------------------------------------------
// HTTP-level faults: a reverse proxy that sees each request and can answer it itself,
// refuse it, hold it, or break its connection part way. Placed between a function and
// Vault or S3 (the in-memory Kubernetes API has its own server-side hooks:
// `MemKube::inject_failure`). Requests are forwarded verbatim, Host header included, so
// SigV4 signatures made for the proxy's address still verify upstream.

use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::Notify;

/// What to do with a request a rule matches.
#[derive(Clone)]
pub enum Action {
    /// Answer with this status and body (an S3 XML error, a Vault JSON error) instead of
    /// forwarding.
    Respond { status: u16, body: String },
    /// Close the connection without an answer (a refused or dropped connection).
    Drop,
    /// Wait this long, then forward.
    Delay(Duration),
    /// Never answer (until the client gives up).
    Stall,
    /// Forward, but close the connection after this many response-body bytes.
    CutResponseAfter(u64),
    /// Read this many request-body bytes, then close the connection (reset mid-part).
    ResetRequestAfter(u64),
    /// Run this, then forward (e.g. step the Vault leader down while its snapshot streams).
    Hook(Arc<dyn Fn() + Send + Sync>),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Respond { status, .. } => write!(f, "Respond({status})"),
            Action::Drop => write!(f, "Drop"),
            Action::Delay(d) => write!(f, "Delay({d:?})"),
            Action::Stall => write!(f, "Stall"),
            Action::CutResponseAfter(n) => write!(f, "CutResponseAfter({n})"),
            Action::ResetRequestAfter(n) => write!(f, "ResetRequestAfter({n})"),
            Action::Hook(_) => write!(f, "Hook"),
        }
    }
}

/// Which requests a rule applies to, and to how many of them.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<http::Method>,
    path_contains: Option<String>,
    query_contains: Option<String>,
    /// Let this many matching requests through first (fault on the Nth).
    skip: usize,
    /// Apply to this many matching requests after the skipped ones.
    times: usize,
    action: Action,
    matched: usize,
}

impl Rule {
    pub fn new(action: Action) -> Rule {
        Rule {
            method: None,
            path_contains: None,
            query_contains: None,
            skip: 0,
            times: usize::MAX,
            action,
            matched: 0,
        }
    }
    pub fn method(mut self, m: http::Method) -> Rule {
        self.method = Some(m);
        self
    }
    pub fn path(mut self, s: &str) -> Rule {
        self.path_contains = Some(s.into());
        self
    }
    pub fn query(mut self, s: &str) -> Rule {
        self.query_contains = Some(s.into());
        self
    }
    /// Fault the `n`th matching request (1-based) and those after it.
    pub fn from_nth(mut self, n: usize) -> Rule {
        self.skip = n.saturating_sub(1);
        self
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = n;
        self
    }
    fn matches(&self, method: &http::Method, path: &str, query: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
            && self
                .query_contains
                .as_deref()
                .is_none_or(|q| query.contains(q))
    }
}

/// One request the proxy saw: for asserting that a retry happened.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    /// The fault applied, if any.
    pub fault: Option<String>,
    /// The status returned to the client (None: no answer, connection closed or held).
    pub status: Option<u16>,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    /// Set: every new connection is closed at once (the server is down).
    down: std::sync::atomic::AtomicBool,
}

pub struct HttpProxy {
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

type ProxyBody = BoxBody<Bytes, std::io::Error>;

impl HttpProxy {
    /// A proxy to `upstream` (`http://host:port`), passing everything until rules are added.
    pub async fn start(upstream: &str) -> std::io::Result<HttpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(std::io::Error::other)?,
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if st.down.load(Ordering::SeqCst) {
                    drop(conn);
                    continue;
                }
                let st = st.clone();
                tokio::spawn(serve_connection(conn, st));
            }
        });
        Ok(HttpProxy { addr, state, task })
    }

    /// Add a rule; the first matching rule with applications left decides a request.
    pub fn rule(&self, rule: Rule) -> &Self {
        self.state.rules.lock().unwrap().push(rule);
        self
    }

    /// Remove every rule: pass everything from now on.
    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Close every new connection at once (server down) or accept them again.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many requests had a fault applied.
    pub fn faults(&self) -> usize {
        self.seen().iter().filter(|s| s.fault.is_some()).count()
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(conn: TcpStream, state: Arc<ProxyState>) {
    // Any handler can ask for the connection to be closed without (more of) an answer.
    let kill = Arc::new(Notify::new());
    let k = kill.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let kill = k.clone();
        async move { Ok::<_, Infallible>(handle(req, state, kill).await) }
    });
    let io = hyper_util::rt::TokioIo::new(conn);
    let served = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::select! {
        _ = served => {}
        _ = kill.notified() => {}
    }
}

fn full(status: u16, body: String) -> http::Response<ProxyBody> {
    let mut r = http::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r
}

async fn handle(
    req: http::Request<Incoming>,
    state: Arc<ProxyState>,
    kill: Arc<Notify>,
) -> http::Response<ProxyBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let action = {
        let mut rules = state.rules.lock().unwrap();
        rules.iter_mut().find_map(|r| {
            if !r.matches(&method, &path, &query) {
                return None;
            }
            r.matched += 1;
            (r.matched > r.skip && r.matched - r.skip <= r.times).then(|| r.action.clone())
        })
    };
    let index = {
        let mut seen = state.seen.lock().unwrap();
        seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            fault: action.as_ref().map(|a| format!("{a:?}")),
            status: None,
        });
        seen.len() - 1
    };
    let record = |status: Option<u16>| state.seen.lock().unwrap()[index].status = status;
    // Close the connection without an answer; this request's future is dropped with it.
    let hold = || async {
        kill.notify_one();
        std::future::pending::<http::Response<ProxyBody>>().await
    };
    let mut cut_after = None;
    match action {
        Some(Action::Respond { status, body }) => {
            record(Some(status));
            return full(status, body);
        }
        Some(Action::Drop) => return hold().await,
        Some(Action::Stall) => return std::future::pending().await,
        Some(Action::Delay(d)) => tokio::time::sleep(d).await,
        Some(Action::Hook(f)) => f(),
        Some(Action::CutResponseAfter(n)) => cut_after = Some(n),
        Some(Action::ResetRequestAfter(n)) => {
            let mut body = req.into_body();
            let mut read = 0u64;
            while read < n {
                match body.frame().await {
                    Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len() as u64),
                    _ => break,
                }
            }
            return hold().await;
        }
        None => {}
    }
    let (parts, body) = req.into_parts();
    let url = format!(
        "{}{}",
        state.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = parts.headers.clone();
    for h in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "proxy-connection",
    ] {
        headers.remove(h);
    }
    let body = reqwest::Body::wrap_stream(http_body_util::BodyDataStream::new(body));
    let upstream = state
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match upstream {
        Ok(r) => r,
        Err(e) => {
            record(Some(502));
            return full(502, format!("fault proxy: upstream: {e}"));
        }
    };
    record(Some(resp.status().as_u16()));
    let mut out = http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if !matches!(
            k.as_str(),
            "connection" | "keep-alive" | "transfer-encoding"
        ) {
            out = out.header(k, v);
        }
    }
    let mut left = cut_after.unwrap_or(u64::MAX);
    let stream = futures::StreamExt::map(resp.bytes_stream(), |c| c.map_err(std::io::Error::other));
    let body = futures::StreamExt::flat_map(stream, move |chunk| {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = match chunk {
            Err(e) => vec![Err(e)],
            Ok(_) if left == 0 => vec![Err(std::io::Error::other("cut by the fault proxy"))],
            Ok(mut c) => {
                if (c.len() as u64) >= left {
                    c.truncate(left as usize);
                    left = 0;
                    // The bytes up to the cut, then a broken body: hyper closes the connection.
                    vec![
                        Ok(Frame::data(c)),
                        Err(std::io::Error::other("cut by the fault proxy")),
                    ]
                } else {
                    left -= c.len() as u64;
                    vec![Ok(Frame::data(c))]
                }
            }
        };
        futures::stream::iter(frames)
    });
    out.body(BodyExt::boxed(StreamBody::new(body)))
        .unwrap_or_else(|e| full(502, format!("fault proxy: {e}")))
}
