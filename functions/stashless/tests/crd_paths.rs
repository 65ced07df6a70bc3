//! Every field path stashless reads or writes exists in Stash's published CRD schemas with
//! the same type. The typed paths come from the schemas generated from our Rust types; the
//! untyped status bodies the functions write are checked in the end-to-end tests with the
//! same checker on the objects the API server returns.

use kube::CustomResourceExt;
use serde_json::Value;
use stashless::api::{AppBinding, BackupConfiguration, BackupSession, Repository, RestoreSession};
use stashless::crds;

/// Leaf paths (with types) of a generated schema.
fn paths(schema: &Value, path: String, out: &mut Vec<(String, String)>) {
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            paths(v, format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        paths(items, format!("{path}[]"), out);
    }
    if !path.is_empty() {
        out.push((path, ty));
    }
}

fn lookup<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = schema;
    for part in path.trim_start_matches('.').split('.') {
        let (name, arrays) = (part.trim_end_matches("[]"), part.matches("[]").count());
        cur = cur.get("properties")?.get(name)?;
        for _ in 0..arrays {
            cur = cur.get("items")?;
        }
    }
    Some(cur)
}

fn check(ours: Value, reference_yaml: &str, kind: &str) -> usize {
    let reference = crds::schema_of(reference_yaml);
    let mut ps = Vec::new();
    paths(&ours, String::new(), &mut ps);
    let mut problems = Vec::new();
    for (path, ty) in &ps {
        match lookup(&reference, path) {
            None => problems.push(format!("{kind}{path}: not in Stash's CRD")),
            Some(r) => {
                let rty = r.get("type").and_then(Value::as_str).unwrap_or("");
                let int_or_string = r.get("x-kubernetes-int-or-string").is_some();
                if !ty.is_empty() && !rty.is_empty() && ty != rty && !int_or_string {
                    problems.push(format!("{kind}{path}: ours is {ty}, Stash's is {rty}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "schema mismatches:\n{}",
        problems.join("\n")
    );
    ps.len()
}

fn generated<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn every_typed_field_exists_in_stash_crds() {
    let n = check(
        generated::<BackupConfiguration>(),
        crds::BACKUP_CONFIGURATIONS,
        "BackupConfiguration",
    ) + check(
        generated::<BackupSession>(),
        crds::BACKUP_SESSIONS,
        "BackupSession",
    ) + check(
        generated::<RestoreSession>(),
        crds::RESTORE_SESSIONS,
        "RestoreSession",
    ) + check(generated::<Repository>(), crds::REPOSITORIES, "Repository")
        + check(generated::<AppBinding>(), crds::APP_BINDINGS, "AppBinding");
    // Guard against a walker that silently checks nothing.
    assert!(n > 80, "only {n} paths checked");
}

#[test]
fn checker_catches_unknown_and_mistyped_fields() {
    let schema = crds::schema_of(crds::BACKUP_SESSIONS);
    let ok = serde_json::json!({"status": {"phase": "Running", "targets": [{"stats": [{"snapshots": [{"name": "x", "processingTime": "1s"}]}]}]}});
    assert!(crds::violations(&schema, &ok).is_empty());
    let bad = serde_json::json!({"status": {"phase": "Done", "bogus": 1, "targets": [{"totalHosts": "one"}]}});
    let v = crds::violations(&schema, &bad);
    assert_eq!(v.len(), 3, "{v:?}");
}

#[test]
fn reference_crds_have_status_subresources_where_stash_has_them() {
    for (yaml, has_status) in [
        (crds::BACKUP_CONFIGURATIONS, true),
        (crds::BACKUP_SESSIONS, true),
        (crds::RESTORE_SESSIONS, true),
        (crds::REPOSITORIES, true),
        (crds::APP_BINDINGS, false),
    ] {
        let v: Value = serde_saphyr::from_str(yaml).unwrap();
        let sub = &v["spec"]["versions"][0]["subresources"]["status"];
        assert_eq!(!sub.is_null(), has_status, "{}", v["metadata"]["name"]);
    }
}

#[test]
fn kinds_table_matches_the_crd_files() {
    for (yaml, (group, version, kind, plural, status, namespaced)) in [
        crds::BACKUP_CONFIGURATIONS,
        crds::BACKUP_SESSIONS,
        crds::RESTORE_SESSIONS,
        crds::REPOSITORIES,
        crds::APP_BINDINGS,
        crds::BACKUP_BLUEPRINTS,
    ]
    .into_iter()
    .zip(crds::KINDS)
    {
        let v: Value = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(v["spec"]["group"], group);
        assert_eq!(v["spec"]["names"]["kind"], kind);
        assert_eq!(v["spec"]["names"]["plural"], plural);
        assert_eq!(v["spec"]["versions"][0]["name"], version);
        let scope = if namespaced { "Namespaced" } else { "Cluster" };
        assert_eq!(v["spec"]["scope"], scope, "{kind}");
        assert_eq!(
            !v["spec"]["versions"][0]["subresources"]["status"].is_null(),
            status,
            "{kind}"
        );
    }
}
