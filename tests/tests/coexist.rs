//! Living beside Stash: a cluster that runs Stash for a PostgreSQL database and a
//! Deployment's volume, and stashless for its Vault. Every tick (the first one included),
//! delivery (three times each), sweep past every deadline and the bridge leave Stash's
//! objects exactly as they were (same resourceVersion, no Event, no Secret read), while the
//! Vault's backup and restore work. Runs on the in-memory API server and on kube-apiserver.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use stashless::api::{BackupSession, RestoreSession, SessionPhase};
use stashless::context::NamespaceScope;
use stashless::dispatch::{Health, bridge, scheduled_tick};
use stashless::events::Tick;
use stashless::scheduler::SchedulerSettings;
use stashless::session::Outcome;
use stashless::sweep::SweepSettings;
use stashless::{backup, restore};
use stashless_tests::recorder::Recorder;
use stashless_tests::{NS, World, init_logs, session_ref};

/// Stash's objects for a KubeDB PostgreSQL and a Deployment's volume, as Stash and its
/// users create them: (plural, manifest).
fn stash_objects(slot: i64) -> Vec<(&'static str, Value)> {
    let stash_labels = |config: &str| {
        json!({
            "stash.appscode.com/invoker-type": "BackupConfiguration",
            "stash.appscode.com/invoker-name": config,
        })
    };
    vec![
        (
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "pg-auth"},
                   "stringData": {"username": "postgres", "password": "pg-secret-password"}}),
        ),
        (
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "pg-repo-cred"},
                   "stringData": {"RESTIC_PASSWORD": "restic-pass", "AWS_ACCESS_KEY_ID": "AKIDPG",
                                  "AWS_SECRET_ACCESS_KEY": "pg-secret-key"}}),
        ),
        (
            "appbindings",
            json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
                   "metadata": {"name": "pg"},
                   "spec": {"type": "kubedb.com/postgres", "version": "14.2",
                            "clientConfig": {"service": {"name": "pg", "port": 5432, "scheme": "postgresql"}},
                            "secret": {"name": "pg-auth"}}}),
        ),
        (
            "repositories",
            json!({"apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
                   "metadata": {"name": "pg-repo"},
                   "spec": {"backend": {"s3": {"endpoint": "s3.amazonaws.com", "bucket": "pg-backups", "prefix": "pg"},
                                        "storageSecretName": "pg-repo-cred"}}}),
        ),
        (
            "backupconfigurations",
            json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
                   "metadata": {"name": "pg-backup"},
                   "spec": {"schedule": "*/5 * * * *", "task": {"name": "postgres-backup-14.0"},
                            "repository": {"name": "pg-repo"},
                            "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "pg"}},
                            "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}}}),
        ),
        (
            "backupconfigurations",
            json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
                   "metadata": {"name": "web-backup"},
                   "spec": {"schedule": "*/5 * * * *",
                            "repository": {"name": "pg-repo"},
                            "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                                       "paths": ["/data"],
                                       "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                            "retentionPolicy": {"name": "keep-last-5", "keepLast": 5, "prune": true}}}),
        ),
        // Sessions Stash's CronJobs created: one waiting, one that Stash is running (no
        // sessionDeadline: Stash writes none), one whose configuration was deleted.
        (
            "backupsessions",
            json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
                   "metadata": {"name": format!("pg-backup-{slot}"), "labels": stash_labels("pg-backup")},
                   "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "pg-backup"}}}),
        ),
        (
            "backupsessions",
            json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
                   "metadata": {"name": format!("web-backup-{slot}"), "labels": stash_labels("web-backup")},
                   "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "web-backup"}}}),
        ),
        (
            "backupsessions",
            json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
                   "metadata": {"name": format!("old-db-backup-{slot}"), "labels": stash_labels("old-db-backup")},
                   "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "old-db-backup"}}}),
        ),
        (
            "restoresessions",
            json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
                   "metadata": {"name": "pg-restore"},
                   "spec": {"task": {"name": "postgres-restore-14.0"}, "repository": {"name": "pg-repo"},
                            "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "pg"},
                                       "rules": [{"snapshots": ["latest"]}]}}}),
        ),
        (
            "restoresessions",
            json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
                   "metadata": {"name": "web-restore"},
                   "spec": {"repository": {"name": "pg-repo"},
                            "target": {"ref": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                                       "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                                       "rules": [{"paths": ["/data"]}]}}}),
        ),
    ]
}

