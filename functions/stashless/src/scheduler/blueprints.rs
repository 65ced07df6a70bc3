//! Auto-backup from BackupBlueprints, each tick before the configurations are read: for
//! every Vault AppBinding annotated `stash.appscode.com/backup-blueprint` (serve rule:
//! another product's AppBinding is Stash's, even with the annotation), create the
//! Repository and BackupConfiguration the blueprint gives it ([`crate::blueprint`]) and
//! keep them in step with the blueprint; when the annotation goes (or the AppBinding), its
//! BackupConfiguration is deleted, as Stash deletes it, and the Repository stays with its
//! snapshots. Only objects stashless made from a blueprint (label `stashless.io/blueprint`)
//! are ever updated or deleted. A blueprint that cannot be applied is reported in the tick
//! and as one Warning Event on the AppBinding (it has no status to write).

use std::collections::{BTreeMap, HashMap, HashSet};

use kube::api::{DeleteParams, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use crate::api::{AppBinding, BackupBlueprint, BackupConfiguration, Repository};
use crate::blueprint::{self, LABEL_BLUEPRINT, Rendered, TARGET_ANNOTATION, Target};
use crate::cluster::{EventType, record_event_once};
use crate::context::NamespaceScope;
use crate::error::{Error, Result, api_code};
use crate::serve::{self, VAULT_BACKUP_TASK, Verdict};

/// What the blueprint step of a tick did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BlueprintReport {
    /// Objects created (`Kind namespace/name`).
    pub created: Vec<String>,
    /// Objects rewritten because their blueprint or AppBinding annotations changed.
    pub updated: Vec<String>,
    /// BackupConfigurations deleted: their AppBinding lost the annotation or is gone.
    pub removed: Vec<String>,
    /// AppBindings (`namespace/name`) whose blueprint could not be applied, and why.
    pub invalid: BTreeMap<String, String>,
}

impl BlueprintReport {
    pub fn is_empty(&self) -> bool {
        *self == BlueprintReport::default()
    }
}

/// Apply the blueprints for the AppBindings in `scope`. Also returns the AppBindings it
/// listed (untyped), so the rest of the tick judges configurations without reading them
/// again ([`crate::serve::Owners::knowing_appbindings`]).
pub async fn apply(
    client: &Client,
    scope: &NamespaceScope,
) -> (BlueprintReport, Vec<DynamicObject>) {
    let mut report = BlueprintReport::default();
    let ab_ar = ApiResource::erase::<AppBinding>(&());
    let mut appbindings = Vec::new();
    let mut listed = true;
    for api in scope.dynamic_apis(client, &ab_ar) {
        match api.list(&ListParams::default()).await {
            Ok(l) => appbindings.extend(l.items),
            Err(e) => {
                tracing::warn!(error = %e, "could not list AppBindings: blueprints not applied this tick");
                listed = false;
            }
        }
    }
    let mut blueprints: HashMap<String, std::result::Result<Value, String>> = HashMap::new();
    // AppBindings (namespace/name) that keep their blueprint's configuration.
    let mut keep: HashSet<String> = HashSet::new();
    let annotated = appbindings.iter().filter(|ab| {
        ab.annotations()
            .contains_key(blueprint::BLUEPRINT_ANNOTATION)
    });
    for ab in annotated {
        let key = format!("{}/{}", ab.namespace().unwrap_or_default(), ab.name_any());
        match one(client, ab, &mut blueprints, &mut report).await {
            Ok(true) => {
                keep.insert(key);
            }
            Ok(false) => {}
            Err(why) => {
                // Kept as it was: a broken edit of the blueprint must not stop backups.
                keep.insert(key.clone());
                tracing::warn!(appbinding = %key, %why, "blueprint not applied");
                let owner = AppBinding {
                    metadata: ab.metadata.clone(),
                    spec: Default::default(),
                };
                record_event_once(client, &owner, EventType::Warning, "BlueprintInvalid", &why)
                    .await;
                report.invalid.insert(key, why);
            }
        }
    }
    if listed {
        remove_unwanted(client, scope, &keep, &mut report).await;
    }
    (report, appbindings)
}

