//! The RBAC the Terraform module grants the functions equals what they really do: every
//! request the scheduler, sweep, backup and restore make in a full cycle (recorded by the
//! in-memory API server) is turned into (apiGroup, resource, verb) and compared with
//! `infra/modules/stashless/rbac/functions-clusterrole.yaml` plus the Secrets `get` the
//! module adds. A call the rules lack would be a 403 in production; a rule no call needs is
//! more access than the functions use.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use serde_json::Value;
use stashless::backup::{self, Outcome};
use stashless::events::{SessionRef, Tick};
use stashless::scheduler::{SchedulerSettings, tick};
use stashless::sweep::{SweepSettings, sweep};
use stashless_tests::procs::openbao::OpenBao;
use stashless_tests::{Cluster, ConfigBuilder, NS, S3Target, init_logs};

type Grant = (String, String, String);

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

fn granted() -> BTreeSet<Grant> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/modules/stashless/rbac/functions-clusterrole.yaml"
    );
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    for rule in doc["rules"].as_array().unwrap() {
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
    // kubernetes.tf adds Secrets `get` (cluster-wide, or per namespace when listed).
    out.insert(("".into(), "secrets".into(), "get".into()));
    out
}

fn r(name: &str) -> SessionRef {
    SessionRef {
        kind: None,
        namespace: NS.into(),
        name: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_grants_exactly_the_kubernetes_calls_the_functions_make() {
    init_logs();
    let (s3, bucket) = S3Target::garage_bucket("rbac").await.unwrap();
    let bao = OpenBao::start().await.unwrap();
    // The request log needs the in-memory server.
    let cluster = Cluster::memory().await.unwrap();
    cluster
        .vault_binding("vault", &bao.addr, &bao.root_token)
        .await
        .unwrap();
    cluster
        .repository("repo", &s3, &bucket, "rbac")
        .await
        .unwrap();
    cluster
        .backup_config(
            ConfigBuilder::new("cfg")
                .schedule("0 * * * *")
                .history_limit(1),
        )
        .await
        .unwrap();
    let first_call = cluster.mem().request_log().len();

    // Two scheduled backups (the second prunes the first: history limit 1), a restore,
    // and the sweep, as the deployed functions run them.
    let ctx = cluster.backup_context(None);
    for hour in [10, 11] {
        let t = Tick {
            time: Some(Utc.with_ymd_and_hms(2099, 1, 1, hour, 0, 30).unwrap()),
        };
        let report = tick(&cluster.client, &t, &SchedulerSettings::default())
            .await
            .unwrap();
        let name = report.created[0].split('/').nth(1).unwrap().to_string();
        let outcome = backup::run(&ctx, &r(&name), None).await.unwrap();
        assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    }
    assert_eq!(
        cluster.sessions().await.unwrap().len(),
        1,
        "history limit 1 prunes"
    );
    let log_before_restore = cluster.mem().request_log().len();
    cluster
        .new_restore("restore-1", "repo", "vault", None, false)
        .await
        .unwrap();
    let setup_calls: Vec<_> = cluster.mem().request_log()[log_before_restore..].to_vec();
    let outcome = stashless::restore::run(&ctx, &r("restore-1"), None)
        .await
        .unwrap();
    assert!(
        matches!(outcome, stashless::restore::Outcome::Succeeded { .. }),
        "{outcome:?}"
    );
    sweep(&cluster.client, &[], Utc::now(), &SweepSettings::default())
        .await
        .unwrap();

    let log = cluster.mem().request_log();
    let mut used = BTreeSet::new();
    for (i, (method, path)) in log.iter().enumerate().skip(first_call) {
        // The test's own write of the RestoreSession is not a function's call.
        if i >= log_before_restore && i < log_before_restore + setup_calls.len() {
            continue;
        }
        if let Some(g) = grant_of(method, path) {
            used.insert(g);
        }
    }
    let granted = granted();
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "calls the RBAC rules do not allow (403 in production): {missing:?}"
    );
    assert!(
        unused.is_empty(),
        "rules no call needs (more access than used): {unused:?}"
    );
    println!(
        "{} distinct (group, resource, verb) used: {used:?}",
        used.len()
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
