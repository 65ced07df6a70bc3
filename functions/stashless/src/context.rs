//! What every function invocation starts from: process-wide [`Settings`], the clients in a
//! [`Context`] built once per process, the namespace scope, and opening a session's
//! Repository as a store and its AppBinding as a logged-in Vault client.

use std::sync::Arc;
use std::time::Duration;

use kube::{Api, Client, Resource};

use crate::api::{AppBinding, ObjectRef, Repository, TargetRef};
use crate::error::{Error, Result};
use crate::repository::{Store, Tuning};
use crate::resolve;
use crate::vault::Vault;

/// Called with the number of snapshot bytes moved so far (for progress bars).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// The namespaces stashless serves (`STASHLESS_NAMESPACES`, comma separated); empty: all.
/// The scheduler, the sweep, the bridge, backup and restore all read it here, and leave
/// objects elsewhere untouched: the functions' identity may reach further than the
/// namespaces a deployment is scoped to, and an event can name any namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceScope(Vec<String>);

impl NamespaceScope {
    /// Every namespace.
    pub fn all() -> Self {
        NamespaceScope(Vec::new())
    }

    /// Only these (an empty list means all).
    pub fn only<S: Into<String>>(namespaces: impl IntoIterator<Item = S>) -> Self {
        namespaces.into_iter().map(Into::into).collect()
    }

    /// A comma-separated list; blanks and surrounding spaces ignored, duplicates once.
    pub fn parse(list: &str) -> Self {
        list.split(',').collect()
    }

    pub fn from_env() -> Self {
        Self::parse(&std::env::var("STASHLESS_NAMESPACES").unwrap_or_default())
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    pub fn serves(&self, namespace: &str) -> bool {
        self.is_all() || self.0.iter().any(|n| n == namespace)
    }

    /// Why a session in `namespace` is not ours to run, when the scope leaves it out.
    pub fn refuse(&self, namespace: &str) -> Option<String> {
        (!self.serves(namespace)).then(|| {
            format!(
                "namespace {namespace} is not one this function serves (STASHLESS_NAMESPACES: {})",
                self.0.join(",")
            )
        })
    }

    /// One API handle per served namespace, or one over all namespaces.
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        if self.is_all() {
            vec![Api::all(client.clone())]
        } else {
            self.0
                .iter()
                .map(|n| Api::namespaced(client.clone(), n))
                .collect()
        }
    }
}

impl NamespaceScope {
    /// As [`Self::apis`], for objects read untyped (`ar` says which kind).
    pub fn dynamic_apis(
        &self,
        client: &Client,
        ar: &kube::core::ApiResource,
    ) -> Vec<Api<kube::core::DynamicObject>> {
        if self.is_all() {
            vec![Api::all_with(client.clone(), ar)]
        } else {
            self.0
                .iter()
                .map(|n| Api::namespaced_with(client.clone(), n, ar))
                .collect()
        }
    }
}

impl<S: Into<String>> FromIterator<S> for NamespaceScope {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut names: Vec<String> = Vec::new();
        for n in iter {
            let n = n.into().trim().to_string();
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        }
        NamespaceScope(names)
    }
}

/// Process-wide settings, read once.
#[derive(Clone)]
pub struct Settings {
    pub tuning: Tuning,
    /// Pushgateway base URL, when metrics should be pushed.
    pub pushgateway: Option<String>,
    /// Session time limit when the BackupConfiguration sets no `timeOut`.
    pub default_timeout: Duration,
    /// How long before the Lambda deadline to stop, to leave time to abort and write status.
    pub deadline_margin: Duration,
    pub progress: Option<Progress>,
    /// Namespaces this function serves; a session elsewhere is left untouched, as the
    /// scheduler and sweep leave it.
    pub namespaces: NamespaceScope,
    /// The key unseal-key escrows are sealed with (`STASHLESS_ESCROW_KMS_KEY_ID`); None:
    /// backups escrow nothing and say so.
    pub escrow_key: Option<EscrowKey>,
    /// AWS SDK configuration for KMS and SSM; loaded from the environment (the function's
    /// role, `AWS_ENDPOINT_URL`) on first use when None.
    pub aws: Option<aws_config::SdkConfig>,
    /// How long retention keeps the snapshot a restore takes of its target first.
    pub pre_restore_keep: Duration,
}

