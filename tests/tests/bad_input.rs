//! Bad input, tried on purpose (issue 9): malformed and oversized events, and Stash objects
//! holding what a person could write by mistake (or on purpose). Every case must end in a
//! status a person can act on (a session Failed, a configuration Invalid) whose reason
//! names the field and what is wrong; nothing may panic, nothing may be written outside
//! the Repository's prefix (nothing at all when the input is refused), no multipart upload
//! may stay open, and no secret value may appear in a reason.
//!
//! Values a real API server refuses at admission (wrong types, enum violations) are
//! asserted as refused there; everything else is accepted by Stash's CRD schema and must
//! be refused by stashless.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{TimeZone, Utc};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use stashless::api::{BackupConfiguration, Repository, RestoreSession, SessionPhase};
use stashless::backup;
use stashless::context::{Context, Settings};
use stashless::error::Error;
use stashless::events::{MAX_EVENT_BYTES, SessionRef, Tick};
use stashless::scheduler::{SchedulerSettings, tick};
use stashless::session::Outcome;
use stashless_tests::procs::openbao::OpenBao;
use stashless_tests::{Cluster, ConfigBuilder, NS, World, session_ref};

/// Part of every secret value planted by these tests: it must never show up in a reason.
const MARK: &str = "sEcReT-9f2c";
/// Nothing listens here: a case that got past validation fails with "cannot connect".
const NO_VAULT: &str = "http://127.0.0.1:9";

