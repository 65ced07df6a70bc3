//! Stash's auto-backup: a BackupBlueprint (cluster-scoped) named by the annotation
//! `stash.appscode.com/backup-blueprint` on an AppBinding gives the Repository and
//! BackupConfiguration Stash would make for it: both named `app-<AppBinding>`, in the
//! AppBinding's namespace (or the blueprint's `backupNamespace`/`repoNamespace`), with
//! Stash's `${TARGET_*}` variables filled from the AppBinding in every string, the schedule
//! overridden by `stash.appscode.com/schedule`, and task parameters from
//! `params.stash.appscode.com/<name>` annotations. Pure: the scheduler reads and writes.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::api::{
    APPBINDING_API_VERSION, APPBINDING_KIND, LABEL_MANAGED_BY, MANAGED_BY, STASH_GROUP,
};
use crate::error::{Error, Result};

/// On an AppBinding: the BackupBlueprint to back it up with.
pub const BLUEPRINT_ANNOTATION: &str = "stash.appscode.com/backup-blueprint";
/// On an AppBinding: a schedule that overrides the blueprint's.
pub const SCHEDULE_ANNOTATION: &str = "stash.appscode.com/schedule";
/// On an AppBinding: `params.stash.appscode.com/<name>: <value>` task parameters.
pub const PARAMS_PREFIX: &str = "params.stash.appscode.com/";
/// On what a blueprint made: which blueprint (a label, to find them all).
pub const LABEL_BLUEPRINT: &str = "stashless.io/blueprint";
/// On what a blueprint made: the AppBinding it was made for (`<namespace>/<name>`).
pub const TARGET_ANNOTATION: &str = "stashless.io/blueprint-target";
/// On what a blueprint made: a hash of what was rendered, so an unchanged blueprint is
/// not written again (the API server's defaults would otherwise differ every tick).
pub const HASH_ANNOTATION: &str = "stashless.io/blueprint-hash";

/// The variables Stash fills in a blueprint, for an AppBinding.
pub const VARIABLES: &[&str] = &[
    "TARGET_API_VERSION",
    "TARGET_KIND",
    "TARGET_RESOURCE",
    "TARGET_NAMESPACE",
    "TARGET_NAME",
    "TARGET_APP_GROUP",
    "TARGET_APP_RESOURCE",
    "TARGET_APP_TYPE",
    "TARGET_APP_VERSION",
];

/// The AppBinding a blueprint is rendered for.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// `spec.type`, e.g. `kubevault.com/vaultserver`.
    pub app_type: Option<String>,
    /// `spec.version`.
    pub app_version: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// The objects a blueprint gives one AppBinding, as JSON to create or replace.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub repository: Value,
    pub config: Value,
    /// Hash of both, written as [`HASH_ANNOTATION`].
    pub hash: String,
}

/// The name Stash gives both objects.
pub fn object_name(appbinding: &str) -> String {
    format!("app-{appbinding}")
}

/// The blueprint an AppBinding's annotation names: `None` without the annotation. Stash
/// accepts a comma-separated list; stashless makes one configuration per AppBinding.
pub fn named(annotations: &BTreeMap<String, String>) -> Result<Option<String>> {
    let Some(v) = annotations.get(BLUEPRINT_ANNOTATION) else {
        return Ok(None);
    };
    let names: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    match names.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.to_string())),
        many => Err(Error::invalid(format!(
            "annotation {BLUEPRINT_ANNOTATION} names {} blueprints ({}): stashless backs up a Vault with one; name one",
            many.len(),
            many.join(", ")
        ))),
    }
}

impl Target {
    fn variable(&self, name: &str) -> Option<String> {
        let (group, resource) = match self.app_type.as_deref() {
            Some(t) => match t.split_once('/') {
                Some((g, r)) => (Some(g.to_string()), Some(r.to_string())),
                None => (None, Some(t.to_string())),
            },
            None => (None, None),
        };
        match name {
            "TARGET_API_VERSION" => Some(APPBINDING_API_VERSION.into()),
            "TARGET_KIND" => Some(APPBINDING_KIND.into()),
            "TARGET_RESOURCE" => Some("appbindings".into()),
            "TARGET_NAMESPACE" => Some(self.namespace.clone()),
            "TARGET_NAME" => Some(self.name.clone()),
            "TARGET_APP_GROUP" => group,
            "TARGET_APP_RESOURCE" => resource,
            "TARGET_APP_TYPE" => self.app_type.clone(),
            "TARGET_APP_VERSION" => self.app_version.clone(),
            _ => None,
        }
    }
}

