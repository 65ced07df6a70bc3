//! Scheduler Lambda: each EventBridge Scheduler tick creates the BackupSessions that are
//! due, then sweeps: lost sessions are marked Failed, stale Pending ones are listed for
//! dispatching again.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};
use stashless::cluster::ClusterSource;
use stashless::events::Tick;
use stashless::scheduler::{SchedulerSettings, tick};
use stashless::sweep::{SweepSettings, sweep};

#[tokio::main]
async fn main() -> Result<(), Error> {
    stashless::init_tracing();
    stashless::lambda::graceful_shutdown("scheduler").await;
    let client = ClusterSource::from_env().client().await?;
    let settings = SchedulerSettings::from_env();
    run(service_fn(|event: LambdaEvent<Value>| {
        let (client, settings) = (&client, &settings);
        async move {
            let result = async {
                let t = Tick::from_event(&event.payload)?;
                let report = tick(client, &t, settings).await?;
                let now = t.time.unwrap_or_else(chrono::Utc::now);
                let swept = sweep(client, &settings.namespaces, now, &SweepSettings::default()).await?;
                if !swept.redispatch.is_empty() {
                    tracing::warn!(sessions = ?swept.redispatch, "sessions still Pending after the grace period");
                }
                Ok(json!({ "tick": report, "sweep": swept }))
            }
            .await;
            stashless::lambda::respond(result)
        }
    }))
    .await
}