fn resource(plural: &str) -> ApiResource {
    let (group, version, kind) = match plural {
        "secrets" => ("", "v1", "Secret"),
        "appbindings" => ("appcatalog.appscode.com", "v1alpha1", "AppBinding"),
        "repositories" => ("stash.appscode.com", "v1alpha1", "Repository"),
        "backupconfigurations" => ("stash.appscode.com", "v1beta1", "BackupConfiguration"),
        "backupsessions" => ("stash.appscode.com", "v1beta1", "BackupSession"),
        "restoresessions" => ("stash.appscode.com", "v1beta1", "RestoreSession"),
        other => panic!("{other}"),
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

/// `plural/name` → resourceVersion of each of Stash's objects.
async fn versions(w: &World, objects: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (plural, name) in objects {
        let api: Api<DynamicObject> =
            Api::namespaced_with(w.cluster.client.clone(), NS, &resource(plural));
        let o = api.get(name).await.unwrap();
        out.insert(
            format!("{plural}/{name}"),
            o.resource_version().unwrap_or_default(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stash_objects_beside_a_vault_stay_untouched_while_the_vault_is_served() {
    init_logs();
    let w = World::standard("coexist", "vault").await;
    let client = w.cluster.client.clone();
    let slot = Utc::now().timestamp() / 300 * 300;
    // Stash's own objects, marked Running where Stash would be running them.
    let mut theirs: Vec<(&str, String)> = Vec::new();
    for (plural, manifest) in stash_objects(slot) {
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource(plural));
        let mut obj: DynamicObject = serde_json::from_value(manifest).unwrap();
        obj.metadata.namespace = Some(NS.into());
        api.create(&Default::default(), &obj).await.unwrap();
        theirs.push((plural, name));
    }
    let running = json!({"status": {"phase": "Running"}});
    let pp = kube::api::PatchParams::default();
    w.cluster
        .api::<BackupSession>()
        .patch_status(
            &format!("web-backup-{slot}"),
            &pp,
            &kube::api::Patch::Merge(&running),
        )
        .await
        .unwrap();
    w.cluster
        .api::<RestoreSession>()
        .patch_status("web-restore", &pp, &kube::api::Patch::Merge(&running))
        .await
        .unwrap();
    let before = versions(&w, &theirs).await;
    // From here on, what stashless asks the in-memory server is on record.
    let log_from = w
        .cluster
        .real()
        .is_none()
        .then(|| w.cluster.mem().request_log().len());

    // A Vault secret to prove the restore by.
    w.bao()
        .kv_put("apps/coexist", json!({"v": "before"}))
        .await
        .unwrap();

    // Ticks: the first one (every configuration just created), then at each 5-minute
    // slot over the next quarter hour, each tick twice (a retried invocation).
    let recorder = Recorder::default();
    let settings = SchedulerSettings {
        namespaces: NamespaceScope::all(),
        ..Default::default()
    };
    let sweep_settings = SweepSettings::default();
    let mut created = Vec::new();
    let now = Utc::now();
    let next_slot = DateTime::from_timestamp(slot + 300, 0).unwrap();
    let times = [
        None,
        Some(next_slot),
        Some(next_slot),
        Some(next_slot + chrono::Duration::minutes(5)),
    ];
    for time in times {
        let done = scheduled_tick(
            &client,
            &Tick { time },
            &settings,
            &sweep_settings,
            Some(&recorder),
        )
        .await
        .unwrap();
        assert!(done.tick.invalid.is_empty(), "{:?}", done.tick);
        assert!(done.tick.errors.is_empty(), "{:?}", done.tick);
        assert!(
            ["vault/pg-backup", "vault/web-backup"].iter().all(|k| done
                .tick
                .left_alone
                .iter()
                .any(|l| l == k)),
            "{:?}",
            done.tick
        );
        created.extend(done.tick.created.clone());
    }
    assert!(!created.is_empty(), "the Vault's configuration came due");
    assert!(
        created.iter().all(|c| c.starts_with("vault/cfg-")),
        "{created:?}"
    );

    // Every delivery of Stash's sessions, three times each, is answered NotClaimed.
    let ctx = w.ctx();
    for name in [
        format!("pg-backup-{slot}"),
        format!("web-backup-{slot}"),
        format!("old-db-backup-{slot}"),
    ] {
        for _ in 0..3 {
            let o = backup::run(&ctx, &session_ref(&name), None).await.unwrap();
            assert!(matches!(o, Outcome::NotClaimed { .. }), "{name}: {o:?}");
        }
    }
    for name in ["pg-restore", "web-restore"] {
        for _ in 0..3 {
            let o = restore::run(&ctx, &session_ref(name), None).await.unwrap();
            assert!(matches!(o, Outcome::NotClaimed { .. }), "{name}: {o:?}");
        }
    }

    // Sweeps past every deadline: a day on, and a week on.
    for later in [chrono::Duration::days(1), chrono::Duration::days(7)] {
        let report = stashless::sweep::sweep(
            &client,
            &NamespaceScope::all(),
            now + later,
            &sweep_settings,
        )
        .await
        .unwrap();
        assert!(
            report.failed.keys().all(|k| k.contains("/cfg-")),
            "{report:?}"
        );
        assert!(
            report.redispatch.iter().all(|r| r.name.starts_with("cfg-")),
            "{report:?}"
        );
    }

    // The bridge, from its initial list of everything (Stash's Pending sessions included).
    let bridged = Arc::new(Recorder::default());
    let health = Arc::new(Health::default());
    let task = tokio::spawn(bridge(
        client.clone(),
        NamespaceScope::all(),
        bridged.clone(),
        health.clone(),
    ));
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while !health.ok() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(health.ok(), "the bridge listed every kind");

    // Everything dispatched, by the ticks, the sweeps and the bridge, is the Vault's.
    let mut dispatched = recorder.0.lock().await.clone();
    dispatched.extend(bridged.0.lock().await.clone());
    assert!(
        dispatched.iter().all(|c| c.name.starts_with("cfg")),
        "{dispatched:?}"
    );

    // The Vault is served: its scheduled session backs up, a RestoreSession brings the
    // secret back.
    let first = created[0].split_once('/').unwrap().1.to_string();
    let o = backup::run(&ctx, &session_ref(&first), None).await.unwrap();
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    w.bao()
        .kv_put("apps/coexist", json!({"v": "after"}))
        .await
        .unwrap();
    w.cluster
        .new_restore("vault-restore", "repo", "vault", None, false)
        .await
        .unwrap();
    let o = w.run_restore("vault-restore").await;
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    assert_eq!(
        w.bao().kv_get("apps/coexist").await.unwrap().unwrap()["v"],
        "before"
    );
    let rs = w.cluster.restore_session("vault-restore").await.unwrap();
    assert_eq!(rs.status.unwrap().phase, Some(SessionPhase::Succeeded));
    task.abort();

    let log = log_from.map(|from| w.cluster.mem().request_log().split_off(from));
    // Stash's objects: not one written.
    let after = versions(&w, &theirs).await;
    for (k, v) in &before {
        eprintln!("{k}: resourceVersion {v} -> {}", after[k]);
    }
    assert_eq!(before, after);
    // No Event names them.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), NS);
    let names: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.involved_object.name)
        .collect();
    assert!(
        names.iter().all(|n| theirs.iter().all(|(_, t)| t != n)),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("cfg-")), "{names:?}");
    // On the in-memory server every request is on record: none read their Secrets or
    // their Repository (which holds the Secret's name), and none wrote to their objects.
    if let Some(log) = log {
        let touched: Vec<&(String, String)> = log
            .iter()
            .filter(|(method, path)| {
                let path = path.split('?').next().unwrap_or_default();
                let theirs_named = theirs.iter().any(|(plural, name)| {
                    path.ends_with(&format!("/{plural}/{name}"))
                        || path.ends_with(&format!("/{plural}/{name}/status"))
                });
                let secret_or_repo =
                    path.contains("/secrets/pg-") || path.contains("/repositories/pg-");
                secret_or_repo || (theirs_named && method != "GET")
            })
            .collect();
        assert!(touched.is_empty(), "{touched:#?}");
    }
}