/// Fill `${VAR}` in every string below `v`; `at` names where `v` sits, for the reason.
fn fill(v: &mut Value, target: &Target, at: &str) -> Result<()> {
    match v {
        Value::String(s) => *s = fill_str(s, target, at)?,
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                fill(item, target, &format!("{at}[{i}]"))?;
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                fill(item, target, &format!("{at}.{k}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn fill_str(s: &str, target: &Target, at: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            return Err(Error::invalid(format!(
                "{at}: \"${{\" is never closed by \"}}\""
            )));
        };
        let name = &after[..j];
        if !VARIABLES.contains(&name) {
            return Err(Error::invalid(format!(
                "{at}: unknown variable ${{{name}}}: a blueprint may use {}",
                VARIABLES
                    .iter()
                    .map(|v| format!("${{{v}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let value = target.variable(name).ok_or_else(|| {
            Error::invalid(format!(
                "{at}: ${{{name}}} has no value for AppBinding {}/{} (it sets no {})",
                target.namespace,
                target.name,
                if name == "TARGET_APP_VERSION" {
                    "spec.version"
                } else {
                    "spec.type"
                }
            ))
        })?;
        out.push_str(&value);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The Repository and BackupConfiguration blueprint `name` (its `spec` as JSON) gives
/// `target`. Errors name the blueprint field and say what to change.
pub fn render(name: &str, spec: &Value, target: &Target) -> Result<Rendered> {
    let label = format!("BackupBlueprint {name}");
    let mut spec = spec.clone();
    if !spec.is_object() {
        return Err(Error::invalid(format!("{label} has no spec")));
    }
    fill(&mut spec, target, &format!("{label} spec"))?;
    let get = |k: &str| spec.get(k).filter(|v| !v.is_null()).cloned();
    if get("wipeOut") == Some(Value::Bool(true)) {
        return Err(Error::invalid(format!(
            "{label} sets spec.wipeOut: stashless never deletes snapshots when a Repository is deleted (retention does); remove wipeOut"
        )));
    }
    let Some(retention) = get("retentionPolicy") else {
        return Err(Error::invalid(format!(
            "{label} has no spec.retentionPolicy: a BackupConfiguration needs one (e.g. keepLast: 5)"
        )));
    };
    let text = |k: &str| {
        get(k)
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|s| !s.is_empty())
    };
    let config_ns = text("backupNamespace").unwrap_or_else(|| target.namespace.clone());
    let repo_ns = text("repoNamespace").unwrap_or_else(|| config_ns.clone());
    let object = object_name(&target.name);
    let owner = |ns: &str| match (&target.uid, ns == target.namespace) {
        // An owner must live in the same namespace; elsewhere the label and annotation
        // tie the objects to the AppBinding.
        (Some(uid), true) => json!([{
            "apiVersion": APPBINDING_API_VERSION, "kind": APPBINDING_KIND,
            "name": target.name, "uid": uid,
        }]),
        _ => Value::Null,
    };
    let metadata = |ns: &str| {
        let mut m = json!({
            "name": object,
            "namespace": ns,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_BLUEPRINT: name},
            "annotations": {TARGET_ANNOTATION: format!("{}/{}", target.namespace, target.name)},
        });
        let owners = owner(ns);
        if !owners.is_null() {
            m["ownerReferences"] = owners;
        }
        m
    };

    let mut repo_spec = Map::new();
    repo_spec.insert("backend".into(), get("backend").unwrap_or(json!({})));
    if let Some(u) = get("usagePolicy") {
        repo_spec.insert("usagePolicy".into(), u);
    }
    let repository = json!({
        "apiVersion": format!("{STASH_GROUP}/v1alpha1"), "kind": "Repository",
        "metadata": metadata(&repo_ns),
        "spec": repo_spec,
    });

    let mut cfg = Map::new();
    let schedule = target
        .annotations
        .get(SCHEDULE_ANNOTATION)
        .cloned()
        .or_else(|| text("schedule"));
    if let Some(s) = schedule {
        cfg.insert("schedule".into(), json!(s));
    }
    let mut repo_ref = json!({"name": object});
    if repo_ns != config_ns {
        repo_ref["namespace"] = json!(repo_ns);
    }
    cfg.insert("repository".into(), repo_ref);
    let mut target_ref =
        json!({"apiVersion": APPBINDING_API_VERSION, "kind": APPBINDING_KIND, "name": target.name});
    if target.namespace != config_ns {
        target_ref["namespace"] = json!(target.namespace);
    }
    cfg.insert("target".into(), json!({"ref": target_ref}));
    let mut task = get("task").unwrap_or(Value::Null);
    let params: Vec<Value> = target
        .annotations
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(PARAMS_PREFIX)
                .map(|p| json!({"name": p, "value": v}))
        })
        .collect();
    if !params.is_empty() {
        if task.is_null() {
            task = json!({});
        }
        let existing = task
            .get("params")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        task["params"] = Value::Array(existing.into_iter().chain(params).collect());
    }
    if !task.is_null() {
        cfg.insert("task".into(), task);
    }
    cfg.insert("retentionPolicy".into(), retention);
    for k in ["backupHistoryLimit", "timeOut", "hooks", "retryConfig"] {
        if let Some(v) = get(k) {
            cfg.insert(k.into(), v);
        }
    }
    let config = json!({
        "apiVersion": format!("{STASH_GROUP}/v1beta1"), "kind": "BackupConfiguration",
        "metadata": metadata(&config_ns),
        "spec": cfg,
    });
    let hash = {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&(&repository, &config)).unwrap_or_default());
        hex::encode(&h.finalize()[..8])
    };
    let stamp = |mut v: Value| {
        v["metadata"]["annotations"][HASH_ANNOTATION] = json!(hash);
        v
    };
    Ok(Rendered {
        repository: stamp(repository),
        config: stamp(config),
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            namespace: "team-a".into(),
            name: "vault".into(),
            uid: Some("u-1".into()),
            app_type: Some("kubevault.com/vaultserver".into()),
            app_version: Some("1.10.3".into()),
            annotations: BTreeMap::from([(BLUEPRINT_ANNOTATION.into(), "vault-nightly".into())]),
        }
    }

    fn spec() -> Value {
        json!({
            "backend": {"s3": {"endpoint": "s3.amazonaws.com", "bucket": "backups",
                               "prefix": "vault/${TARGET_NAMESPACE}/${TARGET_APP_RESOURCE}/${TARGET_NAME}"},
                        "storageSecretName": "s3-creds"},
            "schedule": "0 2 * * *",
            "task": {"name": "vault-backup-${TARGET_APP_VERSION}"},
            "retentionPolicy": {"name": "keep-7", "keepLast": 7, "prune": true},
            "backupHistoryLimit": 3,
            "retryConfig": {"maxRetry": 2},
            "runtimeSettings": {"container": {"resources": {}}},
        })
    }

    #[test]
    fn renders_what_stash_makes_with_variables_filled() {
        let r = render("vault-nightly", &spec(), &target()).unwrap();
        assert_eq!(r.repository["metadata"]["name"], "app-vault");
        assert_eq!(r.repository["metadata"]["namespace"], "team-a");
        assert_eq!(
            r.repository["spec"]["backend"]["s3"]["prefix"],
            "vault/team-a/vaultserver/vault"
        );
        assert_eq!(r.repository["metadata"]["ownerReferences"][0]["uid"], "u-1");
        let c = &r.config;
        assert_eq!(c["metadata"]["name"], "app-vault");
        assert_eq!(c["metadata"]["labels"][LABEL_BLUEPRINT], "vault-nightly");
        assert_eq!(c["metadata"]["labels"][LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(
            c["metadata"]["annotations"][TARGET_ANNOTATION],
            "team-a/vault"
        );
        assert_eq!(c["metadata"]["annotations"][HASH_ANNOTATION], r.hash);
        assert_eq!(c["spec"]["schedule"], "0 2 * * *");
        assert_eq!(c["spec"]["task"]["name"], "vault-backup-1.10.3");
        assert_eq!(c["spec"]["repository"], json!({"name": "app-vault"}));
        assert_eq!(c["spec"]["target"]["ref"]["name"], "vault");
        assert!(c["spec"]["target"]["ref"].get("namespace").is_none());
        assert_eq!(c["spec"]["backupHistoryLimit"], 3);
        assert_eq!(c["spec"]["retryConfig"], json!({"maxRetry": 2}));
        // No pod: runtime settings are not carried over.
        assert!(c["spec"].get("runtimeSettings").is_none());
        // Same input, same hash; a changed blueprint, another.
        assert_eq!(render("vault-nightly", &spec(), &target()).unwrap(), r);
        let mut edited = spec();
        edited["schedule"] = json!("0 3 * * *");
        assert_ne!(
            render("vault-nightly", &edited, &target()).unwrap().hash,
            r.hash
        );
    }

    #[test]
    fn annotations_override_the_schedule_and_add_task_params_and_namespaces_move_objects() {
        let mut t = target();
        t.annotations
            .insert(SCHEDULE_ANNOTATION.into(), "*/30 * * * *".into());
        t.annotations
            .insert(format!("{PARAMS_PREFIX}keyPrefix"), "k8s.x".into());
        let mut s = spec();
        s["backupNamespace"] = json!("backups");
        s["repoNamespace"] = json!("repos");
        let r = render("b", &s, &t).unwrap();
        assert_eq!(r.config["spec"]["schedule"], "*/30 * * * *");
        assert_eq!(
            r.config["spec"]["task"]["params"],
            json!([{"name": "keyPrefix", "value": "k8s.x"}])
        );
        assert_eq!(r.config["metadata"]["namespace"], "backups");
        assert_eq!(r.repository["metadata"]["namespace"], "repos");
        assert_eq!(
            r.config["spec"]["repository"],
            json!({"name": "app-vault", "namespace": "repos"})
        );
        assert_eq!(r.config["spec"]["target"]["ref"]["namespace"], "team-a");
        // Owners cannot cross namespaces.
        assert!(r.config["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn bad_blueprints_are_refused_with_the_field() {
        let cases = [
            (
                json!({"prefix": "${TARGET_NAMES}"}),
                "backend",
                "BackupBlueprint b spec.backend.prefix: unknown variable ${TARGET_NAMES}",
            ),
            (json!("${TARGET_NAME"), "schedule", "is never closed"),
            (json!(true), "wipeOut", "sets spec.wipeOut"),
            (
                Value::Null,
                "retentionPolicy",
                "has no spec.retentionPolicy",
            ),
        ];
        for (v, field, want) in cases {
            let mut s = spec();
            s[field] = v;
            let e = render("b", &s, &target()).unwrap_err().reason();
            assert!(e.contains(want), "{field}: {e}");
        }
        let mut t = target();
        t.app_version = None;
        let e = render("b", &spec(), &t).unwrap_err().reason();
        assert!(
            e.contains("${TARGET_APP_VERSION} has no value for AppBinding team-a/vault (it sets no spec.version)"),
            "{e}"
        );
    }

    #[test]
    fn one_blueprint_per_appbinding() {
        let a = |v: &str| BTreeMap::from([(BLUEPRINT_ANNOTATION.to_string(), v.to_string())]);
        assert_eq!(named(&BTreeMap::new()).unwrap(), None);
        assert_eq!(named(&a(" nightly ")).unwrap().as_deref(), Some("nightly"));
        let e = named(&a("daily,weekly")).unwrap_err().reason();
        assert!(e.contains("names 2 blueprints (daily, weekly)"), "{e}");
    }
}
