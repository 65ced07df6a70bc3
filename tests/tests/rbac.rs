//! The RBAC the Terraform module grants each function equals what that function really does.
//! Each function has its own group and ClusterRole, read from
//! `infra/modules/stashless/rbac/<function>-clusterrole.yaml` (scheduler, backup, restore).
//!
//! - In-memory API server: every request the scheduler (tick and sweep), backup and restore
//!   make in a full cycle is recorded, attributed to the function that made it, turned into
//!   (apiGroup, resource, verb) and compared with that function's file. A call the file lacks
//!   would be a 403 in production; a rule no call needs is more access than the function uses.
//! - Real kube-apiserver with RBAC (always, whatever `STASHLESS_KUBE_BACKEND` says): the
//!   roles are installed as the module installs them (Secrets through a Role in the served
//!   namespace, as with `namespaces` set), each function runs as its own group through
//!   impersonation and the same cycle succeeds, best-effort writes included (checked by
//!   their effects); a SubjectAccessReview per function and rule shows each group is allowed
//!   exactly its own file's rules; and trying shows the scheduler cannot read Secrets,
//!   backup cannot patch `restoresessions/status`, restore cannot create BackupSessions.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use chrono::{Duration, TimeZone, Utc};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use stashless::api::{
    BackupConfiguration, BackupSession, Repository, RestoreSession, SessionPhase,
};
use stashless::backup;
use stashless::context::{Context, NamespaceScope};
use stashless::events::Tick;
use stashless::scheduler::{SchedulerSettings, tick};
use stashless::session::Outcome;
use stashless::session::{self, Claim};
use stashless::sweep::{SweepSettings, sweep};
use stashless_tests::{
    ApiServer, Cluster, ConfigBuilder, CrdSet, NS, World, init_logs, session_ref,
};

type Grant = (String, String, String);

const FUNCTIONS: [&str; 3] = ["scheduler", "backup", "restore"];

/// The module's default `kubernetes_group`: each function's group is `<prefix>:<function>`.
const GROUP_PREFIX: &str = "stashless:functions";

/// (apiGroup, resource[/subresource], verb) of one request; None for discovery.
fn grant_of(method: &str, path_and_query: &str) -> Option<Grant> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [] => return None,
        [plural] => (plural.to_string(), false),
        [plural, _name] => (plural.to_string(), true),
        [plural, _name, sub] => (format!("{plural}/{sub}"), true),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some((group.to_string(), resource, verb.to_string()))
}

