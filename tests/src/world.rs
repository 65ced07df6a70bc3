//! One test's world, built from the parts it needs ([`World::builder`]): an OpenBao, a fresh
//! bucket on the shared Garage, the Kubernetes API server the run asks for
//! (`STASHLESS_KUBE_BACKEND`, [`Cluster::start`]) or the in-memory one, AppBinding `vault`,
//! Repository `repo`, a BackupConfiguration, and optionally an HTTP fault proxy in front of
//! Vault and of S3. Also how every test names a session ([`session_ref`]) and reads a
//! failure ([`failed_reason`]).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use chrono::Utc;
use serde_json::{Value, json};
use stashless::api::BackupSession;
use stashless::events::SessionRef;
use stashless::session::Outcome;
use stashless::{backup, restore};

use crate::faults::HttpProxy;
use crate::procs::openbao::OpenBao;
use crate::{Cluster, ConfigBuilder, Context, NS, S3Target, init_logs};

/// BackupSession or RestoreSession `name` in namespace `vault`, as its event names it.
pub fn session_ref(name: &str) -> SessionRef {
    SessionRef {
        kind: None,
        namespace: NS.into(),
        name: name.into(),
    }
}

/// The reason of a Failed outcome (of backup or restore); panics on any other outcome.
pub fn failed_reason(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Failed { reason } => reason.clone(),
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// A test's servers and Stash objects. Only `cluster` is always there; the accessors of the
/// other parts panic when the builder was not asked for them.
pub struct World {
    pub cluster: Cluster,
    bao: Option<OpenBao>,
    s3: Option<(S3Target, String)>,
    /// In front of Vault and of S3.
    proxies: Option<(HttpProxy, HttpProxy)>,
}

enum Bao {
    None,
    Start,
    Given(Box<OpenBao>),
}

enum Kube {
    FromEnv,
    Memory,
    Given(Box<Cluster>),
}

enum Binding {
    /// The world's OpenBao (through the Vault proxy if there is one), its root token.
    ToBao,
    /// This `spec.clientConfig` and token.
    With { client_config: Value, token: String },
}

/// What [`World::builder`] returns: every part is off until asked for.
pub struct WorldBuilder {
    tag: String,
    bao: Bao,
    s3: bool,
    /// Another S3 server and bucket than the shared Garage (e.g. moto's, for Object Lock).
    s3_given: Option<(S3Target, String)>,
    kube: Kube,
    proxies: bool,
    binding: Option<Binding>,
    repository: Option<String>,
    config: Option<ConfigBuilder>,
}

impl WorldBuilder {
    /// A fresh OpenBao ([`OpenBao::start`]).
    pub fn openbao(mut self) -> Self {
        self.bao = Bao::Start;
        self
    }

    /// This OpenBao (seeded, started with TLS, …), owned by the world from now on.
    pub fn with_openbao(mut self, bao: OpenBao) -> Self {
        self.bao = Bao::Given(Box::new(bao));
        self
    }

    /// A fresh bucket `<tag>-<pid>` on the shared Garage.
    pub fn s3(mut self) -> Self {
        self.s3 = true;
        self
    }

    /// This S3 server and bucket instead of a bucket on the shared Garage.
    pub fn s3_on(mut self, target: S3Target, bucket: &str) -> Self {
        self.s3 = true;
        self.s3_given = Some((target, bucket.into()));
        self
    }

    /// The in-memory API server whatever the run asks for (failure injection, `mem()`).
    pub fn memory(mut self) -> Self {
        self.kube = Kube::Memory;
        self
    }

    /// This API server (e.g. a real one with RBAC installed).
    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.kube = Kube::Given(Box::new(cluster));
        self
    }

    /// An HTTP fault proxy in front of the world's OpenBao and one in front of S3; the
    /// AppBinding ([`Self::app_binding`]) and the Repository go through them.
    pub fn fault_proxies(mut self) -> Self {
        self.proxies = true;
        self
    }

    /// AppBinding `vault` (and Secret `vault-token`) on the world's OpenBao with its root
    /// token.
    pub fn app_binding(mut self) -> Self {
        self.binding = Some(Binding::ToBao);
        self
    }

    /// AppBinding `vault` (and Secret `vault-token`) on this address with this token.
    pub fn app_binding_to(self, addr: &str, token: &str) -> Self {
        self.app_binding_with(json!({"url": addr}), token)
    }

    /// AppBinding `vault` (and Secret `vault-token`) with this `spec.clientConfig` (TLS
    /// settings, a Service reference) and token.
    pub fn app_binding_with(mut self, client_config: Value, token: &str) -> Self {
        self.binding = Some(Binding::With {
            client_config,
            token: token.into(),
        });
        self
    }

    /// Repository `repo` (and Secret `repo-s3`) on the world's bucket under `prefix`; implies
    /// [`Self::s3`].
    pub fn repository(mut self, prefix: &str) -> Self {
        self.s3 = true;
        self.repository = Some(prefix.into());
        self
    }

    /// This BackupConfiguration.
    pub fn backup_configuration(mut self, config: ConfigBuilder) -> Self {
        self.config = Some(config);
        self
    }

    /// Repository `repo` under `prefix` ([`Self::repository`]) and, unless
    /// [`Self::backup_configuration`] gives another, BackupConfiguration `cfg` with
    /// [`ConfigBuilder::new`]'s defaults.
    pub fn backup_to(mut self, prefix: &str) -> Self {
        self.config.get_or_insert_with(|| ConfigBuilder::new("cfg"));
        self.repository(prefix)
    }

    /// For a test: logs to the test output ([`init_logs`]), and the world or a panic saying
    /// which part did not start.
    pub async fn build(self) -> World {
        init_logs();
        self.try_build()
            .await
            .unwrap_or_else(|e| panic!("the test world: {e:#}"))
    }

    /// For a program (the bench): the world or why not, and no logging set up.
    pub async fn try_build(self) -> Result<World> {
        let bao = match self.bao {
            Bao::None => None,
            Bao::Start => Some(
                OpenBao::start()
                    .await
                    .context("openbao starts (run bash tests/setup.sh)")?,
            ),
            Bao::Given(bao) => Some(*bao),
        };
        let s3 = if let Some(given) = self.s3_given {
            Some(given)
        } else if self.s3 {
            Some(
                S3Target::garage_bucket(&self.tag)
                    .await
                    .context("garage starts (run bash tests/setup.sh)")?,
            )
        } else {
            None
        };
        let cluster = match self.kube {
            Kube::FromEnv => Cluster::start().await?,
            Kube::Memory => Cluster::memory().await?,
            Kube::Given(c) => *c,
        };
        let proxies = if self.proxies {
            let (Some(bao), Some((s3, _))) = (&bao, &s3) else {
                bail!("fault proxies need an OpenBao and S3");
            };
            let vault = HttpProxy::start(&bao.addr).await?;
            let store = HttpProxy::start(&s3.endpoint).await?;
            Some((vault, store))
        } else {
            None
        };
        match self.binding {
            None => {}
            Some(Binding::ToBao) => {
                let Some(bao) = &bao else {
                    bail!("app_binding() needs an OpenBao: openbao() or with_openbao()");
                };
                let addr = match &proxies {
                    Some((vault, _)) => &vault.addr,
                    None => &bao.addr,
                };
                cluster
                    .vault_binding("vault", addr, &bao.root_token)
                    .await?;
            }
            Some(Binding::With { .. }) if proxies.is_some() => {
                bail!("the Vault fault proxy stands in front of the world's own OpenBao only")
            }
            Some(Binding::With {
                client_config,
                token,
            }) => {
                cluster
                    .vault_binding_with("vault", client_config, &token)
                    .await?;
            }
        }
        if let Some(prefix) = &self.repository {
            let (s3, bucket) = s3.as_ref().expect("repository() implies s3()");
            let target = match &proxies {
                Some((_, store)) => S3Target {
                    endpoint: store.addr.clone(),
                    ..s3.clone()
                },
                None => s3.clone(),
            };
            cluster.repository("repo", &target, bucket, prefix).await?;
        }
        if let Some(config) = self.config {
            cluster.backup_config(config).await?;
        }
        Ok(World {
            cluster,
            bao,
            s3,
            proxies,
        })
    }
}

