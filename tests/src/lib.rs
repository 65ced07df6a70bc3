//! Test harness for the end-to-end tests: real OpenBao, Garage, Pushgateway and moto
//! processes (`procs`), the in-memory Kubernetes API (`memkube`), small builders for the
//! Stash objects a test needs, and one test's whole world built from them (`world`).

pub mod bao_extra;
pub mod bridge_run;
pub mod faults;
pub mod hook_server;
pub mod leaks;
pub mod moto;
pub mod procs;
pub mod put_events;
pub mod recorder;
pub mod runtime_api;
pub mod world;

use std::sync::Arc;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use memkube::{MemKube, ResourceKind, RunningServer};
pub use procs::apiserver::{ApiServer, CrdSet};
use serde_json::{Value, json};
use stashless::api::{AppBinding, BackupConfiguration, BackupSession, Repository, RestoreSession};
use stashless::cluster::ClusterSource;
use stashless::context::{Context, Settings};
use stashless::crds;
use stashless::repository::Tuning;
pub use world::{World, WorldBuilder, failed_reason, session_ref};

pub const NS: &str = "vault";

/// What the leak scan captures: everything at debug, our own code at trace; protocol
/// internals (frames, pool bookkeeping) at info.
const CAPTURE_FILTER: &str = "debug,stashless=trace,h2=info,hyper_util=info,rustls=info,tower=info";

/// Log to the test output (`RUST_LOG=debug` for more), and, when the run collects them for
/// the leak scan (`STASHLESS_LEAK_DIR`), every line at debug level to a file there.
pub fn init_logs() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let console = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,aws_smithy_runtime=warn,aws_sdk_s3=warn,hyper=warn".into()
            }),
        );
    let capture = leaks::file("logs", "log").map(|f| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .with_filter(tracing_subscriber::EnvFilter::new(CAPTURE_FILTER))
    });
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(capture)
        .try_init();
}

/// Register the six kinds with Stash's schemas, so memkube prunes, defaults and validates
/// writes as a real server with Stash's CRDs does.
pub fn register_stash_kinds(kube: &MemKube) {
    for (group, version, kind, plural, status, namespaced) in stashless::crds::KINDS {
        let mut k = ResourceKind::new(group, version, kind, plural)
            .with_schema(stashless::crds::stash_schema(plural));
        if !namespaced {
            k = k.cluster_scoped();
        }
        kube.register(if status { k.with_status() } else { k });
    }
}

/// Which Kubernetes API server the end-to-end tests talk to: the in-memory one (default) or
/// a real kube-apiserver (`STASHLESS_KUBE_BACKEND=apiserver`, CRD set from
/// `STASHLESS_KUBE_CRDS`). `tests/run.sh` runs the end-to-end tests under both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeBackend {
    Memory,
    ApiServer(CrdSet),
}

impl KubeBackend {
    pub fn from_env() -> KubeBackend {
        match std::env::var("STASHLESS_KUBE_BACKEND").as_deref() {
            Ok("apiserver") => KubeBackend::ApiServer(CrdSet::from_env()),
            Ok("memory") | Ok("") | Err(_) => KubeBackend::Memory,
            Ok(other) => panic!("STASHLESS_KUBE_BACKEND={other:?}: want memory or apiserver"),
        }
    }
}

enum Server {
    Memory {
        kube: MemKube,
        server: RunningServer,
    },
    Real(Box<ApiServer>),
}

/// A Kubernetes API server with the five Stash kinds, namespace `vault`, and a client.
pub struct Cluster {
    server: Server,
    pub client: Client,
}

impl Cluster {
    /// The backend this test run asks for ([`KubeBackend::from_env`]).
    pub async fn start() -> Result<Cluster> {
        match KubeBackend::from_env() {
            KubeBackend::Memory => Self::memory().await,
            KubeBackend::ApiServer(crds) => Self::apiserver(crds).await,
        }
    }

