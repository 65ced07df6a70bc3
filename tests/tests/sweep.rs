//! The sweep in the scheduler tick: lost sessions end Failed with a reason, sessions whose
//! configuration is gone end Failed, and a session whose event was lost is found and run.

use chrono::{Duration, Utc};
use kube::ResourceExt;
use serde_json::json;
use stashless::api::{BackupConfiguration, SessionPhase};
use stashless::context::NamespaceScope;
use stashless::session::{self, Claim};
use stashless::sweep::{SweepSettings, sweep};
use stashless_tests::{Cluster, ConfigBuilder, NS, World, init_logs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_running_sessions_and_orphans_end_failed_and_live_ones_are_left_alone() {
    init_logs();
    let cluster = Cluster::start().await.unwrap();
    cluster
        .backup_config(ConfigBuilder::new("cfg"))
        .await
        .unwrap();
    let api = cluster.api();
    // Claimed with a deadline already past: its function is gone.
    let lost = cluster.new_session("cfg", "cfg-lost").await.unwrap();
    let Claim::Claimed(_) = session::claim(&api, &lost, Utc::now() - Duration::seconds(1))
        .await
        .unwrap()
    else {
        panic!()
    };
    // Claimed with a deadline ahead: someone is working on it.
    let live = cluster.new_session("cfg", "cfg-live").await.unwrap();
    let Claim::Claimed(_) = session::claim(&api, &live, Utc::now() + Duration::minutes(10))
        .await
        .unwrap()
    else {
        panic!()
    };
    // A Pending session stashless created, of a configuration that was deleted; and one
    // that Stash's CronJob created (not ours: left exactly as it is).
    cluster
        .new_stashless_session("gone", "gone-1")
        .await
        .unwrap();
    let stash_orphan = cluster.new_session("gone", "gone-stash").await.unwrap();
    // A restore that lost its function.
    let rs = cluster
        .new_restore("rs-lost", "repo", "vault", None, false)
        .await
        .unwrap();
    let Claim::Claimed(_) = session::claim(&cluster.api(), &rs, Utc::now() - Duration::seconds(1))
        .await
        .unwrap()
    else {
        panic!()
    };

    let settings = SweepSettings::default();
    let report = sweep(
        &cluster.client,
        &NamespaceScope::all(),
        Utc::now(),
        &settings,
    )
    .await
    .unwrap();
    // The lost backup goes back to the backup function first, to be settled from the
    // repository (tests/tests/fault.rs); the restore and the orphan end Failed at once.
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(
        report.redispatch.iter().any(|r| r.name == "cfg-lost"),
        "{report:?}"
    );
    assert_eq!(
        cluster
            .session("cfg-lost")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(SessionPhase::Running)
    );
    // Nobody settled it within the grace: the sweep fails it itself.
    let later = Utc::now() + settings.settle_grace + Duration::seconds(2);
    let report = sweep(&cluster.client, &NamespaceScope::all(), later, &settings)
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let s = cluster.session("cfg-lost").await.unwrap().status.unwrap();
    assert_eq!(s.phase, Some(SessionPhase::Failed));
    assert!(
        s.targets[0].stats[0]
            .error
            .as_deref()
            .unwrap()
            .contains("deadline exceeded")
    );
    assert!(s.conditions.iter().any(|c| c.type_ == "DeadlineExceeded"));
    assert!(
        cluster
            .schema_violations("backupsessions", "cfg-lost")
            .await
            .is_empty()
    );
    assert_eq!(
        cluster
            .session("gone-stash")
            .await
            .unwrap()
            .resource_version(),
        stash_orphan.resource_version()
    );
    let g = cluster.session("gone-1").await.unwrap().status.unwrap();
    assert_eq!(g.phase, Some(SessionPhase::Failed));
    assert!(
        g.targets[0].stats[0]
            .error
            .as_deref()
            .unwrap()
            .contains("BackupConfiguration vault/gone no longer exists")
    );
    let r = cluster
        .restore_session("rs-lost")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(r.phase, Some(SessionPhase::Failed));
    assert!(
        cluster
            .schema_violations("restoresessions", "rs-lost")
            .await
            .is_empty()
    );
    assert_eq!(
        cluster
            .session("cfg-live")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(SessionPhase::Running)
    );
    // A second sweep finds nothing more to do.
    let again = sweep(&cluster.client, &NamespaceScope::all(), later, &settings)
        .await
        .unwrap();
    assert!(again.failed.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_event_was_lost_is_found_and_run() {
    let w = World::standard("sweep", "").await;
    let cluster = &w.cluster;
    w.bao().kv_put("app/x", json!({"v": "1"})).await.unwrap();
    cluster.new_session("cfg", "cfg-1").await.unwrap();
    // Within the grace period: not redispatched (its event may still be on the way).
    let early = sweep(
        &cluster.client,
        &NamespaceScope::all(),
        Utc::now(),
        &SweepSettings::default(),
    )
    .await
    .unwrap();
    assert!(early.redispatch.is_empty(), "{early:?}");
    // Three minutes later nobody has claimed it: the sweep hands it out again.
    let later = sweep(
        &cluster.client,
        &NamespaceScope::all(),
        Utc::now() + Duration::minutes(3),
        &SweepSettings::default(),
    )
    .await
    .unwrap();
    assert_eq!(later.redispatch.len(), 1, "{later:?}");
    assert_eq!(later.redispatch[0].name, "cfg-1");
    let outcome = stashless::backup::run(&w.ctx(), &later.redispatch[0], None)
        .await
        .unwrap();
    assert!(
        matches!(outcome, stashless::session::Outcome::Succeeded { .. }),
        "{outcome:?}"
    );
    // Deleting the configuration later does not touch finished sessions.
    let configs: kube::Api<BackupConfiguration> = cluster.api();
    configs.delete("cfg", &Default::default()).await.unwrap();
    let after = sweep(
        &cluster.client,
        &NamespaceScope::only([NS]),
        Utc::now(),
        &SweepSettings::default(),
    )
    .await
    .unwrap();
    assert!(after.failed.is_empty(), "{after:?}");
    assert_eq!(
        cluster
            .session("cfg-1")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(SessionPhase::Succeeded)
    );
}