/// The rules of `infra/modules/stashless/rbac/<function>-clusterrole.yaml`.
fn rules(function: &str) -> Vec<Value> {
    let path = format!(
        "{}/../infra/modules/stashless/rbac/{function}-clusterrole.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    doc["rules"].as_array().unwrap().clone()
}

fn grants_of(rules: &[Value]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    out.insert((
                        g.as_str().unwrap().to_string(),
                        r.as_str().unwrap().to_string(),
                        v.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// What `function`'s file grants (the module adds nothing to it).
fn granted(function: &str) -> BTreeSet<Grant> {
    grants_of(&rules(function))
}

/// The client each function runs with.
struct Identities {
    scheduler: Client,
    backup: Client,
    restore: Client,
}

/// The cycle's world on `cluster`: an OpenBao behind AppBinding `vault`, Repository `repo`
/// under `rbac` on a fresh bucket, BackupConfiguration `cfg` hourly with history limit 1.
async fn world(tag: &str, cluster: Cluster) -> World {
    World::builder(tag)
        .cluster(cluster)
        .openbao()
        .app_binding()
        .repository("rbac")
        .backup_configuration(
            ConfigBuilder::new("cfg")
                .schedule("0 * * * *")
                .history_limit(1),
        )
        .build()
        .await
}

/// A full cycle in `w` ([`world`]), each function with its own client: two scheduled
/// backups (the second prunes the first: history limit 1); a restore refused because a
/// backup of its target is Running (restore reads that backup's configuration); a restore
/// that succeeds while a BackupSession of a deleted configuration is Running; then the
/// sweep, which fails that orphan and a RestoreSession Running past its deadline. Setup
/// (the world) and checks use the cluster's admin client; the checks include the effects of
/// the calls whose failure the functions only log (validity on the configuration,
/// Repository totals, Events), so a refused call shows on the real server too. Returns what
/// each function did as spans of `position()` (the in-memory server's request log length).
async fn cycle(
    w: &World,
    ids: &Identities,
    position: &dyn Fn() -> usize,
) -> Vec<(&'static str, Range<usize>)> {
    let cluster = &w.cluster;
    let settings = cluster.backup_context(None).settings.clone();
    let backup_ctx = Context::new(ids.backup.clone(), settings.clone());
    let restore_ctx = Context::new(ids.restore.clone(), settings);
    let mut spans = Vec::new();
    // An Invalid configuration: the scheduler records it in status and with an Event.
    cluster
        .backup_config(ConfigBuilder::new("bad").schedule("61 * * * *"))
        .await
        .unwrap();

    for hour in [10, 11] {
        let t = Tick {
            time: Some(Utc.with_ymd_and_hms(2099, 1, 1, hour, 0, 30).unwrap()),
        };
        let start = position();
        let report = tick(&ids.scheduler, &t, &SchedulerSettings::default())
            .await
            .unwrap();
        spans.push(("scheduler", start..position()));
        assert!(report.errors.is_empty(), "{report:?}");
        let name = report.created[0].split('/').nth(1).unwrap().to_string();
        let start = position();
        let outcome = backup::run(&backup_ctx, &session_ref(&name), None)
            .await
            .unwrap();
        spans.push(("backup", start..position()));
        assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    }
    assert_eq!(
        cluster.sessions().await.unwrap().len(),
        1,
        "history limit 1 prunes"
    );
    let cfg: BackupConfiguration = cluster.api().get("cfg").await.unwrap();
    assert_eq!(
        cfg.status.and_then(|s| s.phase).as_deref(),
        Some("Ready"),
        "the scheduler records validity"
    );
    let bad: BackupConfiguration = cluster.api().get("bad").await.unwrap();
    assert_eq!(bad.status.and_then(|s| s.phase).as_deref(), Some("Invalid"));
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), NS);
    assert!(
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.involved_object.name.as_deref() == Some("bad")),
        "the scheduler records an Invalid configuration with an Event"
    );
    let repo: Repository = cluster.api().get("repo").await.unwrap();
    assert_eq!(
        repo.status.and_then(|s| s.snapshot_count),
        Some(2),
        "backup writes the Repository's totals"
    );

    // A backup of the same Vault is Running: the restore is refused, which needs the
    // backup's configuration.
    let running = cluster.new_session("cfg", "cfg-running").await.unwrap();
    let api: Api<BackupSession> = cluster.api();
    let Claim::Claimed(_) = session::claim(&api, &running, Utc::now() + Duration::minutes(10))
        .await
        .unwrap()
    else {
        panic!("could not claim cfg-running")
    };
    cluster
        .new_restore("restore-0", "repo", "vault", None, false)
        .await
        .unwrap();
    let start = position();
    let outcome = stashless::restore::run(&restore_ctx, &session_ref("restore-0"), None)
        .await
        .unwrap();
    spans.push(("restore", start..position()));
    match &outcome {
        Outcome::Failed { reason } => {
            assert!(reason.contains("cfg-running"), "{reason}")
        }
        other => panic!("restore next to a running backup: {other:?}"),
    }
    session::patch_status(&api, "cfg-running", &json!({"phase": "Failed"}))
        .await
        .unwrap();

    // A backup of a configuration that no longer exists, Running (its function alive).
    let orphan = cluster
        .new_stashless_session("gone", "gone-1")
        .await
        .unwrap();
    let Claim::Claimed(_) = session::claim(&api, &orphan, Utc::now() + Duration::minutes(10))
        .await
        .unwrap()
    else {
        panic!("could not claim gone-1")
    };
    cluster
        .new_restore("restore-1", "repo", "vault", None, false)
        .await
        .unwrap();
    let start = position();
    let outcome = stashless::restore::run(&restore_ctx, &session_ref("restore-1"), None)
        .await
        .unwrap();
    spans.push(("restore", start..position()));
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");

    // A restore whose function stopped: Running, deadline passed.
    let lost = cluster
        .new_restore("rs-lost", "repo", "vault", None, false)
        .await
        .unwrap();
    let rs_api: Api<RestoreSession> = cluster.api();
    let Claim::Claimed(_) = session::claim(&rs_api, &lost, Utc::now() - Duration::seconds(1))
        .await
        .unwrap()
    else {
        panic!("could not claim rs-lost")
    };
    let start = position();
    let report = sweep(
        &ids.scheduler,
        &NamespaceScope::all(),
        Utc::now(),
        &SweepSettings::default(),
    )
    .await
    .unwrap();
    spans.push(("scheduler", start..position()));
    let failed: BTreeSet<&str> = report.failed.keys().map(String::as_str).collect();
    assert_eq!(
        failed,
        BTreeSet::from(["BackupSession vault/gone-1", "RestoreSession vault/rs-lost"]),
        "{report:?}"
    );
    assert_eq!(
        cluster
            .restore_session("rs-lost")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(SessionPhase::Failed)
    );

    // Backup and restore recorded their Events.
    let events: BTreeSet<(String, String)> = cluster
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
            )
        })
        .collect();
    for (object, reason) in [
        ("restore-0", "RestoreSessionFailed"),
        ("restore-1", "RestoreSessionSucceeded"),
    ] {
        assert!(
            events.contains(&(object.to_string(), reason.to_string())),
            "no {reason} Event for {object}: {events:?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|(_, reason)| reason == "BackupSessionSucceeded"),
        "{events:?}"
    );

    // Auto-backup: a blueprint gives a second Vault AppBinding its Repository and
    // configuration, an edit of the blueprint updates both, and removing the annotation
    // deletes the configuration. Ticks at 11:30, when nothing is due.
    let bp_api: Api<kube::api::DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &kube::api::ApiResource::erase::<stashless::api::BackupBlueprint>(&()),
    );
    let mut bp: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupBlueprint",
        "metadata": {"name": "rbac-bp"},
        "spec": {"backend": {"s3": {"endpoint": "http://127.0.0.1:9", "bucket": "b", "prefix": "${TARGET_NAME}"}},
                 "schedule": "0 5 * * *", "task": {"name": "vault-backup-1.10.3"},
                 "retentionPolicy": {"name": "k", "keepLast": 1, "prune": true}},
    }))
    .unwrap();
    bp.metadata.namespace = None;
    bp_api.create(&PostParams::default(), &bp).await.unwrap();
    cluster
        .vault_binding("vault-b", "http://127.0.0.1:9", "t")
        .await
        .unwrap();
    let annotate = |value: Value| async move {
        cluster
            .api::<stashless::api::AppBinding>()
            .patch(
                "vault-b",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"stash.appscode.com/backup-blueprint": value}}})),
            )
            .await
            .unwrap();
    };
    annotate(json!("rbac-bp")).await;
    let quiet = Tick {
        time: Some(Utc.with_ymd_and_hms(2099, 1, 1, 11, 30, 0).unwrap()),
    };
    let blueprint_tick = async |spans: &mut Vec<(&'static str, Range<usize>)>| {
        let start = position();
        let report = tick(&ids.scheduler, &quiet, &SchedulerSettings::default())
            .await
            .unwrap();
        spans.push(("scheduler", start..position()));
        report.blueprints
    };
    let made = blueprint_tick(&mut spans).await;
    assert_eq!(made.created.len(), 2, "{made:?}");
    bp_api
        .patch(
            "rbac-bp",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": "0 6 * * *"}})),
        )
        .await
        .unwrap();
    let changed = blueprint_tick(&mut spans).await;
    assert_eq!(changed.updated.len(), 2, "{changed:?}");
    annotate(Value::Null).await;
    let removed = blueprint_tick(&mut spans).await;
    assert_eq!(removed.removed.len(), 1, "{removed:?}");
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_file_grants_exactly_the_calls_that_function_makes() {
    // The request log needs the in-memory server; all functions use its one client.
    let w = world("rbac-mem", Cluster::memory().await.unwrap()).await;
    let cluster = &w.cluster;
    let ids = Identities {
        scheduler: cluster.client.clone(),
        backup: cluster.client.clone(),
        restore: cluster.client.clone(),
    };
    let position = || cluster.mem().request_log().len();
    let spans = cycle(&w, &ids, &position).await;

    let log = cluster.mem().request_log();
    let mut used: BTreeMap<&str, BTreeSet<Grant>> = BTreeMap::new();
    for (function, span) in &spans {
        let set = used.entry(function).or_default();
        for (method, path) in &log[span.clone()] {
            if let Some(g) = grant_of(method, path) {
                set.insert(g);
            }
        }
    }
    let mut problems = Vec::new();
    for function in FUNCTIONS {
        let used = used.remove(function).unwrap_or_default();
        let granted = granted(function);
        let missing: Vec<_> = used.difference(&granted).collect();
        let unused: Vec<_> = granted.difference(&used).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{function}: calls its RBAC file does not allow (403 in production): {missing:?}"
            ));
        }
        if !unused.is_empty() {
            problems.push(format!(
                "{function}: rules no call needs (more access than used): {unused:?}"
            ));
        }
        println!(
            "{function}: {} (group, resource, verb) used: {used:?}",
            used.len()
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Install each function's rules as the module does: a ClusterRole + ClusterRoleBinding to
/// the function's group, and the Secrets rule as a Role + RoleBinding in `NS` (the module
/// with `namespaces = ["vault"]`).
async fn install_roles(admin: &Client) {
    let api_group = "rbac.authorization.k8s.io";
    for function in FUNCTIONS {
        let group = format!("{GROUP_PREFIX}:{function}");
        let name = format!("stashless-{function}");
        let (secrets, cluster): (Vec<Value>, Vec<Value>) =
            rules(function).into_iter().partition(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("secrets"))
            });
        let subject = json!([{"apiGroup": api_group, "kind": "Group", "name": group}]);
        let role: ClusterRole =
            serde_json::from_value(json!({"metadata": {"name": name}, "rules": cluster})).unwrap();
        Api::<ClusterRole>::all(admin.clone())
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": api_group, "kind": "ClusterRole", "name": name},
            "subjects": subject,
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(admin.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        if secrets.is_empty() {
            continue;
        }
        let name = format!("stashless-{function}-secrets");
        let role: Role = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": NS}, "rules": secrets}),
        )
        .unwrap();
        Api::<Role>::namespaced(admin.clone(), NS)
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "roleRef": {"apiGroup": api_group, "kind": "Role", "name": name},
            "subjects": subject,
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(admin.clone(), NS)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
}