fn token() -> String {
    format!("hvs.{MARK}")
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

/// One world (a bucket, a token-holding AppBinding `vault` that points nowhere unless
/// given a Vault), shared S3 keys in Secret `s3`, one function context: each case adds its
/// own objects under its own names.
struct Bench {
    w: World,
    ctx: Arc<Context>,
}

impl Deref for Bench {
    type Target = World;

    fn deref(&self) -> &World {
        &self.w
    }
}

impl Bench {
    async fn new(tag: &str) -> Bench {
        Self::with_vault(tag, NO_VAULT, &token()).await
    }

    async fn with_vault(tag: &str, addr: &str, token: &str) -> Bench {
        let w = World::builder(tag)
            .s3()
            .app_binding_to(addr, token)
            .build()
            .await;
        let keys = [
            ("AWS_ACCESS_KEY_ID", w.s3().access_key.as_bytes()),
            ("AWS_SECRET_ACCESS_KEY", w.s3().secret_key.as_bytes()),
        ];
        secret(&w.cluster, NS, "s3", &keys).await;
        let ctx = w.ctx();
        Bench { w, ctx }
    }

    /// A Repository on this test's Garage bucket with the shared keys; `s3` overrides
    /// fields of `spec.backend.s3`, `spec` fields of `spec`.
    fn repository_json(&self, name: &str, s3: Value, spec: Value) -> Value {
        let mut backend_s3 = json!({
            "endpoint": self.s3().endpoint, "bucket": self.bucket(), "prefix": name, "region": self.s3().region,
        });
        merge(&mut backend_s3, s3);
        let mut spec_json = json!({"backend": {"s3": backend_s3, "storageSecretName": "s3"}});
        merge(&mut spec_json, spec);
        json!({
            "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
            "metadata": {"name": name},
            "spec": spec_json,
        })
    }

    async fn repository(&self, name: &str, s3: Value) {
        self.cluster
            .create::<Repository>(self.repository_json(name, s3, json!({})))
            .await
            .unwrap();
    }

    /// The names of every BackupSession in the namespace.
    async fn session_names(&self) -> Vec<String> {
        self.cluster
            .sessions()
            .await
            .unwrap()
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect()
    }

    /// A configuration `cfg` (Repository `repo`, AppBinding `target`) with `spec` merged in.
    async fn config(&self, cfg: &str, repo: &str, target: &str, spec: Value) {
        let mut c = ConfigBuilder::new(cfg)
            .repository(repo)
            .target(target)
            .build();
        merge(&mut c["spec"], spec);
        self.cluster.create::<BackupConfiguration>(c).await.unwrap();
    }

    /// Run a new session of `cfg` through the backup function; it must fail with every
    /// `expect` in its reason (case-insensitive), stored on the session, and no secret.
    async fn backup_fails(&self, cfg: &str, expect: &[&str]) -> String {
        let name = format!("{cfg}-1");
        self.cluster.new_session(cfg, &name).await.unwrap();
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            backup::run(&self.ctx, &session_ref(&name), None),
        )
        .await
        .expect("the backup function answers within a minute")
        .unwrap();
        let Outcome::Failed { reason } = outcome else {
            panic!("{cfg}: expected Failed, got {outcome:?}")
        };
        self.check_reason(cfg, &reason, expect);
        let st = self.cluster.session(&name).await.unwrap().status.unwrap();
        assert_eq!(st.phase, Some(SessionPhase::Failed), "{cfg}");
        assert_eq!(
            st.targets[0].stats[0].error.as_deref(),
            Some(reason.as_str())
        );
        // The claim wrote a deadline from the default limit, never from a refused timeOut.
        let deadline =
            chrono::DateTime::parse_from_rfc3339(st.session_deadline.as_deref().unwrap()).unwrap();
        assert!(
            deadline < Utc::now() + chrono::Duration::hours(1),
            "{deadline}"
        );
        let v = self
            .cluster
            .schema_violations("backupsessions", &name)
            .await;
        assert!(v.is_empty(), "{v:?}");
        reason
    }

    /// A RestoreSession (as JSON) must fail the same way.
    async fn restore_fails(&self, ctx: &Context, rs: Value, expect: &[&str]) -> String {
        let name = rs["metadata"]["name"].as_str().unwrap().to_string();
        self.cluster.create::<RestoreSession>(rs).await.unwrap();
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            stashless::restore::run(ctx, &session_ref(&name), None),
        )
        .await
        .expect("the restore function answers within a minute")
        .unwrap();
        let Outcome::Failed { reason } = outcome else {
            panic!("{name}: expected Failed, got {outcome:?}")
        };
        self.check_reason(&name, &reason, expect);
        let st = self.cluster.restore_session(&name).await.unwrap().status;
        let st = st.unwrap();
        assert_eq!(st.phase, Some(SessionPhase::Failed), "{name}");
        assert_eq!(st.stats[0].error.as_deref(), Some(reason.as_str()));
        reason
    }

    fn check_reason(&self, case: &str, reason: &str, expect: &[&str]) {
        for e in expect {
            assert!(
                reason.to_lowercase().contains(&e.to_lowercase()),
                "{case}: reason {reason:?} lacks {e:?}"
            );
        }
        for secret in [MARK, "hvs.", self.s3().secret_key.as_str()] {
            assert!(
                !reason.contains(secret),
                "{case}: a secret leaked into the reason: {reason}"
            );
        }
        assert!(
            !reason.chars().any(char::is_control),
            "{case}: raw control characters in the reason: {reason:?}"
        );
    }

    /// Every object in the bucket is under one of `prefixes` (none at all when empty), no
    /// upload is open, no session is left Running.
    async fn assert_contained(&self, prefixes: &[&str]) {
        let keys = self.s3().keys(self.bucket(), "").await.unwrap();
        for k in &keys {
            assert!(
                prefixes.iter().any(|p| k.starts_with(&format!("{p}/"))),
                "{k} is outside the prefixes {prefixes:?}"
            );
        }
        assert_eq!(
            self.s3().open_uploads(self.bucket()).await.unwrap(),
            0,
            "incomplete multipart uploads left behind"
        );
        for s in self.cluster.sessions().await.unwrap() {
            let phase = s.status.as_ref().and_then(|st| st.phase);
            assert_ne!(phase, Some(SessionPhase::Running), "{:?}", s.metadata.name);
        }
    }

    /// One scheduler tick when `*/5` slots are due; the named configurations must come out
    /// Invalid with every `expect` of theirs in the ValidationPassed message, and no session.
    async fn tick_marks_invalid(&self, cases: &[(String, Vec<&str>)]) {
        let t = Tick {
            time: Some(Utc.with_ymd_and_hms(2099, 1, 5, 10, 0, 30).unwrap()),
        };
        let report = tick(&self.cluster.client, &t, &SchedulerSettings::default())
            .await
            .unwrap();
        for (cfg, expect) in cases {
            let key = format!("{NS}/{cfg}");
            let why = report
                .invalid
                .get(&key)
                .unwrap_or_else(|| panic!("{key} not Invalid: {report:?}"));
            self.check_reason(cfg, why, expect);
            assert!(
                !report
                    .created
                    .iter()
                    .any(|c| c.starts_with(&format!("{key}-"))),
                "{key} got a session: {:?}",
                report.created
            );
            let c: BackupConfiguration = self.cluster.api().get(cfg).await.unwrap();
            let st = c.status.unwrap();
            assert_eq!(st.phase.as_deref(), Some("Invalid"), "{cfg}");
            let v = st
                .conditions
                .iter()
                .find(|c| c.type_ == "ValidationPassed")
                .unwrap();
            assert_eq!(v.status, "False");
            assert_eq!(v.message.as_deref(), Some(why.as_str()));
        }
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A Secret's data as the test writes it: key, raw bytes.
type SecretData<'a> = Vec<(&'a str, &'a [u8])>;

async fn secret(cluster: &Cluster, ns: &str, name: &str, data: &[(&str, &[u8])]) {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(b64(v))))
        .collect();
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

/// An AppBinding `name` reading its token from Secret `secret`.
async fn binding(cluster: &Cluster, name: &str, url: &str, secret: Option<&str>) {
    let mut spec = json!({"type": "vault", "clientConfig": {"url": url}});
    if let Some(s) = secret {
        spec["secret"] = json!({"kind": "Secret", "name": s});
    }
    cluster
        .create::<stashless::api::AppBinding>(json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": name}, "spec": spec,
        }))
        .await
        .unwrap();
}

// ------------------------------------------------------------------------------ events

/// What the Lambda handlers do with a refused event: answer `rejected` (no retry).
fn assert_refused(e: Error, case: &str) {
    assert!(matches!(e, Error::BadEvent(_)), "{case}: {e:?}");
    assert!(!e.is_retryable(), "{case}: {e}");
    let text = e.to_string();
    assert!(text.len() < 1000, "{case}: {} bytes of reason", text.len());
    assert!(!text.chars().any(char::is_control), "{case}: {text:?}");
    let answer = stashless::lambda::respond(Err(e)).expect("a refused event is not an error");
    assert_eq!(answer["status"], "rejected", "{case}: {answer}");
}