/// Apply the blueprint of one annotated AppBinding: `Ok(true)` when it is ours and its
/// objects are in step, `Ok(false)` when it is another product's (left alone), `Err` with
/// the reason when its blueprint cannot be applied.
async fn one(
    client: &Client,
    ab: &DynamicObject,
    blueprints: &mut HashMap<String, std::result::Result<Value, String>>,
    report: &mut BlueprintReport,
) -> std::result::Result<bool, String> {
    let ns = ab.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", ab.name_any());
    let app_type = serve::appbinding_type_of(ab);
    let app_version = ab
        .data
        .get("spec")
        .and_then(|s| s.get("version"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let annotations = ab.annotations().clone();
    let name = blueprint::named(&annotations).map_err(|e| e.reason())?;
    let Some(name) = name else {
        return Ok(false);
    };
    let fetched = match blueprints.get(&name) {
        Some(b) => b.clone(),
        None => {
            let b = fetch(client, &name).await;
            blueprints.insert(name.clone(), b.clone());
            b
        }
    };
    // Whose AppBinding it is comes before anything else: a KubeDB database with the same
    // annotation is Stash's auto-backup, not ours.
    let vault_task = fetched.as_ref().is_ok_and(|b| {
        b.get("task")
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with(VAULT_BACKUP_TASK))
    });
    let target = serve::Target::AppBinding {
        key: key.clone(),
        type_: app_type.clone(),
    };
    if let Verdict::Others(why) = serve::decide(
        serve::annotation(&ab.metadata),
        None,
        false,
        &target,
        vault_task,
    ) {
        tracing::debug!(appbinding = %key, %why, "blueprint annotation on another product's AppBinding");
        return Ok(false);
    }
    let spec_json = fetched?;
    let rendered = blueprint::render(
        &name,
        &spec_json,
        &Target {
            namespace: ns.clone(),
            name: ab.name_any(),
            uid: ab.uid(),
            app_type,
            app_version,
            annotations,
        },
    )
    .map_err(|e| e.reason())?;
    ensure_all(client, &key, &rendered, report)
        .await
        .map_err(|e| e.reason())?;
    Ok(true)
}

/// A BackupBlueprint's `spec`, or why it cannot be read.
async fn fetch(client: &Client, name: &str) -> std::result::Result<Value, String> {
    let ar = ApiResource::erase::<BackupBlueprint>(&());
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    match api.get(name).await {
        Ok(b) => Ok(b.data.get("spec").cloned().unwrap_or(Value::Null)),
        Err(e) if api_code(&e) == Some(404) => Err(format!(
            "BackupBlueprint {name} (annotation {}) not found",
            blueprint::BLUEPRINT_ANNOTATION
        )),
        Err(e) => Err(Error::kube(format!("reading BackupBlueprint {name}"), e).reason()),
    }
}

async fn ensure_all(
    client: &Client,
    target: &str,
    rendered: &Rendered,
    report: &mut BlueprintReport,
) -> Result<()> {
    let repo_ar = ApiResource::erase::<Repository>(&());
    let cfg_ar = ApiResource::erase::<BackupConfiguration>(&());
    // The Repository first: a configuration never points at one that is not there yet.
    for (ar, obj) in [
        (&repo_ar, &rendered.repository),
        (&cfg_ar, &rendered.config),
    ] {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let shown = format!("{} {ns}/{name}", ar.kind);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
        let wanted: DynamicObject = serde_json::from_value(obj.clone())
            .map_err(|e| Error::invalid(format!("{shown}: {e}")))?;
        match api.get(name).await {
            Err(e) if api_code(&e) == Some(404) => {
                api.create(&PostParams::default(), &wanted)
                    .await
                    .map_err(|e| Error::kube(format!("creating {shown}"), e))?;
                tracing::info!(object = %shown, "created from a BackupBlueprint");
                report.created.push(shown);
            }
            Err(e) => return Err(Error::kube(format!("reading {shown}"), e)),
            Ok(existing) => {
                let ours = existing.labels().contains_key(LABEL_BLUEPRINT)
                    && existing
                        .annotations()
                        .get(TARGET_ANNOTATION)
                        .map(String::as_str)
                        == Some(target);
                if !ours {
                    return Err(Error::invalid(format!(
                        "{shown} exists and was not made by stashless from a blueprint for AppBinding {target}: it is left as it is; delete it to let the blueprint make it, or remove the annotation"
                    )));
                }
                if existing.annotations().get(blueprint::HASH_ANNOTATION) == Some(&rendered.hash) {
                    continue;
                }
                let mut replaced = wanted;
                replaced.metadata.resource_version = existing.resource_version();
                api.replace(name, &PostParams::default(), &replaced)
                    .await
                    .map_err(|e| Error::kube(format!("updating {shown}"), e))?;
                tracing::info!(object = %shown, "updated from its BackupBlueprint");
                report.updated.push(shown);
            }
        }
    }
    Ok(())
}

/// Delete the BackupConfigurations made from a blueprint whose AppBinding (in `scope`) no
/// longer asks for one. Their Repositories, and the snapshots in them, stay.
async fn remove_unwanted(
    client: &Client,
    scope: &NamespaceScope,
    keep: &HashSet<String>,
    report: &mut BlueprintReport,
) {
    let selector = ListParams::default().labels(LABEL_BLUEPRINT);
    for api in scope.apis::<BackupConfiguration>(client) {
        let configs = match api.list(&selector).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "could not list blueprint configurations");
                continue;
            }
        };
        for config in configs {
            let Some(target) = config.annotations().get(TARGET_ANNOTATION).cloned() else {
                continue;
            };
            let target_ns = target.split('/').next().unwrap_or_default();
            if keep.contains(&target) || !scope.serves(target_ns) {
                continue;
            }
            let ns = config.namespace().unwrap_or_default();
            let shown = format!("BackupConfiguration {ns}/{}", config.name_any());
            let api: Api<BackupConfiguration> = Api::namespaced(client.clone(), &ns);
            match api
                .delete(&config.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(object = %shown, appbinding = %target, "its AppBinding no longer names a blueprint: deleted");
                    report.removed.push(shown);
                }
                Err(e) if api_code(&e) == Some(404) => {}
                Err(e) => tracing::warn!(object = %shown, error = %e, "could not delete"),
            }
        }
    }
}