/// A client that acts as `function` would on EKS: a user in the function's group (and
/// `system:authenticated`) only, through impersonation by the admin.
fn identity(real: &ApiServer, function: &str) -> Client {
    let mut config = kube::Config::new(real.url.parse().unwrap());
    config.root_cert_file = Some(real.ca_file.clone());
    config.auth_info.token = Some(real.token.clone().into());
    config.auth_info.impersonate = Some(format!("stashless-{function}"));
    config.auth_info.impersonate_groups = Some(vec![format!("{GROUP_PREFIX}:{function}")]);
    Client::try_from(config).unwrap()
}

/// Whether the API server lets `function`'s group do `verb` on `resource` in `NS`.
async fn allowed(admin: &Client, function: &str, (group, resource, verb): &Grant) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("stashless-{function}"),
            "groups": [format!("{GROUP_PREFIX}:{function}"), "system:authenticated"],
            "resourceAttributes": {
                "namespace": NS, "group": group, "resource": resource,
                "subresource": subresource, "verb": verb,
            },
        }
    }))
    .unwrap();
    let answer = Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().allowed
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_works_with_only_its_own_role_on_a_real_api_server() {
    init_logs();
    let cluster = Cluster::apiserver(CrdSet::from_env()).await.unwrap();
    let w = world("rbac-real", cluster).await;
    let cluster = &w.cluster;
    let admin = cluster.client.clone();
    let real = cluster.real().unwrap();
    install_roles(&admin).await;
    let ids = Identities {
        scheduler: identity(real, "scheduler"),
        backup: identity(real, "backup"),
        restore: identity(real, "restore"),
    };

    // The cycle succeeds with each function's own role, including the calls whose refusal
    // would only be logged (checked by their effects in `cycle`). kube-apiserver 1.20 serves
    // EndpointSlices as v1beta1 only, so the functions' v1 list is a 404 here whatever RBAC
    // says: the review below covers it.
    cycle(&w, &ids, &|| 0).await;

    // Each group may do exactly what its file says, of everything any function may do.
    let mut universe: BTreeSet<Grant> = FUNCTIONS.iter().flat_map(|f| granted(f)).collect();
    for (g, r, v) in [
        ("", "secrets", "list"),
        ("stash.appscode.com", "restoresessions", "create"),
        ("stash.appscode.com", "restoresessions", "update"),
        ("stash.appscode.com", "backupsessions", "update"),
    ] {
        universe.insert((g.into(), r.into(), v.into()));
    }
    let mut wrong = Vec::new();
    for function in FUNCTIONS {
        let own = granted(function);
        for g in &universe {
            let want = own.contains(g);
            if allowed(&admin, function, g).await != want {
                wrong.push(format!(
                    "{function} {} {g:?}",
                    if want { "is refused" } else { "is allowed" }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let secrets_get = ("".to_string(), "secrets".to_string(), "get".to_string());
    assert!(!allowed(&admin, "scheduler", &secrets_get).await);

    // The same by trying, as the functions' identities: refused, and nothing changed.
    let e = Api::<Secret>::namespaced(ids.scheduler.clone(), NS)
        .get("vault-token")
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), Some(403), "scheduler reading a Secret: {e}");
    let e = Api::<RestoreSession>::namespaced(ids.backup.clone(), NS)
        .patch_status(
            "restore-1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Pending"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&e), Some(403), "backup re-arming a restore: {e}");
    assert_eq!(
        cluster
            .restore_session("restore-1")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(SessionPhase::Succeeded)
    );
    let bs: BackupSession = serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": "by-restore"},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "cfg"}}
    }))
    .unwrap();
    let e = Api::<BackupSession>::namespaced(ids.restore.clone(), NS)
        .create(&PostParams::default(), &bs)
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&e),
        Some(403),
        "restore creating a BackupSession: {e}"
    );
}