#[test]
fn malformed_and_oversized_events_are_refused_without_retry() {
    let big = "y".repeat(300 * 1024);
    let envelope = |detail: Value| {
        json!({
            "version": "0", "id": "x", "detail-type": "BackupSession Added", "source": "stashless.bridge",
            "account": "1", "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail,
        })
    };
    let mut deep = json!("x");
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let sessions = [
        json!(null),
        json!(42),
        json!([]),
        json!("vault/x"),
        json!({}),
        json!({"namespace": "vault"}),
        json!({"name": "x"}),
        json!({"namespace": 5, "name": "x"}),
        json!({"namespace": "vault", "name": null}),
        json!({"namespace": "vault", "name": {"a": 1}}),
        json!({"namespace": "vault", "name": deep}),
        json!({"namespace": "vault", "name": ""}),
        json!({"namespace": "vault", "name": "../../etc/passwd"}),
        json!({"namespace": "vault", "name": "a/b"}),
        json!({"namespace": "..", "name": "x"}),
        json!({"namespace": "vault", "name": "UPPER"}),
        json!({"namespace": "vault", "name": "-x"}),
        json!({"namespace": "vault", "name": "x\u{0}y"}),
        json!({"namespace": "vault", "name": "x\ny"}),
        json!({"namespace": "vault", "name": "x\u{1b}[31my"}),
        json!({"namespace": "vault", "name": "é"}),
        json!({"namespace": "vault", "name": "a".repeat(254)}),
        json!({"namespace": "a".repeat(64), "name": "x"}),
        json!({"namespace": "vault", "name": "x".repeat(200 * 1024)}),
        json!({"kind": "RestoreSession", "namespace": "vault", "name": "x"}),
        json!({"kind": "k\n".repeat(50_000), "namespace": "vault", "name": "x"}),
        json!({"namespace": "vault", "name": "x", "pad": big}),
        json!({"namespace": "vault", "name": "x", "pad": "z".repeat(6 * 1024 * 1024)}),
        envelope(json!("x".repeat(200 * 1024))),
        envelope(json!({"namespace": "vault"})),
        envelope(json!({"namespace": "vault", "name": "x", "pad": big})),
        json!({"detail-type": "BackupSession Added", "detail": {"namespace": "vault", "name": "x"}}),
    ];
    for (i, event) in sessions.iter().enumerate() {
        let case = format!("session event {i}");
        let e = SessionRef::from_event(event, "BackupSession").unwrap_err();
        assert_refused(e, &case);
    }
    let too_big = SessionRef::from_event(&sessions[26], "BackupSession").unwrap_err();
    assert!(
        too_big
            .to_string()
            .contains(&format!("more than {MAX_EVENT_BYTES}")),
        "{too_big}"
    );

    let ticks = [
        json!(42),
        json!("now"),
        json!([]),
        json!({"time": "yesterday"}),
        json!({"time": 5}),
        json!({"time": {"t": 1}}),
        json!({"time": "9999-99-99T99:99:99Z"}),
        json!({"time": "2026-01-01T00:00:00Z\n"}),
        json!({"time": "x".repeat(200 * 1024)}),
        json!({"time": "2026-01-01T00:00:00Z", "pad": big}),
        json!({"detail-type": "Scheduled Event", "time": "garbage", "detail": {}}),
    ];
    for (i, event) in ticks.iter().enumerate() {
        let e = Tick::from_event(event).unwrap_err();
        assert_refused(e, &format!("tick {i}"));
    }
    // What a Lambda runtime hands over is parsed JSON; text nested deeper than serde's limit
    // never becomes an event (the runtime reports it as an invalid payload).
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(serde_json::from_str::<Value>(&nested).is_err());
}

