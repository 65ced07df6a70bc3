//! Scheduler Lambda: each EventBridge Scheduler tick creates the BackupSessions that are
//! due, sweeps (lost sessions are marked Failed, stale Pending ones found), and puts one
//! event per session to run on the bus (`STASHLESS_EVENT_BUS`), so the product works with
//! no in-cluster component. With the bridge running too, a session may be dispatched
//! twice: the functions claim it, so that is harmless.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};
use stashless::cluster::ClusterSource;
use stashless::dispatch::{Change, Dispatch, EventBridge};
use stashless::events::{SessionRef, Tick};
use stashless::scheduler::{SchedulerSettings, tick};
use stashless::sweep::{SweepSettings, sweep};

#[tokio::main]
async fn main() -> Result<(), Error> {
    stashless::init_tracing();
    stashless::lambda::graceful_shutdown("scheduler").await;
    let client = ClusterSource::from_env().client().await?;
    let settings = SchedulerSettings::from_env();
    let bus = EventBridge::from_env().await;
    run(service_fn(|event: LambdaEvent<Value>| {
        let (client, settings, bus) = (&client, &settings, &bus);
        async move {
            let result = async {
                let t = Tick::from_event(&event.payload)?;
                let report = tick(client, &t, settings).await?;
                let now = t.time.unwrap_or_else(chrono::Utc::now);
                let swept =
                    sweep(client, &settings.namespaces, now, &SweepSettings::default()).await?;
                let mut changes: Vec<Change> = report
                    .created
                    .iter()
                    .filter_map(|key| key.split_once('/'))
                    .map(|(ns, name)| {
                        let r = SessionRef {
                            kind: Some("BackupSession".into()),
                            namespace: ns.into(),
                            name: name.into(),
                        };
                        Change::from_ref(&r, "Added")
                    })
                    .collect();
                changes.extend(
                    swept
                        .redispatch
                        .iter()
                        .map(|r| Change::from_ref(r, "Sweep")),
                );
                match bus {
                    Some(bus) => bus.dispatch(&changes).await?,
                    None if !changes.is_empty() => {
                        tracing::warn!(
                            sessions = changes.len(),
                            "STASHLESS_EVENT_BUS is not set: nothing dispatches these sessions"
                        )
                    }
                    None => {}
                }
                Ok(json!({ "tick": report, "sweep": swept, "dispatched": changes.len() }))
            }
            .await;
            stashless::lambda::respond(result)
        }
    }))
    .await
}
