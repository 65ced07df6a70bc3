//! Auto-backup from Stash's BackupBlueprint (issue 16): an AppBinding annotated
//! `stash.appscode.com/backup-blueprint` gets the Repository and BackupConfiguration
//! `app-<AppBinding>` with the blueprint's `${TARGET_*}` variables filled, kept in step
//! with the blueprint and the AppBinding's schedule annotation, and loses its configuration
//! (not its Repository) when the annotation goes. A KubeDB AppBinding with the same
//! annotation is Stash's: nothing is made for it and it is not touched. A blueprint with
//! an unknown variable is reported once as an Event, and what it made before stays.

use chrono::{TimeZone, Utc};
use k8s_openapi::api::core::v1::Event;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use stashless::api::{AppBinding, BackupBlueprint, BackupConfiguration, Repository};
use stashless::backup;
use stashless::events::Tick;
use stashless::scheduler::{SchedulerSettings, TickReport, tick};
use stashless::session::Outcome;
use stashless_tests::{NS, World, session_ref};

async fn tick_at(w: &World, hour: u32, minute: u32) -> TickReport {
    let t = Tick {
        time: Some(Utc.with_ymd_and_hms(2099, 1, 1, hour, minute, 0).unwrap()),
    };
    tick(&w.cluster.client, &t, &SchedulerSettings::default())
        .await
        .unwrap()
}

fn blueprints(w: &World) -> Api<DynamicObject> {
    Api::all_with(
        w.cluster.client.clone(),
        &ApiResource::erase::<BackupBlueprint>(&()),
    )
}