// ------------------------------------------------------------------------ schedules

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cron_schedules_mark_the_configuration_invalid() {
    let b = Bench::new("badcron").await;
    b.repository("repo", json!({})).await;
    let long = "0 ".repeat(5000);
    let schedules: Vec<(&str, &str)> = vec![
        ("", "schedule is empty"),
        ("   ", "schedule is empty"),
        ("* * *", "3 fields"),
        ("* * * * * *", "6 fields"),
        ("0 0 1 1 * 2000", "6 fields"),
        // A field out of range or malformed is named, with the values it takes.
        ("61 * * * *", "the minute field \"61\" is not valid"),
        ("0 24 * * *", "hour takes 0-23"),
        ("*/0 * * * *", "the minute field \"*/0\""),
        ("1-60 * * * *", "minute takes 0-59"),
        ("0 0 * * 8", "day-of-week takes 0-7"),
        ("a b c d e", "the minute field \"a\""),
        ("0 0 * * *\u{7}", "the day-of-week field \"*\\u{7}\""),
        ("@every 5m", "not a valid cron expression"),
        ("@reboot", "not a valid cron expression"),
        ("CRON_TZ=Mars/Olympus 0 * * * *", "unknown time zone"),
        ("TZ=../../etc/passwd 0 * * * *", "unknown time zone"),
        ("0 0 31 2 *", "never comes due"),
        ("0 0 30,31 2 *", "never"),
        (long.as_str(), "fields"),
    ];
    let mut cases = Vec::new();
    for (i, (schedule, expect)) in schedules.iter().enumerate() {
        let cfg = format!("cron-{i}");
        b.config(&cfg, "repo", "vault", json!({"schedule": schedule}))
            .await;
        let mut expect = vec![*expect];
        if !schedule.trim().is_empty() {
            expect.push("schedule");
        }
        cases.push((cfg, expect));
    }
    b.config("good", "repo", "vault", json!({})).await;
    b.tick_marks_invalid(&cases).await;
    for (cfg, _) in &cases {
        let c: BackupConfiguration = b.cluster.api().get(cfg).await.unwrap();
        let msg = c.status.unwrap().conditions[0].message.clone().unwrap();
        assert!(msg.len() < 500, "{cfg}: {} bytes of message", msg.len());
    }
    // Each Invalid configuration also gets a Warning Event with the reason, as Stash
    // records one; the valid one gets none.
    let events: Api<Event> = Api::namespaced(b.cluster.client.clone(), NS);
    let events = events.list(&Default::default()).await.unwrap().items;
    for (cfg, _) in &cases {
        assert!(
            events
                .iter()
                .any(|e| e.involved_object.name.as_deref() == Some(cfg)
                    && e.reason.as_deref() == Some("ResourceValidationFailed")
                    && e.type_.as_deref() == Some("Warning")),
            "{cfg}: no Event"
        );
    }
    assert!(
        !events
            .iter()
            .any(|e| e.involved_object.name.as_deref() == Some("good"))
    );
    let sessions = b.session_names().await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert!(sessions[0].starts_with("good-"), "{sessions:?}");
    b.assert_contained(&[]).await;
}

/// Stash fields stashless does not act on make the configuration Invalid with a reason that
/// names them, instead of being ignored; the other configurations run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stash_fields_stashless_does_not_act_on_are_refused_aloud() {
    let b = Bench::new("refused").await;
    b.repository("repo", json!({})).await;
    let refused: Vec<(&str, Value, &str)> = vec![
        (
            "exec-hook",
            json!({"hooks": {"preBackup": {"exec": {"command": ["sh", "-c", "sync"]}, "containerName": "vault"}}}),
            "spec.hooks.preBackup.exec cannot run",
        ),
        (
            "hook-variable",
            json!({"hooks": {"postBackup": {"httpPost": {"host": "hooks.example", "port": 8080, "body": "{{ .Status.Reason }}"}}}}),
            "spec.hooks.postBackup.httpPost.body: the template action {{ .Status.Reason }} is not supported",
        ),
        (
            "retry",
            json!({"retryConfig": {"maxRetry": -1, "delay": "1m"}}),
            "spec.retryConfig.maxRetry is -1: it must be a whole number from 0 to 100",
        ),
        (
            "tags",
            json!({"retentionPolicy": {"keepTags": ["gold"]}}),
            "keepTags is set",
        ),
        (
            "pg-task",
            json!({"task": {"name": "postgres-backup-14.0"}}),
            "spec.task.name is \"postgres-backup-14.0\"",
        ),
        (
            "params",
            json!({"task": {"params": [{"name": "x", "value": "y"}]}}),
            "spec.task.params is set",
        ),
        (
            "alias",
            json!({"target": {"alias": "db"}}),
            "spec.target.alias is set",
        ),
    ];
    let mut cases = Vec::new();
    for (cfg, spec, expect) in &refused {
        b.config(cfg, "repo", "vault", spec.clone()).await;
        cases.push((cfg.to_string(), vec![*expect]));
    }
    b.config("good", "repo", "vault", json!({})).await;
    b.tick_marks_invalid(&cases).await;
    let sessions = b.session_names().await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert!(sessions[0].starts_with("good-"), "{sessions:?}");
    // A session of a refused configuration, delivered anyway, fails with the same reason
    // before Vault or S3 is touched.
    b.backup_fails("exec-hook", &["spec.hooks.preBackup.exec cannot run"])
        .await;
    // A Repository with another backend beside s3 (the other would be silently unused).
    b.cluster
        .create::<Repository>(b.repository_json(
            "two-backends",
            json!({}),
            json!({"backend": {"gcs": {"bucket": "elsewhere"}}}),
        ))
        .await
        .unwrap();
    b.config("two-backends", "two-backends", "vault", json!({}))
        .await;
    b.backup_fails(
        "two-backends",
        &[
            "sets spec.backend.gcs beside spec.backend.s3",
            "remove spec.backend.gcs",
        ],
    )
    .await;
}