    /// The in-memory API server, whatever the run asks for: for tests that inject failures
    /// or compact history through [`Cluster::mem`].
    pub async fn memory() -> Result<Cluster> {
        stashless::install_crypto_provider();
        let kube = MemKube::new();
        register_stash_kinds(&kube);
        kube.namespace(NS);
        let server = kube.serve().await?;
        let client = ClusterSource::Url {
            url: server.url(),
            token: None,
            ca_file: None,
        }
        .client()
        .await?;
        Ok(Cluster {
            server: Server::Memory { kube, server },
            client,
        })
    }

    /// A fresh real etcd + kube-apiserver with `crds` installed and namespace `vault`
    /// created (a real server refuses objects in a namespace that does not exist).
    pub async fn apiserver(crds: CrdSet) -> Result<Cluster> {
        stashless::install_crypto_provider();
        let real = ApiServer::start(crds).await?;
        let client = real.client().await?;
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(json!({"metadata": {"name": NS}}))?;
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(Cluster {
            server: Server::Real(Box::new(real)),
            client,
        })
    }

    /// The in-memory server's controls (failure injection, compaction).
    /// Panics on a real API server: such a test must start with [`Cluster::memory`].
    pub fn mem(&self) -> &MemKube {
        match &self.server {
            Server::Memory { kube, .. } => kube,
            Server::Real(_) => panic!("this test needs the in-memory API server (Cluster::memory)"),
        }
    }

    /// The real API server, if this is one.
    pub fn real(&self) -> Option<&ApiServer> {
        match &self.server {
            Server::Real(r) => Some(r),
            Server::Memory { .. } => None,
        }
    }

    pub fn url(&self) -> String {
        match &self.server {
            Server::Memory { server, .. } => server.url(),
            Server::Real(r) => r.url.clone(),
        }
    }

