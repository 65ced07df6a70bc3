//! `spec.retryConfig` (issue 16): a failed backup is followed by a new BackupSession after
//! `delay`, at most `maxRetry` times, as Stash retries; the retry is visible on both
//! sessions (a condition on the failed one, `retryLeft` and annotations on the new one);
//! a failure only an edit can fix is never retried; `OnFinalRetryFailure` post-hooks run
//! once, after the last retry.

use chrono::{Duration, TimeZone, Utc};
use kube::ResourceExt;
use serde_json::{Value, json};
use stashless::api::{BackupSession, Condition, SessionPhase};
use stashless::backup;
use stashless::events::Tick;
use stashless::scheduler::{SchedulerSettings, TickReport, tick};
use stashless::session::HasPhase;
use stashless_tests::hook_server::HookServer;
use stashless_tests::{ConfigBuilder, NS, World, failed_reason, session_ref};

/// Nothing listens here: every backup fails as a Vault outage does (a retry may help).
const NO_VAULT: &str = "http://127.0.0.1:9";

fn retry_condition(s: &BackupSession) -> Option<Condition> {
    s.conditions()
        .into_iter()
        .find(|c| c.type_ == "BackupRetryScheduled")
}

async fn tick_at(w: &World, at: chrono::DateTime<Utc>) -> TickReport {
    tick(
        &w.cluster.client,
        &Tick { time: Some(at) },
        &SchedulerSettings::default(),
    )
    .await
    .unwrap()
}

async fn run(w: &World, name: &str) -> String {
    failed_reason(
        &backup::run(&w.ctx(), &session_ref(name), None)
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_is_retried_after_the_delay_at_most_max_retry_times() {
    let hook = HookServer::start().await.unwrap();
    let w = World::builder("retry")
        .app_binding_to(NO_VAULT, "t")
        .repository("/retry/")
        .backup_configuration(
            ConfigBuilder::new("cfg")
                // Once a year: the ticks below at today's time find no slot due.
                .schedule("0 10 1 1 *")
                .retry(json!({"maxRetry": 2, "delay": "1m"}))
                .hooks(json!({"postBackup": {"executionPolicy": "OnFinalRetryFailure", "httpPost": {
                    "host": "127.0.0.1", "port": hook.port(), "path": "/final", "body": "{{ .Name }}"}}})),
        )
        .build()
        .await;
    let slot = Utc.with_ymd_and_hms(2099, 1, 1, 10, 0, 0).unwrap();
    let report = tick_at(&w, slot + Duration::minutes(2)).await;
    let first = format!("cfg-{}", slot.timestamp());
    assert_eq!(report.created, vec![format!("{NS}/{first}")]);
    assert!(report.retried.is_empty());
    // As Stash's CronJob writes it: the retries this session may have.
    let s = w.cluster.session(&first).await.unwrap();
    assert_eq!(s.spec.retry_left, Some(2));

    // Attempt 0 fails; a retry is announced for a minute later, not created yet.
    let reason = run(&w, &first).await;
    assert!(reason.contains("127.0.0.1:9"), "{reason}");
    let failed_at = Utc::now();
    let s = w.cluster.session(&first).await.unwrap();
    let c = retry_condition(&s).unwrap();
    assert_eq!(c.status, "True");
    let msg = c.message.unwrap();
    assert!(
        msg.starts_with(&format!(
            "retry 1 of 2: BackupSession {first}-retry-1 is created at "
        )),
        "{msg}"
    );
    assert!(hook.calls_to("/final").is_empty(), "a retry follows");
    let now = tick_at(&w, failed_at).await;
    assert!(now.retried.is_empty(), "before the delay: {now:?}");
    assert_eq!(w.cluster.sessions().await.unwrap().len(), 1);

    // A minute later the tick creates retry 1, then (after it fails) retry 2.
    let mut at = failed_at;
    for attempt in 1..=2u32 {
        at += Duration::seconds(61);
        let name = format!("{first}-retry-{attempt}");
        let report = tick_at(&w, at).await;
        assert_eq!(report.retried, vec![format!("{NS}/{name}")], "{report:?}");
        assert!(report.created.contains(&format!("{NS}/{name}")));
        // A repeated tick creates nothing more.
        assert!(tick_at(&w, at).await.retried.is_empty());
        let retry = w.cluster.session(&name).await.unwrap();
        assert_eq!(retry.spec.retry_left, Some(2 - attempt as i32));
        assert_eq!(retry.annotations()["stashless.io/retry-of"], first);
        assert_eq!(
            retry.annotations()["stashless.io/retry-attempt"],
            attempt.to_string()
        );
        assert_eq!(retry.labels()["stash.appscode.com/invoker-name"], "cfg");
        assert_eq!(retry.spec.invoker.name, "cfg");
        assert_eq!(retry.phase(), None, "created Pending");
        run(&w, &name).await;
        at = Utc::now();
    }
    // The last retry failed with none left: said so, the final post-hook ran once, and no
    // more sessions come.
    let last = w
        .cluster
        .session(&format!("{first}-retry-2"))
        .await
        .unwrap();
    assert_eq!(last.phase(), Some(SessionPhase::Failed));
    let c = retry_condition(&last).unwrap();
    assert_eq!(c.status, "False");
    assert!(
        c.message.unwrap().starts_with("not retried: no retry left"),
        "{last:?}"
    );
    let finals = hook.calls_to("/final");
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_eq!(finals[0].body, format!("{first}-retry-2"));
    let report = tick_at(&w, Utc::now() + Duration::hours(1)).await;
    assert!(report.retried.is_empty(), "{report:?}");
    assert_eq!(w.cluster.sessions().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_delay_the_retry_is_created_at_once_and_an_edit_failure_is_not_retried() {
    let w = World::builder("retry-now")
        .app_binding_to(NO_VAULT, "t")
        .repository("/retry-now/")
        .build()
        .await;
    let config = |name: &str, repo: &str| {
        let mut c: Value = ConfigBuilder::new(name)
            .repository(repo)
            .retry(json!({"maxRetry": 1}))
            .build();
        c["metadata"]["namespace"] = json!(NS);
        c
    };
    let _: stashless::api::BackupConfiguration =
        w.cluster.create(config("outage", "repo")).await.unwrap();
    // A Repository that does not exist: only an edit fixes that.
    let _: stashless::api::BackupConfiguration = w
        .cluster
        .create(config("typo", "no-such-repo"))
        .await
        .unwrap();
    for name in ["outage", "typo"] {
        let mut s = json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
            "metadata": {"name": format!("{name}-1"), "labels": {
                "stash.appscode.com/invoker-type": "BackupConfiguration",
                "stash.appscode.com/invoker-name": name}},
            "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": name},
                     "retryLeft": 1},
        });
        s["metadata"]["namespace"] = json!(NS);
        let _: BackupSession = w.cluster.create(s).await.unwrap();
    }

    run(&w, "outage-1").await;
    let retry = w.cluster.session("outage-1-retry-1").await.unwrap();
    assert_eq!(retry.spec.retry_left, Some(0));

    let reason = run(&w, "typo-1").await;
    assert!(reason.contains("no-such-repo"), "{reason}");
    let s = w.cluster.session("typo-1").await.unwrap();
    let c = retry_condition(&s).unwrap();
    assert_eq!(c.status, "False");
    assert!(
        c.message.unwrap().contains("needs an edit"),
        "{:?}",
        s.status
    );
    let report = tick_at(&w, Utc::now() + Duration::hours(1)).await;
    assert!(report.retried.is_empty(), "{report:?}");
    assert!(w.cluster.session("typo-1-retry-1").await.is_err());
}
