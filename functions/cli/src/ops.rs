//! Day-2 operations against a real cluster and bucket, with the same configuration
//! resolution as the functions (kubeconfig, in-cluster, or STASHLESS_KUBE_URL).

use anyhow::{Context as _, Result, bail};
use chrono::Utc;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use stashless::api::{
    BackupConfiguration, BackupSession, ObjectRef, RestoreSession, SessionPhase, human_size,
};
use stashless::archive::SnapshotVerifier;
use stashless::repository::{Manifest, Store};
use stashless::{dispatch, resolve, restore, scheduler};

use crate::Output;

pub async fn client() -> Result<Client> {
    Ok(stashless::cluster::ClusterSource::from_env()
        .client()
        .await?)
}

async fn open_repository(client: &Client, ns: &str, name: &str) -> Result<Store> {
    let r = resolve::repository(
        client,
        ns,
        &ObjectRef {
            name: name.into(),
            namespace: None,
        },
        Default::default(),
    )
    .await?;
    Ok(Store::open(r.location, r.credentials, r.ca_pem, r.tuning).await?)
}

pub async fn snapshots_list(ns: &str, repository: &str, out: Output) -> Result<()> {
    let client = client().await?;
    let store = open_repository(&client, ns, repository).await?;
    let manifests = store.list_manifests().await?;
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&manifests)?),
        Output::Table => {
            println!(
                "{:<44} {:<20} {:>12} {:>10} {:<24}",
                "SNAPSHOT", "TIME", "SIZE", "RAFT INDEX", "CONFIGURATION"
            );
            for m in &manifests {
                println!(
                    "{:<44} {:<20} {:>12} {:>10} {:<24}",
                    m.name,
                    m.created_at.format("%Y-%m-%d %H:%M:%S"),
                    human_size(m.size),
                    m.raft.index,
                    format!("{}/{}", m.invoker.namespace, m.invoker.name)
                );
            }
            if manifests.is_empty() {
                println!("(no snapshots in Repository {ns}/{repository})");
            }
        }
    }
    Ok(())
}

pub async fn verify(ns: &str, repository: &str, snapshot: Option<&str>, out: Output) -> Result<()> {
    let client = client().await?;
    let store = open_repository(&client, ns, repository).await?;
    let manifests = store.list_manifests().await?;
    let m: Manifest = restore::pick_snapshot(&manifests, snapshot, None)?.clone();
    let mut body = store.open_snapshot(&m).await?;
    let mut verifier = SnapshotVerifier::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("reading {} from S3", m.key))?;
        verifier
            .update(&chunk)
            .with_context(|| format!("snapshot {} is damaged", m.name))?;
    }
    let info = verifier
        .finish()
        .with_context(|| format!("snapshot {} is damaged", m.name))?;
    if info.sha256 != m.sha256 {
        bail!(
            "snapshot {} does not match its manifest: sha256 {} in S3, {} recorded at backup",
            m.name,
            info.sha256,
            m.sha256
        );
    }
    match out {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"snapshot": m.name, "verified": true, "info": info})
            )?
        ),
        Output::Table => {
            println!(
                "snapshot {}: VERIFIED ({}; sha256 {})",
                m.name,
                human_size(info.size),
                info.sha256
            );
            println!(
                "  raft index {} term {}, state {}",
                info.meta.index,
                info.meta.term,
                human_size(info.state_size)
            );
            for f in &info.files {
                println!(
                    "  {:<20} {:>12}  sha256 {}",
                    f.name,
                    human_size(f.size),
                    f.sha256
                );
            }
        }
    }
    Ok(())
}

pub async fn backup_now(ns: &str, config: &str, out: Output) -> Result<()> {
    let client = client().await?;
    let configs: Api<BackupConfiguration> = Api::namespaced(client.clone(), ns);
    let cfg = configs
        .get_opt(config)
        .await?
        .with_context(|| format!("BackupConfiguration {ns}/{config} not found"))?;
    let session = scheduler::new_session(&cfg, Utc::now());
    let api: Api<BackupSession> = Api::namespaced(client.clone(), ns);
    let created = api.create(&PostParams::default(), &session).await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    eprintln!("created BackupSession {ns}/{name}; waiting for it to finish…");
    let done = dispatch::follow(&api, &name).await?;
    report(
        &done.status.clone().unwrap_or_default().phase,
        &serde_json::to_value(&done.status)?,
        out,
    )
}

pub struct RestoreArgs<'a> {
    pub ns: &'a str,
    pub name: Option<&'a str>,
    pub repository: &'a str,
    pub target: &'a str,
    pub snapshot: Option<&'a str>,
    pub force: bool,
}

pub async fn restore(a: RestoreArgs<'_>, out: Output) -> Result<()> {
    let client = client().await?;
    let mut spec = json!({
        "repository": {"name": a.repository},
        "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": a.target}},
    });
    if let Some(s) = a.snapshot {
        spec["target"]["rules"] = json!([{"snapshots": [s]}]);
    }
    if a.force {
        spec["task"] = json!({"params": [{"name": "force", "value": "true"}]});
    }
    let mut meta = json!({"namespace": a.ns});
    match a.name {
        Some(n) => meta["name"] = json!(n),
        None => meta["generateName"] = json!(format!("{}-restore-", a.target)),
    }
    let rs: RestoreSession = serde_json::from_value(json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession", "metadata": meta, "spec": spec,
    }))?;
    let api: Api<RestoreSession> = Api::namespaced(client.clone(), a.ns);
    let created = api.create(&PostParams::default(), &rs).await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    eprintln!(
        "created RestoreSession {}/{name}; waiting for it to finish…",
        a.ns
    );
    let done = dispatch::follow(&api, &name).await?;
    report(
        &done.status.clone().unwrap_or_default().phase,
        &serde_json::to_value(&done.status)?,
        out,
    )
}

fn report(phase: &Option<SessionPhase>, status: &serde_json::Value, out: Output) -> Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(status)?),
        Output::Table => println!("phase: {}", phase.map(|p| p.as_str()).unwrap_or("?")),
    }
    let errors: Vec<String> = status
        .pointer("/targets/0/stats/0/error")
        .or_else(|| status.pointer("/stats/0/error"))
        .and_then(|e| e.as_str())
        .map(|e| vec![e.to_string()])
        .unwrap_or_default();
    if *phase != Some(SessionPhase::Succeeded) {
        bail!(
            "the session ended {}: {}",
            phase.map(|p| p.as_str()).unwrap_or("?"),
            errors.join("; ")
        );
    }
    Ok(())
}