    /// The environment a child process (function binary, CLI) needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match &self.server {
            Server::Memory { server, .. } => vec![("STASHLESS_KUBE_URL", server.url())],
            Server::Real(r) => r.env(),
        }
    }

    /// How functions under test reach this server.
    pub fn source(&self) -> ClusterSource {
        match &self.server {
            Server::Memory { server, .. } => ClusterSource::Url {
                url: server.url(),
                token: None,
                ca_file: None,
            },
            Server::Real(r) => ClusterSource::Url {
                url: r.url.clone(),
                token: Some(r.token.clone()),
                ca_file: Some(r.ca_file.clone()),
            },
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Create any object from JSON in namespace `vault`, sent as it is (as `kubectl apply`
    /// would: fields stashless does not model reach the server too), read back typed.
    pub async fn create<K>(&self, obj: Value) -> Result<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let ar = kube::api::ApiResource::erase::<K>(&());
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(self.client.clone(), NS, &ar);
        let mut raw: kube::api::DynamicObject = serde_json::from_value(obj)?;
        if raw.types.is_none() {
            raw.types = Some(kube::api::TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            });
        }
        let created = api.create(&PostParams::default(), &raw).await?;
        Ok(serde_json::from_value(serde_json::to_value(created)?)?)
    }

    pub async fn secret(&self, name: &str, data: &[(&str, &str)]) -> Result<Secret> {
        for (k, v) in data {
            // An access key id names a key; it is not secret and may appear in errors.
            if *k != "AWS_ACCESS_KEY_ID" {
                leaks::secret(&format!("Secret value ({k})"), v);
            }
        }
        let string_data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data}))
            .await
    }

    /// Secret + AppBinding pointing at a Vault address with a token.
    pub async fn vault_binding(&self, name: &str, addr: &str, token: &str) -> Result<AppBinding> {
        self.vault_binding_with(name, json!({"url": addr}), token)
            .await
    }

    /// Secret `<name>-token` + AppBinding `name` with this `spec.clientConfig` (TLS settings,
    /// a service reference).
    pub async fn vault_binding_with(
        &self,
        name: &str,
        client_config: Value,
        token: &str,
    ) -> Result<AppBinding> {
        self.secret(&format!("{name}-token"), &[("token", token)])
            .await?;
        self.create(json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": name},
            "spec": {
                "type": "vault", "version": "2.7.2",
                "clientConfig": client_config,
                "secret": {"kind": "Secret", "name": format!("{name}-token")},
            }
        }))
        .await
    }

    /// Storage Secret + Repository on an S3 endpoint.
    pub async fn repository(
        &self,
        name: &str,
        s3: &S3Target,
        bucket: &str,
        prefix: &str,
    ) -> Result<Repository> {
        self.secret(
            &format!("{name}-s3"),
            &[
                ("AWS_ACCESS_KEY_ID", &s3.access_key),
                ("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
            ],
        )
        .await?;
        self.create(json!({
            "apiVersion": "stash.appscode.com/v1alpha1", "kind": "Repository",
            "metadata": {"name": name},
            "spec": {
                "backend": {
                    "s3": {"endpoint": s3.endpoint, "bucket": bucket, "prefix": prefix, "region": s3.region},
                    "storageSecretName": format!("{name}-s3"),
                }
            }
        }))
        .await
    }

    pub async fn backup_config(&self, b: ConfigBuilder) -> Result<BackupConfiguration> {
        self.create(b.build()).await
    }

    pub async fn sessions(&self) -> Result<Vec<BackupSession>> {
        Ok(self
            .api::<BackupSession>()
            .list(&ListParams::default())
            .await?
            .items)
    }

    pub async fn session(&self, name: &str) -> Result<BackupSession> {
        Ok(self.api::<BackupSession>().get(name).await?)
    }

    pub async fn restore_session(&self, name: &str) -> Result<RestoreSession> {
        Ok(self.api::<RestoreSession>().get(name).await?)
    }

    /// A BackupSession as Stash's CronJob would create it (no scheduler involved).
    pub async fn new_session(&self, config: &str, name: &str) -> Result<BackupSession> {
        self.create(session_json(config, name, false)).await
    }

    /// A BackupSession as stashless's scheduler creates it (labelled
    /// `app.kubernetes.io/managed-by: stashless`): ours even when its configuration is gone.
    pub async fn new_stashless_session(&self, config: &str, name: &str) -> Result<BackupSession> {
        self.create(session_json(config, name, true)).await
    }

    /// Backup function context against this cluster.
    pub fn backup_context(&self, pushgateway: Option<String>) -> Arc<Context> {
        context_for(self.client.clone(), pushgateway)
    }
}

/// A BackupSession of `config` with Stash's invoker labels, and stashless's managed-by label
/// when `by_stashless`.
fn session_json(config: &str, name: &str, by_stashless: bool) -> Value {
    let mut labels = json!({
        "stash.appscode.com/invoker-type": "BackupConfiguration",
        "stash.appscode.com/invoker-name": config,
    });
    if by_stashless {
        labels["app.kubernetes.io/managed-by"] = json!("stashless");
    }
    json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": name, "labels": labels},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": config}}
    })
}

/// The test settings (small parts) with this Kubernetes client: e.g. one that reaches the
/// API server through a fault proxy.
pub fn context_for(client: Client, pushgateway: Option<String>) -> Arc<Context> {
    Context::new(
        client,
        Settings {
            tuning: Tuning {
                part_size: 5 * 1024 * 1024,
                parts_in_flight: 3,
                checksums_when_required: false,
            },
            pushgateway,
            ..Settings::default()
        },
    )
}

