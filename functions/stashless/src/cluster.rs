//! Talking to Kubernetes as a client: building the `kube::Client`, reading Secrets,
//! recording Events. Nothing here knows Vault or S3.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client, Config, Resource, ResourceExt};

use crate::error::{Error, Result, api_code};

/// Where the API server is. Resolved once per process (Lambda keeps it across invocations).
#[derive(Debug, Clone, Default)]
pub enum ClusterSource {
    /// `STASHLESS_KUBE_URL` (+ optional `STASHLESS_KUBE_TOKEN` and `STASHLESS_KUBE_CA_FILE`,
    /// a PEM bundle the server's certificate must chain to): for local runs and tests.
    Url {
        url: String,
        token: Option<String>,
        ca_file: Option<std::path::PathBuf>,
    },
    /// `STASHLESS_EKS_CLUSTER`: an EKS cluster by name, reached with the process's own AWS
    /// identity (DescribeCluster for endpoint and CA, aws-iam-authenticator tokens): how the
    /// functions run on Lambda.
    Eks { cluster: String },
    /// Kubeconfig (`KUBECONFIG`, `~/.kube/config`) or in-cluster service account.
    #[default]
    Infer,
}

impl ClusterSource {
    pub fn from_env() -> Self {
        match std::env::var("STASHLESS_KUBE_URL") {
            Ok(url) if !url.is_empty() => ClusterSource::Url {
                url,
                token: std::env::var("STASHLESS_KUBE_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
                ca_file: std::env::var_os("STASHLESS_KUBE_CA_FILE")
                    .filter(|p| !p.is_empty())
                    .map(Into::into),
            },
            _ => match std::env::var("STASHLESS_EKS_CLUSTER") {
                Ok(cluster) if !cluster.is_empty() => ClusterSource::Eks { cluster },
                _ => ClusterSource::Infer,
            },
        }
    }

    pub async fn client(&self) -> Result<Client> {
        crate::install_crypto_provider();
        let config = match self {
            ClusterSource::Url { url, token, ca_file } => {
                let uri = url
                    .parse()
                    .map_err(|e| Error::invalid_because(format!("STASHLESS_KUBE_URL {url:?} is not a URL"), e))?;
                let mut config = Config::new(uri);
                if let Some(token) = token {
                    config.auth_info.token = Some(token.clone().into());
                }
                if let Some(ca_file) = ca_file {
                    // Read once here so a wrong path fails with its name, not at first use;
                    // kube re-reads the file itself (CA rotation).
                    std::fs::metadata(ca_file).map_err(|e| {
                        Error::invalid(format!(
                            "STASHLESS_KUBE_CA_FILE {}: {e}",
                            ca_file.display()
                        ))
                    })?;
                    config.root_cert_file = Some(ca_file.clone());
                }
                config
            }
            ClusterSource::Eks { cluster } => {
                let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                let region = aws.region().map(|r| r.to_string()).ok_or_else(|| {
                    Error::invalid("STASHLESS_EKS_CLUSTER is set but no AWS region is configured (AWS_REGION)")
                })?;
                let credentials = aws.credentials_provider().ok_or_else(|| {
                    Error::invalid("STASHLESS_EKS_CLUSTER is set but no AWS credentials are configured")
                })?;
                let (endpoint, ca) = crate::eks::describe(&aws_sdk_eks::Client::new(&aws), cluster).await?;
                let tokens = crate::eks::TokenSource::new(credentials, &region, cluster);
                return crate::eks::client(&endpoint, &ca, std::sync::Arc::new(tokens)).await;
            }
            ClusterSource::Infer => Config::infer().await.map_err(|e| {
                Error::invalid(format!(
                    "no Kubernetes configuration: {e} (set STASHLESS_EKS_CLUSTER, KUBECONFIG, run in-cluster, or set STASHLESS_KUBE_URL)"
                ))
            })?,
        };
        Client::try_from(config).map_err(|e| Error::kube("building the client", e))
    }
}

/// A Secret's data, decoded. Values are never logged.
pub async fn read_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    used_for: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get(name).await {
        Ok(secret) => {
            let mut out: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in secret.string_data.unwrap_or_default() {
                out.insert(k, v.into_bytes());
            }
            Ok(out)
        }
        Err(e) if api_code(&e) == Some(404) => Err(Error::NotFound {
            kind: "Secret",
            namespace: namespace.into(),
            name: name.into(),
            hint: format!(" (needed for {used_for})"),
        }),
        Err(e) if api_code(&e) == Some(403) => Err(Error::invalid(format!(
            "not allowed to read Secret {namespace}/{name} (needed for {used_for}): grant the function's identity `get` on secrets in {namespace}"
        ))),
        Err(e) => Err(Error::kube(format!("reading Secret {namespace}/{name}"), e)),
    }
}