impl World {
    /// Nothing but the API server the run asks for, until parts are added.
    pub fn builder(tag: &str) -> WorldBuilder {
        WorldBuilder {
            tag: tag.into(),
            bao: Bao::None,
            s3: false,
            s3_given: None,
            kube: Kube::FromEnv,
            proxies: false,
            binding: None,
            repository: None,
            config: None,
        }
    }

    /// The usual world: a fresh OpenBao, AppBinding `vault` on it, Repository `repo` under
    /// `prefix` on a fresh bucket and BackupConfiguration `cfg`, on the API server the run
    /// asks for.
    pub async fn standard(tag: &str, prefix: &str) -> World {
        World::builder(tag)
            .openbao()
            .app_binding()
            .backup_to(prefix)
            .build()
            .await
    }

    pub fn bao(&self) -> &OpenBao {
        self.bao
            .as_ref()
            .expect("this world has no OpenBao: build it with openbao() or with_openbao()")
    }

    /// Garage itself (never through the S3 fault proxy).
    pub fn s3(&self) -> &S3Target {
        &self.garage().0
    }

    pub fn bucket(&self) -> &str {
        &self.garage().1
    }

    fn garage(&self) -> &(S3Target, String) {
        self.s3
            .as_ref()
            .expect("this world has no bucket: build it with s3() or repository()")
    }

    /// The fault proxy in front of Vault.
    pub fn vault_proxy(&self) -> &HttpProxy {
        &self.fault_proxies().0
    }

    /// The fault proxy in front of S3.
    pub fn s3_proxy(&self) -> &HttpProxy {
        &self.fault_proxies().1
    }

    fn fault_proxies(&self) -> &(HttpProxy, HttpProxy) {
        self.proxies
            .as_ref()
            .expect("this world has no fault proxies: build it with fault_proxies()")
    }

    /// A backup/restore function context on this cluster (test settings, no Pushgateway).
    pub fn ctx(&self) -> Arc<Context> {
        self.cluster.backup_context(None)
    }

    /// Create BackupSession `session` of `cfg` and deliver its event once.
    pub async fn backup(&self, session: &str) -> Outcome {
        self.backup_with(&self.ctx(), "cfg", session, None).await
    }

    /// Create BackupSession `session` of `config` and deliver its event once through `ctx`.
    pub async fn backup_with(
        &self,
        ctx: &Context,
        config: &str,
        session: &str,
        lambda_deadline: Option<Instant>,
    ) -> Outcome {
        self.cluster.new_session(config, session).await.unwrap();
        backup::run(ctx, &session_ref(session), lambda_deadline)
            .await
            .unwrap()
    }

    /// Deliver RestoreSession `name`'s event once.
    pub async fn run_restore(&self, name: &str) -> Outcome {
        restore::run(&self.ctx(), &session_ref(name), None)
            .await
            .unwrap()
    }

    /// Move a session's `sessionDeadline` into the past (the functions read their own clock).
    pub async fn deadline_passed(&self, session: &str) {
        let past = stashless::api::timestamp(Utc::now() - chrono::Duration::seconds(1));
        self.cluster
            .api::<BackupSession>()
            .patch_status(
                session,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": {"sessionDeadline": past}})),
            )
            .await
            .unwrap();
    }
}