// ------------------------------------------------------------------------ retention

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_or_absurd_retention_counts_fail_before_anything_is_written() {
    let b = Bench::new("badkeep").await;
    b.repository("repo", json!({})).await;
    let policies = [
        ("keepLast", json!(-1), "must be 0 or more"),
        ("keepDaily", json!(-3), "must be 0 or more"),
        ("keepWeekly", json!(i64::MIN), "must be 0 or more"),
        ("keepLast", json!(1_000_000_000), "at most 1000000"),
        ("keepHourly", json!(1_000_001), "at most 1000000"),
        ("keepYearly", json!(i64::MAX), "at most 1000000"),
    ];
    let mut cases = Vec::new();
    for (i, (field, value, expect)) in policies.iter().enumerate() {
        let cfg = format!("keep-{i}");
        let mut rp = json!({"name": "p", "prune": true});
        rp[*field] = value.clone();
        b.config(&cfg, "repo", "vault", json!({"retentionPolicy": rp}))
            .await;
        cases.push((cfg, vec![*field, *expect, "retentionPolicy"]));
    }
    b.tick_marks_invalid(&cases).await;
    for (cfg, expect) in &cases {
        b.backup_fails(cfg, expect).await;
    }
    // Wrong types never get past the API server's schema.
    for (i, value) in [json!("5"), json!(1.5), json!(true), json!([3])]
        .into_iter()
        .enumerate()
    {
        let mut c = ConfigBuilder::new(&format!("typed-{i}")).build();
        c["spec"]["retentionPolicy"]["keepLast"] = value.clone();
        assert!(
            b.cluster.create::<BackupConfiguration>(c).await.is_err(),
            "keepLast {value} was admitted"
        );
    }
    b.assert_contained(&[]).await;
}

// -------------------------------------------------------------------------- timeOut

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enormous_negative_or_malformed_timeouts_fail_the_session() {
    let b = Bench::new("badtimeout").await;
    b.repository("repo", json!({})).await;
    let values = [
        ("100000h", "longer than 24h"),
        ("99999999999s", "longer than 24h"),
        ("9999999999999999999999h", "not a duration"),
        ("1e9s", "not a duration"),
        ("-5m", "negative"),
        ("0s", "zero"),
        ("30", "not a duration"),
        ("5 minutes", "not a duration"),
        ("1h-5m", "not a duration"),
        ("NaNs", "not a duration"),
        ("∞", "not a duration"),
        ("1h\u{0}", "not a duration"),
    ];
    let mut cases = Vec::new();
    for (i, (value, expect)) in values.iter().enumerate() {
        let cfg = format!("timeout-{i}");
        b.config(&cfg, "repo", "vault", json!({"timeOut": value}))
            .await;
        cases.push((cfg, vec!["spec.timeOut", *expect]));
    }
    b.tick_marks_invalid(&cases).await;
    for (cfg, expect) in &cases {
        b.backup_fails(cfg, expect).await;
    }
    // The same on a RestoreSession.
    for (i, value) in ["100000h", "-5m", "1e9s"].into_iter().enumerate() {
        let name = format!("rs-timeout-{i}");
        b.restore_fails(
            &b.ctx,
            json!({
                "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
                "metadata": {"name": name},
                "spec": {
                    "repository": {"name": "repo"},
                    "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "vault"}},
                    "timeOut": value,
                },
            }),
            &["RestoreSession spec.timeOut"],
        )
        .await;
    }
    b.assert_contained(&[]).await;
}

// --------------------------------------------------------------------------- prefix

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_that_would_leave_the_repository_are_refused() {
    let bao = OpenBao::start().await.unwrap();
    let b = Bench::with_vault("badprefix", &bao.addr, &bao.root_token).await;
    let refused = [
        ("..", "'..'"),
        ("../other-repo", "'..'"),
        ("vault/../../elsewhere", "'..'"),
        ("a/..", "'..'"),
        ("./a", "'.'"),
        ("a/./b", "'.'"),
        ("a\u{0}b", "control characters"),
        ("line\nbreak", "control characters"),
        ("tab\there", "control characters"),
        ("del\u{7f}", "control characters"),
        ("esc\u{1b}[2J", "control characters"),
    ];
    let long = "p".repeat(600);
    let refused = refused
        .iter()
        .copied()
        .chain([(long.as_str(), "longer than the 512")]);
    for (i, (prefix, expect)) in refused.enumerate() {
        let (repo, cfg) = (format!("prefix-{i}"), format!("prefix-cfg-{i}"));
        b.repository(&repo, json!({"prefix": prefix})).await;
        b.config(&cfg, &repo, "vault", json!({})).await;
        let label = format!("Repository {NS}/{repo}");
        b.backup_fails(&cfg, &[&label, "spec.backend.s3.prefix", expect])
            .await;
        b.assert_contained(&[]).await;
    }
    // Slashes are normalised, not refused: everything still lands under the one folder.
    for (i, (prefix, lands)) in [("//a//b//", "a/b"), ("/lead", "lead")]
        .into_iter()
        .enumerate()
    {
        let (repo, cfg) = (format!("slash-{i}"), format!("slash-cfg-{i}"));
        b.repository(&repo, json!({"prefix": prefix})).await;
        b.config(&cfg, &repo, "vault", json!({})).await;
        b.cluster
            .new_session(&cfg, &format!("{cfg}-1"))
            .await
            .unwrap();
        let outcome = backup::run(&b.ctx, &session_ref(&format!("{cfg}-1")), None)
            .await
            .unwrap();
        assert!(
            matches!(outcome, Outcome::Succeeded { .. }),
            "{prefix}: {outcome:?}"
        );
        let keys = b.s3().keys(b.bucket(), lands).await.unwrap();
        assert_eq!(keys.len(), 2, "{prefix}: {keys:?}");
    }
    b.assert_contained(&["a/b", "lead"]).await;
}

