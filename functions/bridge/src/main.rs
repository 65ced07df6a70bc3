//! The watch bridge: runs in the cluster (low latency), watches BackupSessions,
//! RestoreSessions and BackupConfigurations, and puts one event per relevant change on an
//! EventBridge bus whose rules invoke the functions. Without it the product still works:
//! the scheduler's sweep dispatches sessions every minute.
//!
//! Environment: `STASHLESS_EVENT_BUS` (required), `STASHLESS_NAMESPACES` (comma separated,
//! default all), `STASHLESS_HEALTH_ADDR` (default `0.0.0.0:8080`, serves `/healthz`).

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use stashless::cluster::ClusterSource;
use stashless::context::NamespaceScope;
use stashless::dispatch::{EventBridge, Health, bridge};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stashless::init_tracing();
    let client = ClusterSource::from_env().client().await?;
    let bus = EventBridge::from_env()
        .await
        .context("STASHLESS_EVENT_BUS is not set: name the EventBridge bus")?;
    let namespaces = NamespaceScope::from_env();
    let health = Arc::new(Health::default());
    let addr = std::env::var("STASHLESS_HEALTH_ADDR").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let h = health.clone();
    let app = Router::new().route(
        "/healthz",
        get(move || {
            let h = h.clone();
            async move {
                if h.ok() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "watches not listed yet")
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tracing::info!(%addr, ?namespaces, "bridge started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = bridge(client, namespaces, Arc::new(bus), health) => {}
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
    Ok(())
}
