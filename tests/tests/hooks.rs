//! Stash's backup and restore hooks run from the functions (issue 16): httpGet, httpPost and
//! tcpSocket against a local endpoint that records each call, fails on demand and stalls,
//! with a real OpenBao and S3. A failing pre-hook fails the session before a snapshot is
//! taken or Vault is touched; post-hooks follow executionPolicy; templates are filled from
//! the session summary; a stalled hook is cut at the session's time limit; each outcome is
//! Stash's condition on the session.

use std::time::Duration;

use serde_json::{Value, json};
use stashless::api::{Condition, SessionPhase};
use stashless::session::{HasPhase, Outcome};
use stashless_tests::hook_server::{Answer, HookServer};
use stashless_tests::procs::openbao::OpenBao;
use stashless_tests::{ConfigBuilder, NS, World, failed_reason};

/// A condition's status, reason and message.
struct Seen {
    status: String,
    reason: String,
    message: String,
}

fn condition(conditions: &[Condition], type_: &str) -> Option<Seen> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| Seen {
        status: c.status.clone(),
        reason: c.reason.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
    })
}

async fn world(tag: &str, hooks: Value) -> World {
    World::builder(tag)
        .openbao()
        .app_binding()
        .repository(&format!("/{tag}/"))
        .backup_configuration(ConfigBuilder::new("cfg").hooks(hooks))
        .build()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_and_post_backup_hooks_run_around_the_snapshot() {
    let hook = HookServer::start().await.unwrap();
    let w = world(
        "hooks-ok",
        json!({
            "preBackup": {"httpPost": {
                "host": "127.0.0.1", "port": hook.port(), "path": "/quiesce?secret=abc",
                "httpHeaders": [{"name": "Content-Type", "value": "application/json"},
                                {"name": "X-Session", "value": "{{ .Namespace }}/{{ .Name }}"}],
                "body": "{\"target\": \"{{ .Target.Name }}\", \"invoker\": \"{{ .Invoker.Kind }}/{{ .Invoker.Name }}\"}"}},
            "postBackup": {"executionPolicy": "OnSuccess", "httpPost": {
                "host": "127.0.0.1", "port": hook.port(), "path": "/notify",
                "form": [{"key": "phase", "values": ["{{ .Status.Phase }}"]}]}},
        }),
    )
    .await;
    let outcome = w.backup_with(&w.ctx(), "cfg", "cfg-1", None).await;
    let Outcome::Succeeded { snapshot, .. } = outcome else {
        panic!("{outcome:?}")
    };

    let pre = hook.calls_to("/quiesce");
    assert_eq!(pre.len(), 1, "{pre:?}");
    assert_eq!(pre[0].method, "POST");
    assert_eq!(pre[0].path, "/quiesce?secret=abc");
    assert_eq!(pre[0].headers["x-session"], format!("{NS}/cfg-1"));
    assert_eq!(pre[0].headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&pre[0].body).unwrap();
    assert_eq!(
        body,
        json!({"target": "vault", "invoker": "BackupConfiguration/cfg"})
    );
    let post = hook.calls_to("/notify");
    assert_eq!(post.len(), 1, "{post:?}");
    assert_eq!(post[0].body, "phase=Succeeded");
    assert_eq!(
        post[0].headers["content-type"],
        "application/x-www-form-urlencoded"
    );

    // The pre-hook came before the snapshot was taken, the post-hook after it was stored.
    let store_keys = w.s3().keys(w.bucket(), "").await.unwrap();
    assert!(
        store_keys.iter().any(|k| k.contains("cfg-1")),
        "{store_keys:?}"
    );
    let manifest_time = w
        .ctx()
        .open_store(
            NS,
            &stashless::api::ObjectRef {
                name: "repo".into(),
                namespace: None,
            },
        )
        .await
        .unwrap()
        .1
        .manifest_of(&snapshot)
        .await
        .unwrap()
        .unwrap()
        .created_at;
    assert!(pre[0].at < manifest_time && manifest_time <= post[0].at);

    let s = w.cluster.session("cfg-1").await.unwrap();
    let conditions = s.conditions();
    let c = condition(&conditions, "PreBackupHookExecutionSucceeded").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "SuccessfullyExecutedPreBackupHook")
    );
    assert!(c.message.contains("answered 200"), "{}", c.message);
    // The path (and its secret query) never reaches status.
    assert!(!c.message.contains("secret=abc"), "{}", c.message);
    let c = condition(&conditions, "PostBackupHookExecutionSucceeded").unwrap();
    assert_eq!(c.status, "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_hook_fails_the_session_before_any_snapshot() {
    let hook = HookServer::start().await.unwrap();
    hook.answer(
        "/quiesce",
        Answer::Status(503, "replication lag too high".into()),
    );
    let w = world(
        "hooks-pre-fail",
        json!({
            "preBackup": {"httpGet": {"host": "127.0.0.1", "port": hook.port(), "path": "/quiesce"}},
            "postBackup": {"httpGet": {"host": "127.0.0.1", "port": hook.port(), "path": "/after"}},
        }),
    )
    .await;
    let reason = failed_reason(&w.backup_with(&w.ctx(), "cfg", "cfg-1", None).await);
    assert!(reason.contains("preBackup hook failed"), "{reason}");
    assert!(reason.contains("503"), "{reason}");
    assert!(reason.contains("replication lag too high"), "{reason}");
    assert!(reason.contains("no snapshot was taken"), "{reason}");
    assert!(
        w.s3().keys(w.bucket(), "").await.unwrap().is_empty(),
        "nothing may be stored"
    );
    assert_eq!(w.s3().open_uploads(w.bucket()).await.unwrap(), 0);
    // As in Stash, the post-hook does not run after a failed pre-hook.
    assert!(hook.calls_to("/after").is_empty());
    let s = w.cluster.session("cfg-1").await.unwrap();
    assert_eq!(s.phase(), Some(SessionPhase::Failed));
    let c = condition(&s.conditions(), "PreBackupHookExecutionSucceeded").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "FailedToExecutePreBackupHook")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_hooks_follow_the_execution_policy() {
    let hook = HookServer::start().await.unwrap();
    let post = |policy: &str, path: &str| {
        json!({"postBackup": {"executionPolicy": policy, "httpPost": {
            "host": "127.0.0.1", "port": hook.port(), "path": path,
            "body": "{{ .Name }} {{ .Status.Phase }}: {{ .Status.Error }}"}}})
    };
    // A Vault that is not there: every backup fails.
    let w = World::builder("hooks-policy")
        .app_binding_to("http://127.0.0.1:9", "t")
        .repository("/hooks-policy/")
        .build()
        .await;
    for (name, policy) in [
        ("on-failure", "OnFailure"),
        ("on-success", "OnSuccess"),
        ("always", "Always"),
        ("final", "OnFinalRetryFailure"),
    ] {
        w.cluster
            .backup_config(ConfigBuilder::new(name).hooks(post(policy, &format!("/{name}"))))
            .await
            .unwrap();
        let session = format!("{name}-1");
        let reason = failed_reason(&w.backup_with(&w.ctx(), name, &session, None).await);
        assert!(reason.contains("127.0.0.1:9"), "{reason}");
        let calls = hook.calls_to(&format!("/{name}"));
        if policy == "OnSuccess" {
            assert!(calls.is_empty(), "{policy}: {calls:?}");
            let s = w.cluster.session(&session).await.unwrap();
            assert!(condition(&s.conditions(), "PostBackupHookExecutionSucceeded").is_none());
        } else {
            assert_eq!(calls.len(), 1, "{policy}: {calls:?}");
            assert!(
                calls[0].body.starts_with(&format!("{session} Failed: ")),
                "{}",
                calls[0].body
            );
            assert!(calls[0].body.contains("127.0.0.1:9"), "{}", calls[0].body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_post_hook_fails_a_stored_backup_and_keeps_the_snapshot() {
    let hook = HookServer::start().await.unwrap();
    hook.answer("/done", Answer::Status(500, "webhook down".into()));
    let w = world(
        "hooks-post-fail",
        json!({"postBackup": {"httpGet": {"host": "127.0.0.1", "port": hook.port(), "path": "/done"}}}),
    )
    .await;
    let reason = failed_reason(&w.backup_with(&w.ctx(), "cfg", "cfg-1", None).await);
    assert!(reason.contains("postBackup hook failed"), "{reason}");
    assert!(reason.contains("webhook down"), "{reason}");
    assert!(reason.contains("stays in the repository"), "{reason}");
    let keys = w.s3().keys(w.bucket(), "").await.unwrap();
    assert_eq!(keys.len(), 2, "snapshot and manifest kept: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_hook_is_cut_at_the_sessions_time_limit() {
    let hook = HookServer::start().await.unwrap();
    hook.answer("/stall", Answer::Stall);
    let w = World::builder("hooks-stall")
        .openbao()
        .app_binding()
        .repository("/hooks-stall/")
        .backup_configuration(ConfigBuilder::new("cfg").time_out("3s").hooks(json!({
            "preBackup": {"httpGet": {"host": "127.0.0.1", "port": hook.port(), "path": "/stall"}}
        })))
        .build()
        .await;
    let started = std::time::Instant::now();
    let reason = failed_reason(&w.backup_with(&w.ctx(), "cfg", "cfg-1", None).await);
    assert!(
        reason.contains("no answer within the session's time limit"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(hook.calls_to("/stall").len(), 1);
    assert!(w.s3().keys(w.bucket(), "").await.unwrap().is_empty());
}

/// Hooks without a host call the target's own address (the Vault the AppBinding names, as
/// Stash calls the application's pod); tcpSocket succeeds when the port is open and fails
/// with a reason when nothing listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_without_host_call_the_target_and_tcp_hooks_check_the_port() {
    let bao = OpenBao::start().await.unwrap();
    let port: u16 = bao.addr.rsplit(':').next().unwrap().parse().unwrap();
    let w = World::builder("hooks-target")
        .with_openbao(bao)
        .app_binding()
        .repository("/hooks-target/")
        .backup_configuration(ConfigBuilder::new("cfg").hooks(json!({
            "preBackup": {"httpGet": {"port": port, "path": "/v1/sys/health"}},
            "postBackup": {"tcpSocket": {"port": port}},
        })))
        .build()
        .await;
    let outcome = w.backup_with(&w.ctx(), "cfg", "cfg-1", None).await;
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    let s = w.cluster.session("cfg-1").await.unwrap();
    let conditions = s.conditions();
    let pre = condition(&conditions, "PreBackupHookExecutionSucceeded").unwrap();
    assert!(
        pre.message
            .contains(&format!("GET http://127.0.0.1:{port} answered 200")),
        "{}",
        pre.message
    );
    let post = condition(&conditions, "PostBackupHookExecutionSucceeded").unwrap();
    assert!(
        post.message
            .contains(&format!("TCP 127.0.0.1:{port} is open")),
        "{}",
        post.message
    );

    // A hook pointing nowhere: a readable reason, the other configuration unaffected.
    w.cluster
        .backup_config(ConfigBuilder::new("nowhere").hooks(json!({
            "preBackup": {"tcpSocket": {"host": "127.0.0.1", "port": 9}}
        })))
        .await
        .unwrap();
    let reason = failed_reason(&w.backup_with(&w.ctx(), "nowhere", "nowhere-1", None).await);
    assert!(
        reason.contains("TCP 127.0.0.1:9: could not connect"),
        "{reason}"
    );
    let outcome = w.backup_with(&w.ctx(), "cfg", "cfg-2", None).await;
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
}

/// preRestore fails: Vault is untouched (the secret written after the backup stays);
/// then without it, the restore runs and postRestore gets the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_hooks_guard_vault_and_report_the_outcome() {
    let hook = HookServer::start().await.unwrap();
    hook.answer(
        "/refuse",
        Answer::Status(409, "maintenance window closed".into()),
    );
    let w = World::builder("hooks-restore")
        .openbao()
        .app_binding()
        .backup_to("/hooks-restore/")
        .build()
        .await;
    let bao = w.bao();
    bao.kv_put("app/db", json!({"password": "old"}))
        .await
        .unwrap();
    let ctx = w.ctx();
    let snapshot = w.cluster.backup_now(&ctx, "cfg", "cfg-1").await.unwrap();
    bao.kv_put("app/db", json!({"password": "new"}))
        .await
        .unwrap();

    let restore = |name: &str, hooks: Value| {
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
            "metadata": {"name": name},
            "spec": {
                "repository": {"name": "repo"},
                "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "vault"},
                           "rules": [{"snapshots": [snapshot.clone()]}]},
                "hooks": hooks,
            },
        })
    };
    let _: stashless::api::RestoreSession = w
        .cluster
        .create(restore(
            "refused",
            json!({
                "preRestore": {"httpGet": {"host": "127.0.0.1", "port": hook.port(), "path": "/refuse"}},
                "postRestore": {"httpGet": {"host": "127.0.0.1", "port": hook.port(), "path": "/after-refused"}},
            }),
        ))
        .await
        .unwrap();
    let reason = failed_reason(&w.run_restore("refused").await);
    assert!(reason.contains("preRestore hook failed"), "{reason}");
    assert!(reason.contains("maintenance window closed"), "{reason}");
    assert!(reason.contains("nothing was restored"), "{reason}");
    assert_eq!(
        bao.kv_get("app/db").await.unwrap().unwrap()["password"],
        "new"
    );
    assert!(hook.calls_to("/after-refused").is_empty());

    let _: stashless::api::RestoreSession = w
        .cluster
        .create(restore(
            "ok",
            json!({
                "preRestore": {"httpGet": {"host": "127.0.0.1", "port": hook.port(), "path": "/before"}},
                "postRestore": {"executionPolicy": "OnSuccess", "httpPost": {"host": "127.0.0.1", "port": hook.port(), "path": "/after", "body": "{{ .Invoker.Kind }} {{ .Name }} {{ .Status.Phase }}"}},
            }),
        ))
        .await
        .unwrap();
    let outcome = w.run_restore("ok").await;
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    bao.wait_serving().await.unwrap();
    assert_eq!(
        bao.kv_get("app/db").await.unwrap().unwrap()["password"],
        "old"
    );
    assert_eq!(hook.calls_to("/before").len(), 1);
    let after = hook.calls_to("/after");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].body, "RestoreSession ok Succeeded");
    let rs = w.cluster.restore_session("ok").await.unwrap();
    let conditions = rs.conditions();
    for c in [
        "PreRestoreHookExecutionSucceeded",
        "PostRestoreHookExecutionSucceeded",
    ] {
        assert_eq!(condition(&conditions, c).unwrap().status, "True", "{c}");
    }
}