#[test]
fn request_paths_map_to_rbac_verbs() {
    let g = |m, p| grant_of(m, p).map(|(a, b, c)| format!("{a}|{b}|{c}"));
    assert_eq!(
        g(
            "GET",
            "/apis/stash.appscode.com/v1beta1/namespaces/x/backupsessions/s"
        ),
        Some("stash.appscode.com|backupsessions|get".into())
    );
    assert_eq!(
        g(
            "GET",
            "/apis/stash.appscode.com/v1beta1/backupconfigurations?labelSelector=a"
        ),
        Some("stash.appscode.com|backupconfigurations|list".into())
    );
    assert_eq!(
        g(
            "GET",
            "/apis/stash.appscode.com/v1beta1/backupsessions?watch=true&resourceVersion=1"
        ),
        Some("stash.appscode.com|backupsessions|watch".into())
    );
    assert_eq!(
        g(
            "PATCH",
            "/apis/stash.appscode.com/v1beta1/namespaces/x/backupsessions/s/status"
        ),
        Some("stash.appscode.com|backupsessions/status|patch".into())
    );
    assert_eq!(
        g("POST", "/api/v1/namespaces/x/events"),
        Some("|events|create".into())
    );
    assert_eq!(
        g(
            "DELETE",
            "/apis/stash.appscode.com/v1beta1/namespaces/x/backupsessions"
        ),
        Some("stash.appscode.com|backupsessions|deletecollection".into())
    );
    assert_eq!(g("GET", "/apis"), None);
    assert_eq!(g("GET", "/version"), None);
}

#[test]
fn every_function_has_a_file_and_only_backup_and_restore_read_secrets() {
    let secrets_get = ("".to_string(), "secrets".to_string(), "get".to_string());
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/modules/stashless/rbac"
    );
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want: Vec<String> = FUNCTIONS
        .iter()
        .map(|f| format!("{f}-clusterrole.yaml"))
        .collect();
    want.sort();
    assert_eq!(files, want);
    for function in FUNCTIONS {
        assert_eq!(
            granted(function).contains(&secrets_get),
            function != "scheduler",
            "{function}"
        );
    }
    let restore_status = (
        "stash.appscode.com".to_string(),
        "restoresessions/status".to_string(),
        "patch".to_string(),
    );
    assert!(!granted("backup").contains(&restore_status));
}