async fn set_blueprint_spec(w: &World, spec: Value) {
    blueprints(w)
        .patch(
            "vault-nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .unwrap();
}

async fn annotate(w: &World, appbinding: &str, annotations: Value) {
    w.cluster
        .api::<AppBinding>()
        .patch(
            appbinding,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .unwrap();
}

async fn events_about(w: &World, name: &str) -> Vec<Event> {
    w.cluster
        .api::<Event>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blueprint_backs_up_annotated_vault_appbindings_and_leaves_others_to_stash() {
    let w = World::builder("blueprint")
        .openbao()
        .app_binding()
        // Only for the storage Secret `repo-s3` and the bucket.
        .repository("unused")
        .build()
        .await;
    let s3 = w.s3();
    let spec = json!({
        "backend": {
            "s3": {"endpoint": s3.endpoint, "bucket": w.bucket(), "region": s3.region,
                   "prefix": "auto/${TARGET_NAMESPACE}/${TARGET_APP_RESOURCE}/${TARGET_NAME}"},
            "storageSecretName": "repo-s3",
        },
        "schedule": "0 2 * * *",
        "task": {"name": "vault-backup-${TARGET_APP_VERSION}"},
        "retentionPolicy": {"name": "keep-3", "keepLast": 3, "prune": true},
        "runtimeSettings": {"container": {"resources": {}}},
    });
    let mut bp: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupBlueprint",
        "metadata": {"name": "vault-nightly"},
        "spec": spec,
    }))
    .unwrap();
    bp.metadata.namespace = None;
    blueprints(&w)
        .create(&PostParams::default(), &bp)
        .await
        .unwrap();
    // A KubeDB PostgreSQL AppBinding with the same annotation: Stash's auto-backup.
    let pg: AppBinding = w
        .cluster
        .create(json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": "pg", "annotations": {"stash.appscode.com/backup-blueprint": "vault-nightly"}},
            "spec": {"type": "kubedb.com/postgres", "version": "14.0",
                     "clientConfig": {"service": {"name": "pg", "port": 5432, "scheme": "postgresql"}}},
        }))
        .await
        .unwrap();
    annotate(
        &w,
        "vault",
        json!({"stash.appscode.com/backup-blueprint": "vault-nightly"}),
    )
    .await;

    let report = tick_at(&w, 2, 1).await;
    assert_eq!(
        report.blueprints.created,
        vec![
            format!("Repository {NS}/app-vault"),
            format!("BackupConfiguration {NS}/app-vault")
        ],
        "{report:?}"
    );
    assert!(report.blueprints.invalid.is_empty(), "{report:?}");
    let slot = Utc
        .with_ymd_and_hms(2099, 1, 1, 2, 0, 0)
        .unwrap()
        .timestamp();
    let session = format!("app-vault-{slot}");
    assert_eq!(report.created, vec![format!("{NS}/{session}")]);
    let repo: Repository = w.cluster.api().get("app-vault").await.unwrap();
    assert_eq!(
        repo.spec.backend.s3.as_ref().unwrap().prefix.as_deref(),
        Some("auto/vault/vault/vault")
    );
    let cfg: BackupConfiguration = w.cluster.api().get("app-vault").await.unwrap();
    assert_eq!(
        cfg.spec.task.as_ref().unwrap().name.as_deref(),
        Some("vault-backup-2.7.2")
    );
    assert_eq!(cfg.owner_references()[0].name, "vault");
    let outcome = backup::run(&w.ctx(), &session_ref(&session), None)
        .await
        .unwrap();
    let Outcome::Succeeded { snapshot, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(snapshot, format!("{NS}/{session}"));
    let keys = s3
        .keys(w.bucket(), "auto/vault/vault/vault/")
        .await
        .unwrap();
    assert_eq!(
        keys.len(),
        2,
        "snapshot and manifest under the prefix: {keys:?}"
    );

    // Nothing changed: nothing written.
    let rv = cfg.resource_version();
    let again = tick_at(&w, 2, 3).await;
    assert!(again.blueprints.is_empty(), "{again:?}");
    let cfg: BackupConfiguration = w.cluster.api().get("app-vault").await.unwrap();
    assert_eq!(cfg.resource_version(), rv);

    // The blueprint changes: the configuration follows; the AppBinding's schedule wins.
    set_blueprint_spec(&w, json!({"schedule": "0 3 * * *"})).await;
    let report = tick_at(&w, 2, 5).await;
    assert_eq!(
        report.blueprints.updated,
        vec![
            format!("Repository {NS}/app-vault"),
            format!("BackupConfiguration {NS}/app-vault")
        ]
    );
    let cfg: BackupConfiguration = w.cluster.api().get("app-vault").await.unwrap();
    assert_eq!(cfg.spec.schedule.as_deref(), Some("0 3 * * *"));
    annotate(
        &w,
        "vault",
        json!({"stash.appscode.com/schedule": "*/30 * * * *"}),
    )
    .await;
    tick_at(&w, 2, 7).await;
    let cfg: BackupConfiguration = w.cluster.api().get("app-vault").await.unwrap();
    assert_eq!(cfg.spec.schedule.as_deref(), Some("*/30 * * * *"));

    // A broken edit: reported once, on the AppBinding; what was made stays.
    set_blueprint_spec(
        &w,
        json!({"backend": {"s3": {"prefix": "auto/${TARGET_CLUSTER}"}}}),
    )
    .await;
    for minute in [9, 11] {
        let report = tick_at(&w, 2, minute).await;
        let why = &report.blueprints.invalid[&format!("{NS}/vault")];
        assert!(
            why.contains("spec.backend.s3.prefix: unknown variable ${TARGET_CLUSTER}"),
            "{why}"
        );
    }
    let events = events_about(&w, "vault").await;
    let invalid: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("BlueprintInvalid"))
        .collect();
    assert_eq!(invalid.len(), 1, "{events:?}");
    assert!(
        w.cluster
            .api::<BackupConfiguration>()
            .get("app-vault")
            .await
            .is_ok()
    );
    set_blueprint_spec(
        &w,
        json!({"backend": {"s3": {"prefix": "auto/${TARGET_NAMESPACE}/${TARGET_APP_RESOURCE}/${TARGET_NAME}"}}}),
    )
    .await;

    // The annotation goes: so does the configuration; the Repository and its snapshot stay.
    annotate(
        &w,
        "vault",
        json!({"stash.appscode.com/backup-blueprint": null}),
    )
    .await;
    let report = tick_at(&w, 2, 13).await;
    assert_eq!(
        report.blueprints.removed,
        vec![format!("BackupConfiguration {NS}/app-vault")]
    );
    assert!(
        w.cluster
            .api::<BackupConfiguration>()
            .get("app-vault")
            .await
            .is_err()
    );
    assert!(w.cluster.api::<Repository>().get("app-vault").await.is_ok());
    assert_eq!(
        s3.keys(w.bucket(), "auto/vault/vault/vault/")
            .await
            .unwrap()
            .len(),
        2
    );

    // Stash's AppBinding was never written, nothing was made for it, no Event names it.
    let pg_now: AppBinding = w.cluster.api().get("pg").await.unwrap();
    assert_eq!(pg_now.resource_version(), pg.resource_version());
    assert!(
        w.cluster
            .api::<BackupConfiguration>()
            .get("app-pg")
            .await
            .is_err()
    );
    assert!(w.cluster.api::<Repository>().get("app-pg").await.is_err());
    assert!(events_about(&w, "pg").await.is_empty());
}
