//! The example manifests in `infra/manifests/example/` (used by the demo and the README)
//! parse as our types and fit Stash's CRD schemas, so they cannot rot.

use serde_json::Value;
use stashless::api::{AppBinding, BackupConfiguration, Repository, RestoreSession};
use stashless::schedule::Schedule;
use stashless::{crds, manifests};

fn all() -> Vec<Value> {
    [
        manifests::VAULT,
        manifests::REPOSITORY,
        manifests::BACKUP_CONFIGURATION,
        manifests::RESTORE_SESSION,
    ]
    .iter()
    .flat_map(|y| manifests::parse(y).unwrap())
    .collect()
}

#[test]
fn example_manifests_fit_stash_crds_and_our_types() {
    let docs = all();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "Secret",
            "AppBinding",
            "Secret",
            "Repository",
            "BackupConfiguration",
            "RestoreSession"
        ]
    );
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        let crd = match kind {
            "AppBinding" => crds::APP_BINDINGS,
            "Repository" => crds::REPOSITORIES,
            "BackupConfiguration" => crds::BACKUP_CONFIGURATIONS,
            "RestoreSession" => crds::RESTORE_SESSIONS,
            _ => continue,
        };
        let mut body = d.clone();
        body.as_object_mut().unwrap().remove("metadata");
        let v = crds::violations(&crds::schema_of(crd), &body);
        assert!(v.is_empty(), "{kind}: {v:?}");
        assert!(manifests::plural(kind).is_some());
    }
    let by_kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap().clone();
    let ab: AppBinding = serde_json::from_value(by_kind("AppBinding")).unwrap();
    assert!(ab.spec.parameters.unwrap()["backupTokenSecretRef"]["name"].is_string());
    let repo: Repository = serde_json::from_value(by_kind("Repository")).unwrap();
    assert!(repo.spec.backend.s3.is_some());
    let bc: BackupConfiguration = serde_json::from_value(by_kind("BackupConfiguration")).unwrap();
    bc.spec.schedule.unwrap().parse::<Schedule>().unwrap();
    let rs: RestoreSession = serde_json::from_value(by_kind("RestoreSession")).unwrap();
    assert_eq!(rs.spec.repository.unwrap().name, "vault-snapshots");
}
