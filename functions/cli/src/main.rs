//! `stashless`: the local demo, and day-2 operations on Stash objects in a real cluster.

mod demo;
mod embedded_s3;
mod local_bao;
mod ops;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "stashless",
    version,
    about = "Stash-compatible Vault/OpenBao backups, without the operator"
)]
struct Cli {
    /// Output format for commands that print data.
    #[arg(long, short, global = true, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Back up and restore a local OpenBao end to end: embedded S3 store, in-memory
    /// Kubernetes API, the example manifests, the real scheduler, backup and restore.
    Demo {
        /// Where the demo keeps OpenBao's data and the S3 store's files (wiped first).
        #[arg(long, default_value = ".stashless-demo")]
        data_dir: PathBuf,
        /// How many extra secrets to write before the backup.
        #[arg(long, default_value_t = 50)]
        secrets: usize,
    },
    /// Print the CRDs the functions expect: Stash's own, byte for byte (for clusters that
    /// already run Stash), or with --generated the ones derived from stashless's types.
    Crds {
        /// Print the CRDs generated from stashless's Rust types instead of Stash's.
        #[arg(long)]
        generated: bool,
    },
    /// Back up now: create a BackupSession for a BackupConfiguration and follow it.
    Backup {
        #[command(subcommand)]
        what: BackupCmd,
    },
    /// Snapshots in a Repository, from the manifests in S3.
    Snapshots {
        #[command(subcommand)]
        what: SnapshotsCmd,
    },
    /// Download a snapshot and verify it (gzip+tar, SHA256SUMS, the manifest's sha256).
    Verify {
        /// The Repository.
        repository: String,
        /// Snapshot name (`<namespace>/<session>`); default: the newest.
        snapshot: Option<String>,
        #[arg(long, short, default_value = "default")]
        namespace: String,
    },
    /// Restore: create a RestoreSession and follow it.
    Restore {
        /// The Repository to restore from.
        #[arg(long)]
        repository: String,
        /// The AppBinding of the Vault to restore into.
        #[arg(long)]
        target: String,
        /// Snapshot name; default: the newest of the target.
        #[arg(long)]
        snapshot: Option<String>,
        /// Use snapshot-force (a cluster with other unseal keys).
        #[arg(long)]
        force: bool,
        /// RestoreSession name; default: generated.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, short, default_value = "default")]
        namespace: String,
    },
}

#[derive(Subcommand)]
enum BackupCmd {
    /// Create a BackupSession for this BackupConfiguration now and follow it.
    Now {
        config: String,
        #[arg(long, short, default_value = "default")]
        namespace: String,
    },
}

#[derive(Subcommand)]
enum SnapshotsCmd {
    /// List the snapshots of a Repository.
    List {
        repository: String,
        #[arg(long, short, default_value = "default")]
        namespace: String,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = cli.output;
    match cli.command {
        Command::Demo { data_dir, secrets } => {
            let summary = demo::run(data_dir, secrets).await?;
            match out {
                Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
                Output::Table => demo::print_table(&summary),
            }
            Ok(())
        }
        Command::Crds { generated: false } => {
            println!("{}", stashless::crds::ALL.join("---\n"));
            Ok(())
        }
        Command::Crds { generated: true } => {
            let docs: Vec<String> = stashless::crds::generated()
                .iter()
                .map(|(_, crd)| stashless::crds::generated_yaml(crd))
                .collect();
            print!("{}", docs.join("---\n"));
            Ok(())
        }
        Command::Backup {
            what: BackupCmd::Now { config, namespace },
        } => ops::backup_now(&namespace, &config, out).await,
        Command::Snapshots {
            what:
                SnapshotsCmd::List {
                    repository,
                    namespace,
                },
        } => ops::snapshots_list(&namespace, &repository, out).await,
        Command::Verify {
            repository,
            snapshot,
            namespace,
        } => ops::verify(&namespace, &repository, snapshot.as_deref(), out).await,
        Command::Restore {
            repository,
            target,
            snapshot,
            force,
            name,
            namespace,
        } => {
            ops::restore(
                ops::RestoreArgs {
                    ns: &namespace,
                    name: name.as_deref(),
                    repository: &repository,
                    target: &target,
                    snapshot: snapshot.as_deref(),
                    force,
                },
                out,
            )
            .await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    use std::io::IsTerminal;
    let filter = stashless::log_filter(std::env::var("RUST_LOG").ok().as_deref(), None, "warn");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    // Ctrl-C drops the running command: children are killed on drop, servers stop.
    tokio::select! {
        r = run(cli) => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopped what the command started");
            ExitCode::from(130)
        }
    }
}
