//! `infra/crds/generated/` holds exactly the CRDs generated from the Rust types, so the
//! files the test suite installs into a real kube-apiserver (and users apply) cannot drift
//! from the code. `STASHLESS_BLESS=1 cargo test -p stashless --test generated_crds`
//! rewrites them after a type change.

use std::path::PathBuf;

use stashless::crds;

#[test]
fn generated_crd_files_match_the_rust_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../infra/crds/generated");
    let bless = std::env::var("STASHLESS_BLESS").is_ok_and(|v| v == "1");
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut stale = Vec::new();
    let generated = crds::generated();
    assert_eq!(generated.len(), 6);
    for (file, crd) in &generated {
        let want = crds::generated_yaml(crd);
        let path = dir.join(file);
        if bless {
            std::fs::write(&path, &want).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        on_disk,
        generated.len(),
        "unexpected files in {}",
        dir.display()
    );
    assert!(
        stale.is_empty(),
        "out of date (run with STASHLESS_BLESS=1 to rewrite): {stale:?}"
    );
}

/// The generated set is served under the same names as Stash's, so either can be installed.
#[test]
fn generated_crds_have_stashs_names_and_versions() {
    for ((_, crd), stash_yaml) in crds::generated().iter().zip(crds::ALL) {
        let stash: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(stash_yaml).unwrap();
        assert_eq!(crd.metadata.name, stash.metadata.name);
        assert_eq!(crd.spec.group, stash.spec.group);
        assert_eq!(crd.spec.names.plural, stash.spec.names.plural);
        assert_eq!(crd.spec.scope, stash.spec.scope);
        let storage = |c: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
            c.spec.versions.iter().find(|v| v.storage).map(|v| v.name.clone())
        };
        assert_eq!(storage(crd), storage(&stash), "{:?}", crd.metadata.name);
    }
}
