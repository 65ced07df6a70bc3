//! `stashless demo`: the whole flow on this machine, no cluster and no AWS account.
//!
//! Starts a local OpenBao, an embedded S3 store and the in-memory Kubernetes API; applies
//! the example manifests; runs the real scheduler tick, the in-process watch routing and
//! the real backup and restore logic; changes a secret, restores, and checks it came back.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kube::Api;
use memkube::{MemKube, ResourceKind};
use serde_json::{Value, json};
use stashless::api::{
    BackupConfiguration, BackupSession, RestoreSession, SessionPhase, parse_go_duration,
};
use stashless::cluster::ClusterSource;
use stashless::context::{Context, EscrowKey, Settings};
use stashless::events::Tick;
use stashless::manifests;
use stashless::schedule::Schedule;
use stashless::scheduler::{SchedulerSettings, tick};

use crate::embedded_s3::EmbeddedS3;
use crate::local_bao::{self, LocalBao};
use crate::progress::Progress;

/// One row of the summary.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    pub step: &'static str,
    pub phase: String,
    pub snapshot: String,
    pub size_bytes: u64,
    /// Moving the snapshot alone (Vault to S3, or S3 to Vault), as Go prints durations.
    pub transfer: String,
    /// The whole session, claim to final status (a restore's includes Vault's keyring
    /// reload after the snapshot is applied).
    pub duration: String,
    /// `size_bytes` over `transfer`.
    pub throughput_mib_s: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub verified: bool,
    pub secret_path: String,
    pub rows: Vec<Row>,
}

fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// Every Stash kind the functions use, registered on the in-memory API server.
fn stash_kinds(kube: &MemKube) {
    for (group, version, kind, plural, status, namespaced) in stashless::crds::KINDS {
        let mut k = ResourceKind::new(group, version, kind, plural)
            .with_schema(stashless::crds::stash_schema(plural));
        if !namespaced {
            k = k.cluster_scoped();
        }
        kube.register(if status { k.with_status() } else { k });
    }
}