impl Drop for Cluster {
    /// For the leak scan: every Stash object and Event the in-memory server holds, as the
    /// test left them (a real API server is not dumped).
    fn drop(&mut self) {
        let Server::Memory { kube, .. } = &self.server else {
            return;
        };
        if leaks::dir().is_none() {
            return;
        }
        let mut kinds: Vec<(&str, &str)> = crds::KINDS.iter().map(|k| (k.0, k.3)).collect();
        kinds.push(("", "events"));
        leaks::texts(
            "objects",
            kinds
                .into_iter()
                .flat_map(|(group, plural)| kube.objects(group, plural))
                .map(|o| o.to_string()),
        );
    }
}

/// An S3 endpoint and credentials.
#[derive(Debug, Clone)]
pub struct S3Target {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Target {
    /// The process-wide Garage and a fresh bucket named `<tag>-<pid>` on it.
    pub async fn garage_bucket(tag: &str) -> Result<(S3Target, String)> {
        let g = procs::garage::Garage::shared().await?;
        let s3 = S3Target {
            endpoint: g.endpoint.clone(),
            region: g.region.clone(),
            access_key: g.access_key.clone(),
            secret_key: g.secret_key.clone(),
        };
        let bucket = format!("{tag}-{}", std::process::id());
        g.create_bucket(&bucket).await?;
        Ok((s3, bucket))
    }

    /// A raw SDK client on this endpoint, for assertions (ListMultipartUploads, objects).
    pub fn client(&self) -> aws_sdk_s3::Client {
        stashless::install_crypto_provider();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Keys under a prefix.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await?;
        Ok(out
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.key)
            .collect())
    }

    /// Incomplete multipart uploads in a bucket: must be zero after every test.
    pub async fn open_uploads(&self, bucket: &str) -> Result<usize> {
        let out = self
            .client()
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await?;
        Ok(out.uploads.unwrap_or_default().len())
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let out = self
            .client()
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await?;
        Ok(out.body.collect().await?.into_bytes().to_vec())
    }
}

/// Builder for a BackupConfiguration.
pub struct ConfigBuilder {
    pub name: String,
    pub schedule: String,
    pub repository: String,
    pub target: String,
    pub retention: Value,
    pub paused: bool,
    pub history_limit: Option<i64>,
    pub time_out: Option<String>,
    pub hooks: Option<Value>,
    pub retry: Option<Value>,
}

impl ConfigBuilder {
    pub fn new(name: &str) -> Self {
        ConfigBuilder {
            name: name.into(),
            schedule: "*/5 * * * *".into(),
            repository: "repo".into(),
            target: "vault".into(),
            retention: json!({"name": "keep-last-5", "keepLast": 5, "prune": true}),
            paused: false,
            history_limit: None,
            time_out: None,
            hooks: None,
            retry: None,
        }
    }
    /// `spec.hooks`.
    pub fn hooks(mut self, h: Value) -> Self {
        self.hooks = Some(h);
        self
    }
    /// `spec.retryConfig`.
    pub fn retry(mut self, r: Value) -> Self {
        self.retry = Some(r);
        self
    }
    pub fn schedule(mut self, s: &str) -> Self {
        self.schedule = s.into();
        self
    }
    pub fn repository(mut self, r: &str) -> Self {
        self.repository = r.into();
        self
    }
    pub fn target(mut self, t: &str) -> Self {
        self.target = t.into();
        self
    }
    pub fn retention(mut self, r: Value) -> Self {
        self.retention = r;
        self
    }
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }
    pub fn history_limit(mut self, n: i64) -> Self {
        self.history_limit = Some(n);
        self
    }
    pub fn time_out(mut self, t: &str) -> Self {
        self.time_out = Some(t.into());
        self
    }
    pub fn build(self) -> Value {
        let mut spec = json!({
            "schedule": self.schedule,
            "paused": self.paused,
            "repository": {"name": self.repository},
            "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": self.target}},
            "task": {"name": "vault-backup-1.10.3"},
            "retentionPolicy": self.retention,
        });
        if let Some(n) = self.history_limit {
            spec["backupHistoryLimit"] = json!(n);
        }
        if let Some(t) = self.time_out {
            spec["timeOut"] = json!(t);
        }
        if let Some(h) = self.hooks {
            spec["hooks"] = h;
        }
        if let Some(r) = self.retry {
            spec["retryConfig"] = r;
        }
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
            "metadata": {"name": self.name},
            "spec": spec,
        })
    }
}

