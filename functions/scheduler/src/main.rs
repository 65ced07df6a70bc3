//! Scheduler Lambda: each EventBridge Scheduler tick creates the BackupSessions that are
//! due, sweeps (lost sessions are marked Failed, stale Pending ones found), and puts one
//! event per session to run on the bus (`STASHLESS_EVENT_BUS`), so the product works with
//! no in-cluster component. With the bridge running too, a session may be dispatched
//! twice: the functions claim it, so that is harmless.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use stashless::cluster::ClusterSource;
use stashless::dispatch::{Dispatch, EventBridge, scheduled_tick};
use stashless::events::Tick;
use stashless::scheduler::SchedulerSettings;
use stashless::sweep::SweepSettings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    stashless::init_tracing();
    stashless::lambda::graceful_shutdown("scheduler").await;
    let client = ClusterSource::from_env().client().await?;
    let settings = SchedulerSettings::from_env();
    let sweep = SweepSettings::default();
    let bus = EventBridge::from_env().await;
    run(service_fn(|event: LambdaEvent<Value>| {
        let (client, settings, sweep) = (&client, &settings, &sweep);
        let bus = bus.as_ref().map(|b| b as &dyn Dispatch);
        async move {
            let result = async {
                let tick = Tick::from_event(&event.payload)?;
                let done = scheduled_tick(client, &tick, settings, sweep, bus).await?;
                Ok(serde_json::to_value(done).expect("the tick response serialises"))
            }
            .await;
            stashless::lambda::respond(result)
        }
    }))
    .await
}