pub async fn run(data_dir: PathBuf, secrets: usize) -> Result<Summary> {
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("clearing {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir)?;
    let data_dir = data_dir.canonicalize()?;

    step("starting a local OpenBao (raft storage, loopback)");
    let bao_bin = local_bao::find_or_install().await?;
    let bao = LocalBao::start(&bao_bin, &data_dir.join("openbao")).await?;
    eprintln!("    OpenBao at {}", bao.addr);

    // The example manifests, with this machine's addresses filled in.
    let mut docs = Vec::new();
    for yaml in [
        manifests::VAULT,
        manifests::REPOSITORY,
        manifests::BACKUP_CONFIGURATION,
    ] {
        docs.extend(manifests::parse(yaml)?);
    }
    let find = |docs: &mut Vec<Value>, kind: &str, name: &str| -> Option<usize> {
        docs.iter()
            .position(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    };
    let secret_i =
        find(&mut docs, "Secret", "s3-credentials").context("example s3-credentials Secret")?;
    let ak = docs[secret_i]["stringData"]["AWS_ACCESS_KEY_ID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let sk = docs[secret_i]["stringData"]["AWS_SECRET_ACCESS_KEY"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let repo_i = find(&mut docs, "Repository", "vault-snapshots").context("example Repository")?;
    let bucket = docs[repo_i]["spec"]["backend"]["s3"]["bucket"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    step("starting the embedded S3 store (s3s-fs, SigV4 checked)");
    let s3 = EmbeddedS3::start(&data_dir.join("s3"), &ak, &sk, &[&bucket]).await?;
    eprintln!(
        "    S3 at {} (bucket {bucket}, files under {})",
        s3.endpoint,
        data_dir.join("s3").display()
    );

    step("starting the in-memory Kubernetes API and applying infra/manifests/example/");
    let kube = MemKube::new();
    stash_kinds(&kube);
    let server = kube.serve().await?;
    let client = ClusterSource::Url {
        url: server.url(),
        token: None,
        ca_file: None,
    }
    .client()
    .await?;
    docs[repo_i]["spec"]["backend"]["s3"]["endpoint"] = json!(s3.endpoint);
    let ab_i = find(&mut docs, "AppBinding", "vault").context("example AppBinding")?;
    docs[ab_i]["spec"]["clientConfig"]["url"] = json!(bao.addr);
    let tok_i = find(&mut docs, "Secret", "vault-backup-token").context("example token Secret")?;
    docs[tok_i]["stringData"]["token"] = json!(bao.root_token);
    // The unseal key in a Secret the AppBinding names, as a Vault installed without
    // KubeVault keeps it: each backup escrows it (sealed with the demo's local key).
    docs[ab_i]["metadata"]["annotations"][stashless::keys::ANNOTATION_KEYS_SECRET] =
        json!("vault-unseal-keys");
    docs.push(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vault-unseal-keys", "namespace": docs[ab_i]["metadata"]["namespace"]},
        "stringData": {"unseal-key-0": bao.unseal_key, "root-token": bao.root_token},
    }));
    for d in &docs {
        manifests::create(&client, d).await?;
        eprintln!(
            "    created {} {}/{}",
            d["kind"].as_str().unwrap_or(""),
            d["metadata"]["namespace"].as_str().unwrap_or(""),
            d["metadata"]["name"].as_str().unwrap_or("")
        );
    }
    let ns = docs[repo_i]["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();

    let secret_path = "demo/app";
    bao.kv_put(secret_path, json!({"password": "before-backup"}))
        .await?;
    for i in 0..secrets {
        bao.kv_put(
            &format!("demo/seed-{i}"),
            json!({"value": format!("{i:0>64}")}),
        )
        .await?;
    }
    eprintln!("    wrote secret/{secret_path} = before-backup and {secrets} more secrets");

    let progress = Progress::new();
    // Escrows are sealed with a key that lives in this process only, named plainly as not
    // for production (on AWS: the Terraform module's KMS key).
    let mut local_key = [0u8; 32];
    getrandom_fill(&mut local_key)?;
    let settings = Settings {
        progress: Some(progress.callback()),
        escrow_key: Some(EscrowKey::LocalDemo(local_key)),
        ..Settings::from_env()
    };
    let ctx = Context::new(client.clone(), settings);
    let router = tokio::spawn(stashless::dispatch::route_in_process(ctx.clone()));

    // The scheduler tick: fast-forward to the configuration's next slot.
    let configs: Api<BackupConfiguration> = Api::namespaced(client.clone(), &ns);
    let config = configs.get("vault-backup").await?;
    let schedule: Schedule = config.spec.schedule.clone().unwrap_or_default().parse()?;
    let slot = schedule
        .next_slot(chrono::Utc::now())
        .context("the schedule has no next slot")?;
    step(&format!(
        "scheduler tick at {slot} (the next slot of {:?}, fast-forwarded)",
        schedule.as_str()
    ));
    let report = tick(
        &client,
        &Tick {
            time: Some(slot + chrono::Duration::seconds(5)),
        },
        &SchedulerSettings::default(),
    )
    .await?;
    let created = report
        .created
        .first()
        .context("the tick created no BackupSession")?
        .clone();
    let session_name = created.rsplit('/').next().unwrap_or_default().to_string();
    eprintln!("    created BackupSession {created}; the watch routes it to the backup function");

    progress.begin("backing up");
    let sessions: Api<BackupSession> = Api::namespaced(client.clone(), &ns);
    let done = tokio::time::timeout(
        Duration::from_secs(300),
        stashless::dispatch::follow(&sessions, &session_name),
    )
    .await
    .context("the backup did not finish within 5 minutes")??;
    progress.finish();
    let st = done.status.clone().unwrap_or_default();
    let backup_row = backup_row(&done);
    if st.phase != Some(SessionPhase::Succeeded) {
        let why = st
            .targets
            .first()
            .and_then(|t| t.stats.first())
            .and_then(|s| s.error.clone())
            .unwrap_or_default();
        bail!("BackupSession {session_name} ended {:?}: {why}", st.phase);
    }
    eprintln!(
        "    BackupSession {session_name}: Succeeded, snapshot {} ({})",
        backup_row.snapshot,
        human(backup_row.size_bytes)
    );

    step("changing the secret after the backup");
    bao.kv_put(secret_path, json!({"password": "changed-after-backup"}))
        .await?;
    eprintln!("    secret/{secret_path} = changed-after-backup");

    step("creating the example RestoreSession (latest snapshot)");
    for d in manifests::parse(manifests::RESTORE_SESSION)? {
        manifests::create(&client, &d).await?;
    }
    progress.begin("restoring");
    let restores: Api<RestoreSession> = Api::namespaced(client.clone(), &ns);
    let rs = tokio::time::timeout(
        Duration::from_secs(300),
        stashless::dispatch::follow(&restores, "vault-restore"),
    )
    .await
    .context("the restore did not finish within 5 minutes")??;
    progress.finish();
    router.abort();
    let rst = rs.status.clone().unwrap_or_default();
    let restore_row = restore_row(&rs, &backup_row);
    if rst.phase != Some(SessionPhase::Succeeded) {
        let why = rst
            .stats
            .first()
            .and_then(|s| s.error.clone())
            .unwrap_or_default();
        bail!("RestoreSession vault-restore ended {:?}: {why}", rst.phase);
    }

    let value = bao
        .kv_get(secret_path)
        .await?
        .and_then(|v| v["password"].as_str().map(String::from));
    let verified = value.as_deref() == Some("before-backup");
    eprintln!(
        "    secret/{secret_path} = {} {}",
        value.as_deref().unwrap_or("<missing>"),
        if verified {
            "(the backed-up value is back)"
        } else {
            "(NOT the backed-up value)"
        }
    );
    ensure!(
        verified,
        "the restored secret does not have its backed-up value"
    );
    drop(s3);
    drop(server);
    Ok(Summary {
        verified,
        secret_path: format!("secret/{secret_path}"),
        rows: vec![backup_row, restore_row],
    })
}

fn human(bytes: u64) -> String {
    stashless::api::human_size(bytes)
}

fn secs(d: Option<&str>) -> f64 {
    d.and_then(parse_go_duration)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn backup_row(s: &BackupSession) -> Row {
    let st = s.status.clone().unwrap_or_default();
    let stats = st
        .targets
        .first()
        .and_then(|t| t.stats.first())
        .cloned()
        .unwrap_or_default();
    let snap = stats.snapshots.first().cloned().unwrap_or_default();
    let transfer = secs(snap.processing_time.as_deref());
    let size = snap.total_size.as_deref().map(parse_human).unwrap_or(0);
    Row {
        step: "backup",
        phase: st.phase.map(|p| p.as_str().to_string()).unwrap_or_default(),
        snapshot: snap.name.unwrap_or_default(),
        size_bytes: size,
        transfer: snap.processing_time.unwrap_or_default(),
        duration: st.session_duration.unwrap_or_default(),
        throughput_mib_s: if transfer > 0.0 {
            size as f64 / 1048576.0 / transfer
        } else {
            0.0
        },
    }
}

fn restore_row(rs: &RestoreSession, backup: &Row) -> Row {
    let st = rs.status.clone().unwrap_or_default();
    let host = st.stats.first().and_then(|s| s.duration.clone());
    let transfer = secs(host.as_deref());
    Row {
        step: "restore",
        phase: st.phase.map(|p| p.as_str().to_string()).unwrap_or_default(),
        snapshot: backup.snapshot.clone(),
        size_bytes: backup.size_bytes,
        transfer: host.unwrap_or_default(),
        duration: st.session_duration.unwrap_or_default(),
        throughput_mib_s: if transfer > 0.0 {
            backup.size_bytes as f64 / 1048576.0 / transfer
        } else {
            0.0
        },
    }
}

/// Back from `human_size` ("1.234 MiB") to bytes, for the table.
fn parse_human(s: &str) -> u64 {
    let mut it = s.split_whitespace();
    let n: f64 = it.next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
    let mult = match it.next().unwrap_or("B") {
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        "GiB" => 1073741824.0,
        _ => 1.0,
    };
    (n * mult) as u64
}

pub fn print_table(s: &Summary) {
    println!(
        "{:<8} {:<10} {:<34} {:>12} {:>10} {:>15} {:>10}",
        "STEP", "PHASE", "SNAPSHOT", "SIZE", "TRANSFER", "RATE", "SESSION"
    );
    for r in &s.rows {
        println!(
            "{:<8} {:<10} {:<34} {:>12} {:>10} {:>9.1} MiB/s {:>10}",
            r.step,
            r.phase,
            r.snapshot,
            human(r.size_bytes),
            r.transfer,
            r.throughput_mib_s,
            r.duration
        );
    }
    println!(
        "TRANSFER moves the snapshot (Vault to S3, S3 to Vault); RATE is SIZE over TRANSFER; \
         SESSION is claim to final status (a restore's includes Vault's keyring reload)"
    );
    println!(
        "round trip {}: {} has its backed-up value after the restore",
        if s.verified {
            "VERIFIED"
        } else {
            "NOT VERIFIED"
        },
        s.secret_path
    );
}

/// Random bytes from the kernel.
fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)?;
    Ok(())
}