/// What seals escrows.
#[derive(Clone, PartialEq)]
pub enum EscrowKey {
    /// A KMS key id, ARN or alias.
    Kms(String),
    /// A key held by this process only: the local demo's. Never for production.
    LocalDemo([u8; 32]),
}

impl std::fmt::Debug for EscrowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EscrowKey::Kms(id) => write!(f, "Kms({id})"),
            EscrowKey::LocalDemo(_) => write!(f, "{}", crate::keys::LOCAL_DEMO_KEY_ID),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tuning: Tuning::default(),
            pushgateway: None,
            default_timeout: Duration::from_secs(14 * 60),
            deadline_margin: Duration::from_secs(20),
            progress: None,
            namespaces: NamespaceScope::all(),
            escrow_key: None,
            aws: None,
            pre_restore_keep: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Settings {
    /// From the function's environment: `STASHLESS_PART_SIZE_MIB`, `STASHLESS_PARTS_IN_FLIGHT`,
    /// `STASHLESS_PUSHGATEWAY_URL` (or Stash's `PROMETHEUS_PUSHGATEWAY_URL`),
    /// `STASHLESS_NAMESPACES`, `STASHLESS_ESCROW_KMS_KEY_ID`,
    /// `STASHLESS_PRE_RESTORE_KEEP_HOURS` (default 168: a week).
    pub fn from_env() -> Settings {
        let mut s = Settings::default();
        if let Some(mib) = env_num("STASHLESS_PART_SIZE_MIB") {
            s.tuning.part_size = (mib.clamp(5, 512) as usize) * 1024 * 1024;
        }
        if let Some(n) = env_num("STASHLESS_PARTS_IN_FLIGHT") {
            s.tuning.parts_in_flight = n.clamp(1, 64) as usize;
        }
        s.pushgateway = std::env::var("STASHLESS_PUSHGATEWAY_URL")
            .or_else(|_| std::env::var("PROMETHEUS_PUSHGATEWAY_URL"))
            .ok()
            .filter(|u| !u.is_empty());
        s.namespaces = NamespaceScope::from_env();
        s.escrow_key = std::env::var("STASHLESS_ESCROW_KMS_KEY_ID")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(|k| EscrowKey::Kms(k.trim().to_string()));
        if let Some(hours) = env_num("STASHLESS_PRE_RESTORE_KEEP_HOURS") {
            s.pre_restore_keep = Duration::from_secs(hours * 3600);
        }
        s
    }
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

type CredentialsProvider = aws_credential_types::provider::SharedCredentialsProvider;

/// Clients built once per process and shared by invocations.
pub struct Context {
    pub kube: Client,
    pub http: reqwest::Client,
    pub settings: Settings,
    /// The process's AWS identity, for Vault IAM logins: loaded on first use from the
    /// default chain (on Lambda, the function's role) unless given.
    aws_credentials: tokio::sync::OnceCell<CredentialsProvider>,
    aws_config: tokio::sync::OnceCell<aws_config::SdkConfig>,
}

/// A session's Repository and target, opened.
pub struct Opened {
    pub repository: Repository,
    pub store: Store,
    pub vault: Vault,
    pub app_binding: AppBinding,
}

impl Context {
    pub fn new(kube: Client, settings: Settings) -> Arc<Context> {
        Self::build(kube, settings, None)
    }

    /// Like [`Context::new`] with explicit AWS credentials (tests, the CLI).
    pub fn with_aws_credentials(
        kube: Client,
        settings: Settings,
        credentials: CredentialsProvider,
    ) -> Arc<Context> {
        Self::build(kube, settings, Some(credentials))
    }

    fn build(
        kube: Client,
        settings: Settings,
        credentials: Option<CredentialsProvider>,
    ) -> Arc<Context> {
        crate::install_crypto_provider();
        Arc::new(Context {
            kube,
            http: reqwest::Client::new(),
            settings,
            aws_credentials: tokio::sync::OnceCell::new_with(credentials),
            aws_config: tokio::sync::OnceCell::new(),
        })
    }

    /// The AWS configuration KMS and SSM clients are built from.
    pub async fn aws(&self) -> crate::keys::Aws {
        let config = self
            .aws_config
            .get_or_init(|| async {
                match &self.settings.aws {
                    Some(c) => c.clone(),
                    None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
                }
            })
            .await
            .clone();
        crate::keys::Aws { config }
    }

    /// The AWS configuration when `store` needs one (SSM and KMS; a Secret does not).
    pub async fn aws_for(&self, store: &crate::keys::UnsealerStore) -> Option<crate::keys::Aws> {
        match store {
            crate::keys::UnsealerStore::AwsKmsSsm { .. } => Some(self.aws().await),
            crate::keys::UnsealerStore::KubernetesSecret { .. } => None,
        }
    }

    /// What seals and opens escrows, when a key is configured.
    pub async fn sealer(&self) -> Option<crate::keys::Sealer> {
        match self.settings.escrow_key.clone()? {
            EscrowKey::Kms(key_id) => Some(crate::keys::Sealer::Kms {
                key_id,
                aws: Box::new(self.aws().await),
            }),
            EscrowKey::LocalDemo(k) => Some(crate::keys::Sealer::LocalDemo(k)),
        }
    }

    /// Current credentials of the process's AWS identity.
    pub async fn aws_credentials(&self) -> Result<aws_credential_types::Credentials> {
        use aws_credential_types::provider::ProvideCredentials;
        let provider = self
            .aws_credentials
            .get_or_try_init(|| async {
                let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                aws.credentials_provider().ok_or_else(|| {
                    Error::invalid(
                        "the AppBinding asks for a Vault IAM login (awsAuth) but no AWS credentials are configured",
                    )
                })
            })
            .await?;
        provider.provide_credentials().await.map_err(|e| {
            Error::unavailable(
                "reading the AWS credentials for the Vault IAM login",
                Some(Box::new(e)),
            )
        })
    }

    /// The session's Repository opened as a snapshot store and its AppBinding as a Vault
    /// client: what backup and restore both start from.
    pub async fn open_store_and_vault(
        &self,
        ns: &str,
        repo_ref: &ObjectRef,
        target_ref: Option<&TargetRef>,
    ) -> Result<Opened> {
        let (app_binding, vault_target) = resolve::vault_target(&self.kube, ns, target_ref).await?;
        let (repository, store) = self.open_store(ns, repo_ref).await?;
        Ok(Opened {
            repository,
            store,
            vault: Vault::new(vault_target)?,
            app_binding,
        })
    }

    /// The session's Repository opened as a snapshot store.
    pub async fn open_store(&self, ns: &str, repo_ref: &ObjectRef) -> Result<(Repository, Store)> {
        let tuning = self.settings.tuning.clone();
        let repo = resolve::repository(&self.kube, ns, repo_ref, tuning).await?;
        let store = Store::open(repo.location, repo.credentials, repo.ca_pem, repo.tuning).await?;
        Ok((repo.repository, store))
    }

    /// Log in to Vault with the process's IAM role when the AppBinding asks for it
    /// (`spec.parameters.awsAuth`); a token from a Secret needs nothing here.
    pub async fn vault_login(&self, vault: &mut Vault, node: &str) -> Result<()> {
        let Some(login) = vault.aws_login().cloned() else {
            return Ok(());
        };
        let credentials = self.aws_credentials().await?;
        let request = crate::aws_login::caller_identity_request(
            &credentials,
            login.sts_region.as_deref(),
            login.server_id.as_deref(),
            std::time::SystemTime::now(),
        )?;
        vault.login_aws(node, &login, &request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_scope_parses_and_refuses() {
        let all = NamespaceScope::parse(" , ");
        assert!(all.is_all());
        assert!(all.serves("anything"));
        assert_eq!(all.refuse("anything"), None);

        let some = NamespaceScope::parse(" vault , team-a,,vault");
        assert!(some.serves("team-a"));
        assert!(!some.serves("team-b"));
        assert_eq!(
            some.refuse("team-b").unwrap(),
            "namespace team-b is not one this function serves (STASHLESS_NAMESPACES: vault,team-a)"
        );
        assert_eq!(NamespaceScope::only(["vault", "team-a"]), some);
        assert!(NamespaceScope::only(Vec::<String>::new()).is_all());
    }
}
