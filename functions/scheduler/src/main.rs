//! Scheduler Lambda: each EventBridge Scheduler tick creates the BackupSessions that are due.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use stashless::cluster::ClusterSource;
use stashless::events::Tick;
use stashless::scheduler::{SchedulerSettings, tick};

#[tokio::main]
async fn main() -> Result<(), Error> {
    stashless::init_tracing();
    let client = ClusterSource::from_env().client().await?;
    let settings = SchedulerSettings::from_env();
    run(service_fn(|event: LambdaEvent<Value>| {
        let (client, settings) = (&client, &settings);
        async move {
            let result = async {
                let t = Tick::from_event(&event.payload)?;
                let report = tick(client, &t, settings).await?;
                Ok(serde_json::to_value(report).unwrap_or_default())
            }
            .await;
            stashless::lambda::respond(result)
        }
    }))
    .await
}