// --------------------------------------------------------------------------- bucket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_names_s3_would_refuse_are_refused() {
    let b = Bench::new("badbucket").await;
    let a64 = "a".repeat(64);
    let buckets = [
        "",
        "ab",
        a64.as_str(),
        "UPPER",
        "under_score",
        "-lead",
        "trail-",
        "two..dots",
        "bucket/evil",
        "../etc",
        "bucket?x=1",
        "has space",
        "tab\tbucket",
        "192.168.1.10",
        "bücket",
    ];
    for (i, bucket) in buckets.iter().enumerate() {
        let (repo, cfg) = (format!("bucket-{i}"), format!("bucket-cfg-{i}"));
        b.repository(&repo, json!({"bucket": bucket})).await;
        b.config(&cfg, &repo, "vault", json!({})).await;
        let label = format!("Repository {NS}/{repo}");
        b.backup_fails(
            &cfg,
            &[&label, "spec.backend.s3.bucket", "not a valid bucket name"],
        )
        .await;
    }
    b.assert_contained(&[]).await;
}

// ------------------------------------------------------------------ URLs and endpoints

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_with_credentials_or_path_tricks_are_refused_without_echoing_them() {
    let b = Bench::new("badurl").await;
    let endpoints = [
        (
            format!("https://AKIAEXAMPLE:{MARK}@s3.example.com"),
            "credentials",
        ),
        (format!("AKIAEXAMPLE:{MARK}@s3.example.com"), "credentials"),
        (format!("http://{MARK}@127.0.0.1:3900"), "credentials"),
        (format!("https://AKIA:{MARK}@[::1"), "not a URL"),
        (format!("http://user:{MARK} word@host"), "not a URL"),
        (
            format!("https://s3.example.com?X-Amz-Security-Token={MARK}"),
            "query",
        ),
        (format!("https://s3.example.com/#{MARK}"), "fragment"),
        ("https://s3.example.com/../other-bucket".to_string(), "'..'"),
        ("https://s3.example.com/a/./b".to_string(), "'..'"),
        ("ftp://s3.example.com".to_string(), "http or https"),
        ("javascript:alert(1)".to_string(), "not a URL"),
    ];
    for (i, (endpoint, expect)) in endpoints.iter().enumerate() {
        let (repo, cfg) = (format!("endpoint-{i}"), format!("endpoint-cfg-{i}"));
        b.repository(&repo, json!({"endpoint": endpoint})).await;
        b.config(&cfg, &repo, "vault", json!({})).await;
        let label = format!("Repository {NS}/{repo}");
        b.backup_fails(&cfg, &[&label, "spec.backend.s3.endpoint", expect])
            .await;
    }
    let regions = ["us-east-1\n", "../../evil", "a.b", &"r".repeat(100)];
    for (i, region) in regions.iter().enumerate() {
        let (repo, cfg) = (format!("region-{i}"), format!("region-cfg-{i}"));
        b.repository(&repo, json!({"region": region})).await;
        b.config(&cfg, &repo, "vault", json!({})).await;
        b.backup_fails(&cfg, &["spec.backend.s3.region", "not a region name"])
            .await;
    }
    // Vault addresses: an AppBinding URL with credentials or another scheme.
    // (`vault-token` is the Secret of the AppBinding `vault`.)
    b.repository("repo", json!({})).await;
    let urls = [
        (format!("http://root:{MARK}@127.0.0.1:8200"), "credentials"),
        (format!("https://{MARK}@vault.example.com"), "credentials"),
        ("ftp://vault.example.com".to_string(), "http or https"),
    ];
    for (i, (url, expect)) in urls.iter().enumerate() {
        let (ab, cfg) = (format!("vault-url-{i}"), format!("vault-url-cfg-{i}"));
        binding(&b.cluster, &ab, url, Some("vault-token")).await;
        b.config(&cfg, "repo", &ab, json!({})).await;
        let label = format!("AppBinding {NS}/{ab}");
        b.backup_fails(&cfg, &[&label, "spec.clientConfig.url", expect])
            .await;
    }
    b.assert_contained(&[]).await;
}

