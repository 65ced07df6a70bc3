//! The example manifests (`infra/manifests/example/`), and applying Stash-shaped YAML to
//! an API server. The demo, the README and a test all use the same files.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use serde_json::Value;

use crate::error::{Error, Result};

pub const VAULT: &str = include_str!("../../../infra/manifests/example/vault.yaml");
pub const REPOSITORY: &str = include_str!("../../../infra/manifests/example/repository.yaml");
pub const BACKUP_CONFIGURATION: &str =
    include_str!("../../../infra/manifests/example/backupconfiguration.yaml");
pub const RESTORE_SESSION: &str =
    include_str!("../../../infra/manifests/example/restoresession.yaml");

/// Split multi-document YAML into JSON objects (empty documents skipped).
pub fn parse(yaml: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
        .map_err(|e| Error::invalid_because("manifest YAML", e))?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

/// The plural resource name of the kinds stashless deals with.
pub fn plural(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Secret" => "secrets",
        "Namespace" => "namespaces",
        "AppBinding" => "appbindings",
        "Repository" => "repositories",
        "BackupConfiguration" => "backupconfigurations",
        "BackupSession" => "backupsessions",
        "RestoreSession" => "restoresessions",
        _ => return None,
    })
}

/// Create one object (JSON with apiVersion, kind, metadata.namespace).
pub async fn create(client: &Client, obj: &Value) -> Result<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = plural(kind).ok_or_else(|| {
        Error::invalid(format!(
            "manifest kind {kind:?} is not one stashless applies"
        ))
    })?;
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let api: Api<DynamicObject> = if kind == "Namespace" {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    };
    let dynamic: DynamicObject = serde_json::from_value(obj.clone())
        .map_err(|e| Error::invalid_because(format!("manifest {kind}"), e))?;
    api.create(&PostParams::default(), &dynamic)
        .await
        .map_err(|e| {
            Error::kube(
                format!(
                    "creating {kind} {ns}/{}",
                    obj["metadata"]["name"].as_str().unwrap_or("?")
                ),
                e,
            )
        })
}
