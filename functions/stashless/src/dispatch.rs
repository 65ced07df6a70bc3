//! Turning session changes into function invocations. Events only say *what* changed;
//! the functions re-read the object and claim it, so duplicate, late or out-of-order
//! deliveries are harmless (level-triggered, as controllers are).
//!
//! This module has the in-process router used by the demo and tests: a
//! `kube::runtime::watcher` on BackupSessions and RestoreSessions that hands every Pending
//! session to the backup or restore logic in this process.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;

use crate::api::{BackupSession, RestoreSession, SessionPhase};
use crate::backup::Context;
use crate::events::SessionRef;
use crate::session::HasPhase;

fn pending<K: HasPhase>(k: &K) -> bool {
    matches!(k.phase(), None | Some(SessionPhase::Pending))
}

fn to_ref<K: kube::Resource>(kind: &str, k: &K) -> SessionRef {
    SessionRef {
        kind: Some(kind.into()),
        namespace: k.namespace().unwrap_or_default(),
        name: k.name_any(),
    }
}

/// Watch BackupSessions and RestoreSessions in all namespaces and run the backup or restore
/// for each Pending one, in this process, until the returned future is dropped.
pub async fn route_in_process(ctx: Arc<Context>) {
    let backups: Api<BackupSession> = Api::all(ctx.kube.clone());
    let restores: Api<RestoreSession> = Api::all(ctx.kube.clone());
    let mut running = JoinSet::new();
    let mut b = std::pin::pin!(watcher::watcher(backups, watcher::Config::default()));
    let mut r = std::pin::pin!(watcher::watcher(restores, watcher::Config::default()));
    loop {
        tokio::select! {
            Some(ev) = b.next() => match ev {
                Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) if pending(&s) => {
                    let (ctx, target) = (ctx.clone(), to_ref("BackupSession", &s));
                    running.spawn(async move {
                        if let Err(e) = crate::backup::run(&ctx, &target, None).await {
                            tracing::warn!(session = %target.name, error = %e, "backup invocation failed");
                        }
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "BackupSession watch error (the watcher retries)"),
            },
            Some(ev) = r.next() => match ev {
                Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) if pending(&s) => {
                    let (ctx, target) = (ctx.clone(), to_ref("RestoreSession", &s));
                    running.spawn(async move {
                        if let Err(e) = crate::restore::run(&ctx, &target, None).await {
                            tracing::warn!(session = %target.name, error = %e, "restore invocation failed");
                        }
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "RestoreSession watch error (the watcher retries)"),
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
}

/// Wait until a session reaches a final phase, by watching it. Returns the final object.
pub async fn follow<K>(api: &Api<K>, name: &str) -> crate::Result<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + HasPhase
        + 'static,
{
    let mut stream = std::pin::pin!(watcher::watch_object(api.clone(), name));
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Some(k)) if k.phase().is_some_and(|p| p.is_final()) => return Ok(k),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "watch error while following {name}"),
        }
    }
    Err(crate::Error::Invalid(format!(
        "stopped following {name}: the watch ended"
    )))
}