// -------------------------------------------------------------------------- Secrets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_missing_keys_or_holding_garbage_are_refused_without_echoing_them() {
    let b = Bench::new("badsecret").await;
    b.repository("repo", json!({})).await;
    let t = token();
    let tail = |rest: &str| format!("{t}{rest}").into_bytes();
    let mut garbage = vec![0xff, 0xfe, 0x00];
    garbage.extend_from_slice(t.as_bytes());
    // (Secret data, what the reason must say). The Secret is `tok-<i>`.
    type Token = Vec<u8>;
    let tokens: Vec<(Vec<(&str, Token)>, &str)> = vec![
        (vec![], "has no key \"token\""),
        (
            vec![("tok", t.clone().into_bytes())],
            "has no key \"token\"",
        ),
        (vec![("token", vec![])], "is empty"),
        (vec![("token", b"  \n ".to_vec())], "is empty"),
        (vec![("token", garbage.clone())], "is not UTF-8"),
        (vec![("token", tail("\nsecond-line"))], "control characters"),
        (vec![("token", tail("\u{0}"))], "control characters"),
        (vec![("token", tail("\u{1b}[31m"))], "control characters"),
        (vec![("token", tail(" tail"))], "never has"),
        (vec![("token", tail("é"))], "never has"),
    ];
    for (i, (data, expect)) in tokens.iter().enumerate() {
        let (sec, ab, cfg) = (
            format!("tok-{i}"),
            format!("vault-tok-{i}"),
            format!("tok-cfg-{i}"),
        );
        let data: SecretData = data.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        secret(&b.cluster, NS, &sec, &data).await;
        binding(&b.cluster, &ab, NO_VAULT, Some(&sec)).await;
        b.config(&cfg, "repo", &ab, json!({})).await;
        b.backup_fails(&cfg, &[&format!("Secret {NS}/{sec}"), expect])
            .await;
    }
    binding(&b.cluster, "vault-nosecret", NO_VAULT, Some("gone")).await;
    b.config("tok-gone", "repo", "vault-nosecret", json!({}))
        .await;
    b.backup_fails("tok-gone", &["Secret vault/gone not found", "Vault token"])
        .await;
    binding(&b.cluster, "vault-unnamed", NO_VAULT, None).await;
    b.config("tok-unnamed", "repo", "vault-unnamed", json!({}))
        .await;
    b.backup_fails("tok-unnamed", &["names no token Secret"])
        .await;

    // Storage Secrets of a Repository: `s3-<i>`.
    let (ak, sk) = (b.s3().access_key.as_bytes(), b.s3().secret_key.as_bytes());
    let mut bad_sk = sk.to_vec();
    bad_sk.extend_from_slice(b"\nsecond-line");
    let storage: Vec<(SecretData, Vec<&str>)> = vec![
        (
            vec![("AWS_ACCESS_KEY_ID", ak)],
            vec!["has AWS_ACCESS_KEY_ID but no AWS_SECRET_ACCESS_KEY"],
        ),
        (
            vec![("AWS_SECRET_ACCESS_KEY", sk)],
            vec!["has AWS_SECRET_ACCESS_KEY but no AWS_ACCESS_KEY_ID"],
        ),
        (
            vec![
                ("AWS_ACCESS_KEY_ID", ak),
                ("AWS_SECRET_ACCESS_KEY", garbage.as_slice()),
            ],
            vec!["AWS_SECRET_ACCESS_KEY", "not UTF-8"],
        ),
        (
            vec![
                ("AWS_ACCESS_KEY_ID", ak),
                ("AWS_SECRET_ACCESS_KEY", bad_sk.as_slice()),
            ],
            vec!["AWS_SECRET_ACCESS_KEY", "control characters"],
        ),
        (
            vec![
                ("AWS_ACCESS_KEY_ID", &b""[..]),
                ("AWS_SECRET_ACCESS_KEY", sk),
            ],
            vec!["AWS_ACCESS_KEY_ID", "is empty"],
        ),
        (
            vec![
                ("AWS_ACCESS_KEY_ID", ak),
                ("AWS_SECRET_ACCESS_KEY", sk),
                ("AWS_SESSION_TOKEN", garbage.as_slice()),
            ],
            vec!["AWS_SESSION_TOKEN", "not UTF-8"],
        ),
    ];
    for (i, (data, expect)) in storage.iter().enumerate() {
        let (sec, repo, cfg) = (
            format!("s3-{i}"),
            format!("repo-s3-{i}"),
            format!("s3-cfg-{i}"),
        );
        secret(&b.cluster, NS, &sec, data).await;
        b.cluster
            .create::<Repository>(b.repository_json(
                &repo,
                json!({}),
                json!({"backend": {"storageSecretName": sec}}),
            ))
            .await
            .unwrap();
        b.config(&cfg, &repo, "vault", json!({})).await;
        let named = format!("Secret {NS}/{sec}");
        let mut expect = expect.clone();
        expect.push(&named);
        b.backup_fails(&cfg, &expect).await;
    }
    b.assert_contained(&[]).await;
}