/// One key of a Secret as UTF-8 text, with an error that names the Secret and key.
pub fn secret_text(
    data: &BTreeMap<String, Vec<u8>>,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    match data.get(key) {
        None => Ok(None),
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                Error::invalid(format!(
                    "Secret {namespace}/{name} key {key:?} is not UTF-8 text"
                ))
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(Error::invalid(format!(
                    "Secret {namespace}/{name} key {key:?} is empty"
                )));
            }
            if text.chars().any(|c| c.is_control()) {
                return Err(Error::invalid(format!(
                    "Secret {namespace}/{name} key {key:?} holds control characters"
                )));
            }
            Ok(Some(text.to_string()))
        }
    }
}

/// Event type: "Normal" or "Warning".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Record a Kubernetes Event about `obj`. Best effort: an Event that cannot be written
/// is logged and never fails the session.
pub async fn record_event<K>(client: &Client, obj: &K, kind: EventType, reason: &str, message: &str)
where
    K: Resource<DynamicType = ()>,
{
    let event = event_for(obj, kind, reason, message);
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %e, reason, "could not record a Kubernetes Event");
    }
}

/// The Event [`record_event`] writes.
/// The API server refuses an Event whose message is longer than 1024 *bytes* (422 Invalid):
/// a reason with non-ASCII text (a dash, a quoted name) reaches that before 1024 characters.
const EVENT_MESSAGE_MAX_BYTES: usize = 1024;

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn at_most_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn event_for<K>(obj: &K, kind: EventType, reason: &str, message: &str) -> Event
where
    K: Resource<DynamicType = ()>,
{
    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
    let now = k8s_openapi::jiff::Timestamp::now();
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", obj.name_any())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: Some(obj.name_any()),
            namespace: Some(namespace.clone()),
            uid: obj.meta().uid.clone(),
            resource_version: obj.meta().resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(at_most_bytes(message, EVENT_MESSAGE_MAX_BYTES).into()),
        type_: Some(match kind {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        action: Some(reason.into()),
        reporting_component: Some("stashless".into()),
        reporting_instance: Some(hostname()),
        source: Some(EventSource {
            component: Some("stashless".into()),
            host: None,
        }),
        ..Default::default()
    }
}

/// As [`record_event`], but once: the Event's name comes from the object, reason and
/// message, so the same finding on every tick (an AppBinding whose blueprint cannot be
/// applied) is one Event until the API server expires it (an hour by default), not one a
/// minute.
pub async fn record_event_once<K>(
    client: &Client,
    obj: &K,
    kind: EventType,
    reason: &str,
    message: &str,
) where
    K: Resource<DynamicType = ()>,
{
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}\n{reason}\n{message}", K::kind(&())));
    let name = format!("{}.{}", obj.name_any(), hex::encode(&digest[..8]));
    let mut event = event_for(obj, kind, reason, message);
    event.metadata.generate_name = None;
    event.metadata.name = Some(name);
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => {}
        Err(e) if crate::error::api_code(&e) == Some(409) => {}
        Err(e) => tracing::warn!(error = %e, reason, "could not record a Kubernetes Event"),
    }
}

/// The name this process reports as (Lambda: the function name).
pub fn hostname() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "stashless".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupSession;

    #[test]
    fn an_event_message_fits_the_api_servers_byte_limit() {
        let mut session = BackupSession::new("s", Default::default());
        session.metadata.namespace = Some("ns".into());
        // 1000 characters, 3000 bytes: a character limit would let it through.
        let long = "—".repeat(1000);
        let event = event_for(&session, EventType::Warning, "BackupSessionFailed", &long);
        let message = event.message.unwrap();
        assert!(message.len() <= 1024, "{} bytes", message.len());
        assert_eq!(message.len(), 1023, "cut at the last whole character");
        assert!(long.starts_with(&message));
        let short = "fine";
        let event = event_for(&session, EventType::Normal, "BackupSessionSucceeded", short);
        assert_eq!(event.message.as_deref(), Some(short));
    }
}
