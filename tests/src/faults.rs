//! A loopback TCP proxy that injects faults between a function and a real server:
//! cut the server→client stream after N bytes (per connection, for responses larger
//! than a threshold), or refuse connections. Small on purpose; the fault suite grows it.

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