/// A configuration with an exec hook is Invalid at the tick, with the reason and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_hook_makes_the_configuration_invalid() {
    use chrono::{TimeZone, Utc};
    use stashless::events::Tick;
    use stashless::scheduler::{SchedulerSettings, tick};
    let w = World::builder("hooks-exec")
        .app_binding_to("http://127.0.0.1:9", "t")
        .repository("/hooks-exec/")
        .build()
        .await;
    w.cluster
        .backup_config(ConfigBuilder::new("exec").hooks(json!({
            "preBackup": {"exec": {"command": ["vault", "operator", "step-down"]}, "containerName": "vault"}
        })))
        .await
        .unwrap();
    w.cluster
        .backup_config(ConfigBuilder::new("fine"))
        .await
        .unwrap();
    let t = Tick {
        time: Some(Utc.with_ymd_and_hms(2099, 1, 1, 10, 2, 0).unwrap()),
    };
    let report = tick(&w.cluster.client, &t, &SchedulerSettings::default())
        .await
        .unwrap();
    let slot = Utc
        .with_ymd_and_hms(2099, 1, 1, 10, 0, 0)
        .unwrap()
        .timestamp();
    assert_eq!(report.created, vec![format!("{NS}/fine-{slot}")]);
    assert!(
        !report.created.iter().any(|c| c.contains("/exec-")),
        "{report:?}"
    );
    let cfg: stashless::api::BackupConfiguration = w
        .cluster
        .api::<stashless::api::BackupConfiguration>()
        .get("exec")
        .await
        .unwrap();
    let text = serde_json::to_string(&cfg.status).unwrap();
    assert!(
        text.contains("spec.hooks.preBackup.exec cannot run"),
        "{text}"
    );
    assert!(text.contains("httpPost"), "{text}");
}