/// Violations of Stash's CRD schema in the raw object stored by the API server (what a
/// real server would prune). Checks the JSON as written, not a typed re-read.
pub fn crd_violations(raw: &Value, crd_yaml: &str) -> Vec<String> {
    violations_of(&stashless::crds::schema_of(crd_yaml), raw)
}

/// Violations of an `openAPIV3Schema` in a raw stored object (metadata aside).
fn violations_of(schema: &Value, raw: &Value) -> Vec<String> {
    let mut v = raw.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
    }
    stashless::crds::violations(schema, &v)
}

impl Cluster {
    /// Everything wrong with how an object was written: the raw stored JSON checked against
    /// Stash's CRD and the generated one, and (in-memory server) every unknown field that was
    /// pruned from a write of it. A real server prunes silently, so the in-memory server's
    /// record is what catches a status field Stash's schema lacks.
    pub async fn schema_violations(&self, plural: &str, name: &str) -> Vec<String> {
        let raw = self.raw(plural, name).await;
        let mut out: Vec<String> = violations_of(&crds::stash_schema(plural), &raw)
            .into_iter()
            .map(|v| format!("Stash's CRD: {v}"))
            .collect();
        out.extend(
            violations_of(&crds::generated_schema(plural), &raw)
                .into_iter()
                .map(|v| format!("generated CRD: {v}")),
        );
        if let Server::Memory { kube, .. } = &self.server {
            let prefix = format!("{plural}/{NS}/{name}: ");
            out.extend(
                kube.pruned()
                    .into_iter()
                    .filter(|p| p.starts_with(&prefix))
                    .map(|p| format!("pruned on write: {p}")),
            );
        }
        out
    }

    /// The raw JSON the server stores for an object of the `stash.appscode.com` group
    /// (untyped: whatever a real server pruned is absent), or null.
    pub async fn raw(&self, plural: &str, name: &str) -> Value {
        let (group, version, ..) = stashless::crds::KINDS
            .into_iter()
            .find(|k| k.3 == plural)
            .unwrap_or_else(|| panic!("unknown plural {plural}"));
        let req = http::Request::get(format!(
            "/apis/{group}/{version}/namespaces/{NS}/{plural}/{name}"
        ))
        .body(Vec::new())
        .unwrap();
        self.client
            .request::<Value>(req)
            .await
            .unwrap_or(Value::Null)
    }
}

impl Cluster {
    /// A RestoreSession as a Stash user writes it: repository, target AppBinding, optional
    /// snapshot name in `target.rules[].snapshots`, optional `force` task parameter.
    pub async fn new_restore(
        &self,
        name: &str,
        repo: &str,
        target: &str,
        snapshot: Option<&str>,
        force: bool,
    ) -> Result<RestoreSession> {
        let mut spec = json!({
            "repository": {"name": repo},
            "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": target}},
            "task": {"name": "vault-restore-1.10.3"},
        });
        if let Some(s) = snapshot {
            spec["target"]["rules"] = json!([{"snapshots": [s]}]);
        }
        if force {
            spec["task"]["params"] = json!([{"name": "force", "value": "true"}]);
        }
        self.create(json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .await
    }

    /// Run one backup of `config` now through the backup function; returns the snapshot name.
    pub async fn backup_now(&self, ctx: &Context, config: &str, session: &str) -> Result<String> {
        self.new_session(config, session).await?;
        match stashless::backup::run(ctx, &session_ref(session), None).await? {
            stashless::session::Outcome::Succeeded { snapshot, .. } => Ok(snapshot),
            other => anyhow::bail!("backup did not succeed: {other:?}"),
        }
    }
}
