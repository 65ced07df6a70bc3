//! Backup Lambda: an event naming a BackupSession → a verified raft snapshot in S3.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use stashless::backup::run as backup;
use stashless::cluster::ClusterSource;
use stashless::context::{Context, Settings};
use stashless::events::SessionRef;

#[tokio::main]
async fn main() -> Result<(), Error> {
    stashless::keep_large_buffers_mapped();
    stashless::init_tracing();
    stashless::lambda::graceful_shutdown("backup").await;
    let client = ClusterSource::from_env().client().await?;
    let ctx = Context::new(client, Settings::from_env());
    run(service_fn(|event: LambdaEvent<Value>| {
        let ctx = ctx.clone();
        async move {
            let deadline = stashless::lambda::deadline_instant(event.context.deadline);
            let result = async {
                let target = SessionRef::from_event(&event.payload, "BackupSession")?;
                let outcome = backup(&ctx, &target, deadline).await?;
                Ok(outcome.to_response())
            }
            .await;
            stashless::lambda::respond(result)
        }
    }))
    .await
}