/// A hook naming a Service (`hooks.vault.svc`) reaches it through the Service's
/// EndpointSlice, as the Vault address does: a Lambda is outside cluster DNS, where that
/// name does not resolve. In-memory server only (kube-apiserver 1.20 serves EndpointSlices
/// as v1beta1; EKS as the v1 read here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_host_is_reached_through_its_endpointslice() {
    let hook = HookServer::start().await.unwrap();
    let w = World::builder("hooks-svc")
        .memory()
        .openbao()
        .app_binding()
        .repository("/hooks-svc/")
        .backup_configuration(ConfigBuilder::new("cfg").hooks(json!({
            "preBackup": {"httpGet": {"host": format!("hooks.{NS}.svc"), "port": hook.port(), "path": "/svc"}}
        })))
        .build()
        .await;
    let reason = failed_reason(&w.backup_with(&w.ctx(), "cfg", "cfg-1", None).await);
    assert!(
        reason.contains(&format!("GET http://hooks.{NS}.svc:")),
        "{reason}"
    );
    assert!(hook.calls_to("/svc").is_empty());

    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "hooks-x1", "namespace": NS, "labels": {"kubernetes.io/service-name": "hooks"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": hook.port(), "protocol": "TCP"}],
    });
    w.cluster
        .mem()
        .insert("discovery.k8s.io", "endpointslices", slice)
        .unwrap();
    let outcome = w.backup_with(&w.ctx(), "cfg", "cfg-2", None).await;
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    let calls = hook.calls_to("/svc");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].headers["host"],
        format!("hooks.{NS}.svc:{}", hook.port())
    );
}