// ---------------------------------------------------- namespaces (threat model §3, §8)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_namespace_repositories_follow_their_usage_policy() {
    let bao = OpenBao::start().await.unwrap();
    let b = Bench::with_vault("usage", &bao.addr, &bao.root_token).await;
    let shared = "shared";
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": shared}})).unwrap();
    Api::<Namespace>::all(b.cluster.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let keys = [
        ("AWS_ACCESS_KEY_ID", b.s3().access_key.as_bytes()),
        ("AWS_SECRET_ACCESS_KEY", b.s3().secret_key.as_bytes()),
    ];
    secret(&b.cluster, shared, "s3", &keys).await;
    let repos: Api<Repository> = Api::namespaced(b.cluster.client.clone(), shared);
    let policies = [
        ("default", json!({})),
        (
            "same",
            json!({"usagePolicy": {"allowedNamespaces": {"from": "Same"}}}),
        ),
        (
            "selector",
            json!({"usagePolicy": {"allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "vault"}}}}}),
        ),
        (
            "all",
            json!({"usagePolicy": {"allowedNamespaces": {"from": "All"}}}),
        ),
    ];
    for (name, spec) in &policies {
        let mut r = b.repository_json(name, json!({}), spec.clone());
        r["metadata"]["namespace"] = json!(shared);
        let r: Repository = serde_json::from_value(r).unwrap();
        repos.create(&PostParams::default(), &r).await.unwrap();
    }
    // An unknown `from` is refused by the schema (enum).
    let mut r = b.repository_json(
        "bogus",
        json!({}),
        json!({"usagePolicy": {"allowedNamespaces": {"from": "Everyone"}}}),
    );
    r["metadata"]["namespace"] = json!(shared);
    let r: Repository = serde_json::from_value(r).unwrap();
    assert!(repos.create(&PostParams::default(), &r).await.is_err());

    for (name, expect) in [
        ("default", "from: Same"),
        ("same", "from: Same"),
        ("selector", "from: Selector"),
    ] {
        let cfg = format!("use-{name}");
        b.config(
            &cfg,
            name,
            "vault",
            json!({"repository": {"name": name, "namespace": shared}}),
        )
        .await;
        b.backup_fails(
            &cfg,
            &[
                &format!("Repository {shared}/{name}"),
                expect,
                "from namespace vault",
                "from: All",
            ],
        )
        .await;
    }
    b.assert_contained(&[]).await;
    // A restore is held to the same policy.
    b.restore_fails(
        &b.ctx,
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
            "metadata": {"name": "rs-cross"},
            "spec": {
                "repository": {"name": "default", "namespace": shared},
                "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "vault"}},
            },
        }),
        &["Repository shared/default", "not from namespace vault"],
    )
    .await;
    // `All` shares it.
    b.config(
        "use-all",
        "all",
        "vault",
        json!({"repository": {"name": "all", "namespace": shared}}),
    )
    .await;
    b.cluster.new_session("use-all", "use-all-1").await.unwrap();
    let outcome = backup::run(&b.ctx, &session_ref("use-all-1"), None)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    b.assert_contained(&["all"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_outside_stashless_namespaces_are_left_alone() {
    let b = Bench::new("nsscope").await;
    b.repository("repo", json!({})).await;
    b.config("cfg", "repo", "vault", json!({})).await;
    b.cluster.new_session("cfg", "cfg-1").await.unwrap();
    b.cluster
        .new_restore("rs-1", "repo", "vault", None, false)
        .await
        .unwrap();
    let scoped = |namespaces: &[&str]| {
        Context::new(
            b.cluster.client.clone(),
            Settings {
                namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
                ..Settings::default()
            },
        )
    };
    let elsewhere = scoped(&["prod", "staging"]);
    let outcome = backup::run(&elsewhere, &session_ref("cfg-1"), None)
        .await
        .unwrap();
    let Outcome::NotClaimed { why } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(why.contains("STASHLESS_NAMESPACES"), "{why}");
    let restored = stashless::restore::run(&elsewhere, &session_ref("rs-1"), None)
        .await
        .unwrap();
    assert!(
        matches!(restored, Outcome::NotClaimed { .. }),
        "{restored:?}"
    );
    // Untouched: still no status at all.
    assert!(b.cluster.session("cfg-1").await.unwrap().status.is_none());
    assert!(
        b.cluster
            .restore_session("rs-1")
            .await
            .unwrap()
            .status
            .is_none()
    );
    // Listed, the namespace is served (here: fails on the Vault that is not there).
    let served = scoped(&["prod", NS]);
    let outcome = backup::run(&served, &session_ref("cfg-1"), None)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    b.assert_contained(&[]).await;
}

// ---------------------------------------------------------- restore: which snapshot

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_never_restores_another_vaults_snapshot() {
    let bao = OpenBao::start().await.unwrap();
    let b = Bench::with_vault("latest", &bao.addr, &bao.root_token).await;
    b.repository("repo", json!({})).await;
    b.config("cfg", "repo", "vault", json!({})).await;
    let snapshot = b.cluster.backup_now(&b.ctx, "cfg", "cfg-1").await.unwrap();
    // Another Vault (nothing listens: a restore that got this far would say "cannot connect").
    secret(
        &b.cluster,
        NS,
        "other-token",
        &[("token", token().as_bytes())],
    )
    .await;
    binding(&b.cluster, "other", NO_VAULT, Some("other-token")).await;
    let rs = |name: &str, snapshots: Option<&str>| {
        let mut target = json!({"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "other"}});
        if let Some(s) = snapshots {
            target["rules"] = json!([{"snapshots": [s]}]);
        }
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
            "metadata": {"name": name},
            "spec": {"repository": {"name": "repo"}, "target": target},
        })
    };
    for (name, snapshots) in [("rs-none", None), ("rs-latest", Some("latest"))] {
        b.restore_fails(
            &b.ctx,
            rs(name, snapshots),
            &[
                "no snapshot of AppBinding vault/other",
                "spec.target.rules[].snapshots",
            ],
        )
        .await;
    }
    // Snapshot names that play with paths are simply not in the Repository.
    let tricks = [
        "../../etc/passwd".to_string(),
        format!("{snapshot}/../{snapshot}"),
        format!("/{snapshot}"),
        format!("{snapshot}\u{0}"),
        format!("{snapshot}.snap"),
    ];
    for (i, name) in tricks.iter().enumerate() {
        b.restore_fails(
            &b.ctx,
            rs(&format!("rs-trick-{i}"), Some(name)),
            &["is not in the Repository"],
        )
        .await;
    }
    // Named explicitly, another Vault's snapshot is taken (and here fails on the address).
    b.restore_fails(&b.ctx, rs("rs-named", Some(&snapshot)), &["cannot connect"])
        .await;
    b.assert_contained(&["repo"]).await;
}
