//! The Stash CRDs as Stash publishes them (copied byte for byte into `infra/crds/stash/`,
//! sources in `SOURCES.md` there), and a checker that finds field paths a CRD's schema
//! does not have: a real API server silently prunes those from what we write.
//!
//! Also the CRDs generated from stashless's own Rust types ([`generated`]), kept in
//! `infra/crds/generated/`: what a cluster without Stash gets. Both sets are installed into
//! a real kube-apiserver by the test suite (`tests/kube/apiserver.sh`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::api::{
    AppBinding, BackupBlueprint, BackupConfiguration, BackupSession, Repository, RestoreSession,
};

pub const BACKUP_CONFIGURATIONS: &str =
    include_str!("../../../infra/crds/stash/backupconfigurations.stash.appscode.com.yaml");
pub const BACKUP_SESSIONS: &str =
    include_str!("../../../infra/crds/stash/backupsessions.stash.appscode.com.yaml");
pub const RESTORE_SESSIONS: &str =
    include_str!("../../../infra/crds/stash/restoresessions.stash.appscode.com.yaml");
pub const REPOSITORIES: &str =
    include_str!("../../../infra/crds/stash/repositories.stash.appscode.com.yaml");
pub const APP_BINDINGS: &str =
    include_str!("../../../infra/crds/stash/appbindings.appcatalog.appscode.com.yaml");
pub const BACKUP_BLUEPRINTS: &str =
    include_str!("../../../infra/crds/stash/backupblueprints.stash.appscode.com.yaml");

/// The six kinds as (group, version, kind, plural, has a status subresource, namespaced).
pub const KINDS: [(&str, &str, &str, &str, bool, bool); 6] = [
    (
        "stash.appscode.com",
        "v1beta1",
        "BackupConfiguration",
        "backupconfigurations",
        true,
        true,
    ),
    (
        "stash.appscode.com",
        "v1beta1",
        "BackupSession",
        "backupsessions",
        true,
        true,
    ),
    (
        "stash.appscode.com",
        "v1beta1",
        "RestoreSession",
        "restoresessions",
        true,
        true,
    ),
    (
        "stash.appscode.com",
        "v1alpha1",
        "Repository",
        "repositories",
        true,
        true,
    ),
    (
        "appcatalog.appscode.com",
        "v1alpha1",
        "AppBinding",
        "appbindings",
        false,
        true,
    ),
    (
        "stash.appscode.com",
        "v1beta1",
        "BackupBlueprint",
        "backupblueprints",
        false,
        false,
    ),
];

/// All six, in the order to apply them.
pub const ALL: [&str; 6] = [
    APP_BINDINGS,
    REPOSITORIES,
    BACKUP_CONFIGURATIONS,
    BACKUP_SESSIONS,
    RESTORE_SESSIONS,
    BACKUP_BLUEPRINTS,
];

/// Paths in `value` that `schema` (an openAPIV3Schema as JSON) does not allow, with the
/// reason: unknown field, or wrong JSON type. Objects with
/// `x-kubernetes-preserve-unknown-fields` or `additionalProperties` accept anything below.
pub fn violations(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, value, String::new(), &mut out);
    out
}

fn type_ok(schema: &Value, value: &Value) -> bool {
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return value.is_string() || value.is_i64() || value.is_u64();
    }
    match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(_) => true,
    }
}

fn walk(schema: &Value, value: &Value, path: String, out: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    if !type_ok(schema, value) {
        out.push(format!(
            "{path}: schema type {} but value is {}",
            schema.get("type").and_then(Value::as_str).unwrap_or("?"),
            value
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        out.push(format!(
            "{path}: {value} is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    match value {
        Value::Object(map) => {
            if schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true)
            {
                return;
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (k, v) in map {
                let child = format!("{path}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(s) => walk(s, v, child, out),
                    None => match additional {
                        Some(Value::Object(s)) => walk(&Value::Object(s.clone()), v, child, out),
                        Some(Value::Bool(true)) => {}
                        _ if path.is_empty()
                            && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") => {}
                        _ => out.push(format!("{child}: not in the CRD schema (would be pruned)")),
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(item_schema, v, format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The openAPIV3Schema of a CRD manifest's storage version, as JSON.
pub fn schema_of(crd_yaml: &str) -> Value {
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(crd_yaml).expect("bundled CRD parses");
    storage_schema(&crd)
}

/// The storage version's `openAPIV3Schema` as JSON.
fn storage_schema(crd: &CustomResourceDefinition) -> Value {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .expect("a storage version");
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema"),
    )
    .expect("schema serialises")
}

/// Stash's CRD (YAML) for `plural`.
pub fn stash_yaml(plural: &str) -> &'static str {
    match plural {
        "appbindings" => APP_BINDINGS,
        "repositories" => REPOSITORIES,
        "backupconfigurations" => BACKUP_CONFIGURATIONS,
        "backupsessions" => BACKUP_SESSIONS,
        "restoresessions" => RESTORE_SESSIONS,
        "backupblueprints" => BACKUP_BLUEPRINTS,
        _ => panic!("no Stash CRD for {plural}"),
    }
}

/// The `openAPIV3Schema` of Stash's CRD for `plural` (storage version), for an in-memory
/// API server that prunes and validates like a real one.
pub fn stash_schema(plural: &str) -> Value {
    schema_of(stash_yaml(plural))
}

/// The six CRDs generated from the Rust types, in the order to apply them, each with
/// its file name in `infra/crds/generated/` (`<plural>.<group>.yaml`, like Stash's).
pub fn generated() -> Vec<(String, CustomResourceDefinition)> {
    [
        AppBinding::crd(),
        Repository::crd(),
        BackupConfiguration::crd(),
        BackupSession::crd(),
        RestoreSession::crd(),
        BackupBlueprint::crd(),
    ]
    .into_iter()
    .map(|crd| {
        let name = crd.metadata.name.clone().unwrap_or_default();
        (format!("{name}.yaml"), crd)
    })
    .collect()
}

/// The `openAPIV3Schema` (storage version) of the generated CRD for `plural`.
pub fn generated_schema(plural: &str) -> Value {
    let (_, crd) = generated()
        .into_iter()
        .find(|(_, c)| c.spec.names.plural == plural)
        .unwrap_or_else(|| panic!("no generated CRD for {plural}"));
    storage_schema(&crd)
}

/// A generated CRD as the YAML file committed under `infra/crds/generated/`.
pub fn generated_yaml(crd: &CustomResourceDefinition) -> String {
    format!(
        "# Generated from stashless's Rust types by `stashless crds --generated`; do not edit.\n{}",
        serde_saphyr::to_string(crd).expect("a CRD serialises")
    )
}
