//! From Stash objects to connection settings: Repository (+ storage Secret) → S3 location
//! and credentials; AppBinding (+ token Secret) → Vault address, TLS and token. Shared by
//! backup and restore. Reads Kubernetes only; opening the connections is the caller's.

use base64::Engine;
use kube::{Api, Client, ResourceExt};

use crate::api::{AppBinding, ClientConfig, ObjectRef, Repository, TargetRef, is_set};
use crate::cluster::{read_secret, secret_text};
use crate::error::{Error, Result, api_code};
use crate::repository::{Location, StaticCredentials, Tuning, normalise_prefix};
use crate::vault::{AwsLogin, VaultTarget};

/// Annotation on a Repository selecting the SDK checksum mode: `when-required` for
/// S3-compatible stores that break on the SDK's default request checksums.
pub const CHECKSUM_ANNOTATION: &str = "stashless.io/s3-checksums";

pub const DEFAULT_REGION: &str = "us-east-1";

/// Everything needed to open a Repository.
#[derive(Debug, Clone)]
pub struct RepositorySettings {
    pub repository: Repository,
    pub location: Location,
    pub credentials: Option<StaticCredentials>,
    pub ca_pem: Option<Vec<u8>>,
    pub tuning: Tuning,
}

async fn get<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: &'static str,
    hint: &str,
) -> Result<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.get(name).await {
        Ok(k) => Ok(k),
        Err(e) if api_code(&e) == Some(404) => Err(Error::NotFound {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            hint: hint.into(),
        }),
        Err(e) => Err(Error::kube(format!("reading {kind} {namespace}/{name}"), e)),
    }
}

/// Resolve the Repository a session names (namespace defaults to the session's).
pub async fn repository(
    client: &Client,
    session_ns: &str,
    r: &ObjectRef,
    tuning: Tuning,
) -> Result<RepositorySettings> {
    let ns = r
        .namespace
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(session_ns);
    let repo: Repository = get(client, ns, &r.name, "Repository", " (spec.repository)").await?;
    let label = format!("Repository {ns}/{}", r.name);
    if ns != session_ns {
        check_usage_policy(&repo, &label, session_ns)?;
    }
    if repo.spec.wipe_out == Some(true) {
        return Err(Error::invalid(format!(
            "{label} sets spec.wipeOut, which stashless does not do: deleting the Repository leaves its snapshots in the bucket; remove spec.wipeOut and delete the snapshots under the prefix yourself"
        )));
    }
    if let (Some(_), Some(other)) = (&repo.spec.backend.s3, repo.spec.backend.others().first()) {
        return Err(Error::invalid(format!(
            "{label} sets spec.backend.{other} beside spec.backend.s3: stashless stores snapshots only in S3; remove spec.backend.{other}"
        )));
    }
    let s3 = repo.spec.backend.s3.clone().ok_or_else(|| {
        Error::invalid(format!(
            "{label} has no spec.backend.s3: stashless stores snapshots in S3 or an S3-compatible store"
        ))
    })?;
    let labelled = |e: Error| match e {
        Error::Invalid { message, source } => Error::Invalid {
            message: format!("{label} {message}"),
            source,
        },
        other => other,
    };
    let prefix = normalise_prefix(s3.prefix.as_deref().unwrap_or("")).map_err(labelled)?;
    let endpoint = s3_endpoint(&s3.endpoint, &label)?;
    if s3.insecure_tls == Some(true)
        && endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("https://"))
    {
        return Err(Error::invalid(format!(
            "{label} sets insecureTLS, which stashless does not support: put the store's CA certificate in the storage Secret's CA_CERT_DATA instead"
        )));
    }
    let region = s3
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REGION.into());
    // The region becomes part of AWS's host name and of every signature.
    if region.len() > 64
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Error::invalid(format!(
            "{label} spec.backend.s3.region {:?} is not a region name (letters, digits and '-', such as \"eu-west-1\")",
            region.chars().take(64).collect::<String>()
        )));
    }
    let location = Location {
        endpoint,
        region,
        bucket: s3.bucket.clone(),
        prefix,
    };
    crate::repository::validate_bucket(&location.bucket).map_err(labelled)?;

    let (mut credentials, mut ca_pem) = (None, None);
    if let Some(secret_name) = repo
        .spec
        .backend
        .storage_secret_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        let data = read_secret(
            client,
            ns,
            secret_name,
            &format!("{label} storage credentials"),
        )
        .await?;
        let ak = secret_text(&data, ns, secret_name, "AWS_ACCESS_KEY_ID")?;
        let sk = secret_text(&data, ns, secret_name, "AWS_SECRET_ACCESS_KEY")?;
        credentials = match (ak, sk) {
            (Some(a), Some(s)) => Some(StaticCredentials {
                access_key_id: a,
                secret_access_key: s,
                session_token: secret_text(&data, ns, secret_name, "AWS_SESSION_TOKEN")?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::invalid(format!(
                    "Secret {ns}/{secret_name} has AWS_ACCESS_KEY_ID but no AWS_SECRET_ACCESS_KEY"
                )));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(format!(
                    "Secret {ns}/{secret_name} has AWS_SECRET_ACCESS_KEY but no AWS_ACCESS_KEY_ID"
                )));
            }
        };
        ca_pem = data.get("CA_CERT_DATA").cloned().filter(|c| !c.is_empty());
    }
    let tuning = Tuning {
        checksums_when_required: repo
            .annotations()
            .get(CHECKSUM_ANNOTATION)
            .is_some_and(|v| v == "when-required"),
        ..tuning
    };
    Ok(RepositorySettings {
        repository: repo,
        location,
        credentials,
        ca_pem,
        tuning,
    })
}

/// Stash's `Repository.spec.usagePolicy.allowedNamespaces`, for a session in another
/// namespace than the Repository's: `Same` (the default, also when no policy is set)
/// refuses, `All` allows. `Selector` would need the session namespace's labels, which the
/// functions may not read: refused with a reason rather than guessed.
fn check_usage_policy(repo: &Repository, label: &str, session_ns: &str) -> Result<()> {
    let allowed = repo
        .spec
        .usage_policy
        .as_ref()
        .and_then(|p| p.allowed_namespaces.as_ref());
    match allowed.and_then(|a| a.from.as_deref()).unwrap_or("Same") {
        "All" => Ok(()),
        "Selector" => Err(Error::invalid(format!(
            "{label} allows other namespaces by label selector (spec.usagePolicy.allowedNamespaces.from: Selector), which stashless does not evaluate, so it is not used from namespace {session_ns}: set spec.usagePolicy.allowedNamespaces.from: All on the Repository to share it, or use a Repository in namespace {session_ns}"
        ))),
        from => Err(Error::invalid(format!(
            "{label} may only be used from its own namespace (spec.usagePolicy.allowedNamespaces.from: {}), not from namespace {session_ns}: set spec.usagePolicy.allowedNamespaces.from: All on the Repository to share it, or use a Repository in namespace {session_ns}",
            from.chars().take(20).collect::<String>()
        ))),
    }
}

/// Stash users write `s3.amazonaws.com` (or a regional AWS host) for AWS itself: let the
/// SDK resolve that from the region. Anything else is an S3-compatible endpoint.
fn s3_endpoint(raw: &str, label: &str) -> Result<Option<String>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    // Only the base of the URL is ever quoted in a reason: what sits before an '@' or after
    // a '?' or '#' may be credentials (user-info, a presigned token).
    let base = raw.split(['?', '#']).next().unwrap_or("");
    let mut shown: String = base
        .rsplit('@')
        .next()
        .unwrap_or("")
        .chars()
        .take(100)
        .flat_map(char::escape_default)
        .collect();
    if base.contains('@') {
        shown.insert_str(0, "<redacted>@");
    }
    // Requests go to <endpoint>/<bucket>/<key> (path style): a query or fragment would
    // swallow the bucket and key, and a '.'/'..' path segment lets a server resolve them
    // somewhere else than the bucket and prefix the Repository names.
    if base.len() < raw.len() {
        return Err(Error::invalid(format!(
            "{label} spec.backend.s3.endpoint \"{shown}\" has a query or fragment (not shown): give the store's base URL, such as https://s3.example.com"
        )));
    }
    let url: http::Uri = with_scheme.parse().map_err(|_| {
        Error::invalid(format!(
            "{label} spec.backend.s3.endpoint \"{shown}\" is not a URL"
        ))
    })?;
    if !matches!(url.scheme_str(), Some("http") | Some("https")) {
        return Err(Error::invalid(format!(
            "{label} spec.backend.s3.endpoint must be http or https"
        )));
    }
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Error::invalid(format!(
            "{label} spec.backend.s3.endpoint carries credentials in the URL: put them in the storage Secret"
        )));
    }
    // `Uri` takes any text after the host's ':' as a port; the SDK would fail on it later.
    let authority = url.authority().map_or("", |a| a.as_str());
    let port_ok = match authority.rsplit_once(':') {
        Some((_, port)) if !port.contains(']') => port.parse::<u16>().is_ok(),
        _ => true,
    };
    if url.host().is_none_or(str::is_empty) || !port_ok {
        return Err(Error::invalid(format!(
            "{label} spec.backend.s3.endpoint \"{shown}\" is not a URL (host[:port] expected)"
        )));
    }
    if url.path().split('/').any(|s| s == "." || s == "..") {
        return Err(Error::invalid(format!(
            "{label} spec.backend.s3.endpoint \"{shown}\" has a '.' or '..' path segment: give the store's base URL, such as https://s3.example.com"
        )));
    }
    let host = url.host().unwrap_or("");
    if host.ends_with("amazonaws.com") {
        return Ok(None);
    }
    Ok(Some(with_scheme.trim_end_matches('/').to_string()))
}

/// The Vault address an AppBinding's `clientConfig` names (`url`, else `service`), checked:
/// http or https, no credentials in it. A missing scheme (the CRD allows `[scheme://]` in
/// `url` and an empty `service.scheme`, "nothing will be prefixed") means https: plaintext
/// would send the token in clear, so it must be asked for explicitly (`http://`, `scheme: http`).
fn vault_addr(cc: &ClientConfig, ns: &str, label: &str) -> Result<String> {
    let addr = match (&cc.url, &cc.service) {
        (Some(url), _) if !url.is_empty() => {
            let url = url.trim().trim_end_matches('/');
            if url.contains("://") {
                url.to_string()
            } else {
                format!("https://{url}")
            }
        }
        (_, Some(svc)) => {
            let svc_ns = svc.namespace.as_deref().unwrap_or(ns);
            let path = svc.path.as_deref().unwrap_or("").trim_end_matches('/');
            let scheme = match svc.scheme.trim() {
                "" => "https",
                s => s,
            };
            format!("{scheme}://{}.{svc_ns}.svc:{}{path}", svc.name, svc.port)
        }
        _ => {
            return Err(Error::invalid(format!(
                "{label} has neither spec.clientConfig.url nor spec.clientConfig.service"
            )));
        }
    };
    let parsed: http::Uri = addr.parse().map_err(|_| {
        // An unparseable URL with '@' in it may hold a password: never quote it then.
        let shown = if addr.contains('@') {
            "(not shown: it contains '@', as credentials would)".to_string()
        } else {
            format!("{:?}", addr.chars().take(200).collect::<String>())
        };
        Error::invalid(format!(
            "{label} spec.clientConfig.url {shown} is not a URL"
        ))
    })?;
    if parsed.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Error::invalid(format!(
            "{label} spec.clientConfig.url carries credentials: put the token in a Secret instead"
        )));
    }
    // `Uri` reads the scheme case-insensitively: write it lower-case so that checks on
    // the address (plain http or not) need not care.
    let scheme = match parsed.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        _ => {
            return Err(Error::invalid(format!(
                "{label} spec.clientConfig.url must be http or https"
            )));
        }
    };
    let rest = addr.find("://").map_or("", |i| &addr[i..]);
    Ok(format!("{scheme}{rest}"))
}

/// A checked [`vault_addr`] is plain http (its scheme is `http` or `https`, lower-case).
fn is_plain_http(addr: &str) -> bool {
    addr.starts_with("http://")
}

/// Resolve the AppBinding a session targets into a Vault address, TLS settings and token.
pub async fn vault_target(
    client: &Client,
    session_ns: &str,
    target: Option<&TargetRef>,
) -> Result<(AppBinding, VaultTarget)> {
    let target = target
        .ok_or_else(|| Error::invalid("spec.target.ref is not set: name the Vault's AppBinding"))?;
    if let Some(kind) = target.kind.as_deref()
        && kind != "AppBinding"
    {
        return Err(Error::invalid(format!(
            "spec.target.ref.kind is {kind:?}: stashless backs up Vault through an AppBinding (kind: AppBinding)"
        )));
    }
    let ns = target
        .namespace
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(session_ns);
    let ab: AppBinding = get(client, ns, &target.name, "AppBinding", " (spec.target.ref)").await?;
    let label = format!("AppBinding {ns}/{}", target.name);
    refuse_unsupported(&ab, &label)?;
    let cc = &ab.spec.client_config;
    let pins_ns = cc
        .service
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .unwrap_or_else(|| ns.to_string());
    let addr = vault_addr(cc, ns, &label)?;
    let ca_pem = match cc.ca_bundle.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| {
                    Error::invalid(format!("{label} spec.clientConfig.caBundle is not base64"))
                })?,
        ),
    };
    let insecure_skip_tls_verify = cc.insecure_skip_tls_verify.unwrap_or(false);
    if is_plain_http(&addr) {
        if ca_pem.is_some() {
            return Err(Error::invalid(format!(
                "{label} sets spec.clientConfig.caBundle but its Vault address {addr} is plain http: use https, or drop the caBundle to opt in to plaintext"
            )));
        }
        tracing::warn!(appbinding = %label, addr = %addr, "Vault over plain http (the AppBinding asks for it): the token and snapshots travel unencrypted");
    } else if insecure_skip_tls_verify {
        tracing::warn!(appbinding = %label, addr = %addr, "insecureSkipTLSVerify: true: Vault's certificate is not verified, anyone on the path can read the token and snapshots");
    }
    let aws_login = aws_login(&ab, &label)?;
    let token = match aws_login {
        // Logged in at run time with the function's IAM role; no Secret to read.
        Some(_) => String::new(),
        None => token_from_secret(client, &ab, ns, &label).await?,
    };
    Ok((
        ab.clone(),
        VaultTarget {
            addr,
            token,
            aws_login,
            pins: endpoint_pins(client, &pins_ns).await,
            ca_pem,
            insecure_skip_tls_verify,
        },
    ))
}

/// AppBinding fields a user sets expecting an effect stashless does not have: refused with
/// a reason rather than ignored (a Vault that needs them would fail with a TLS error and no
/// hint why).
fn refuse_unsupported(ab: &AppBinding, label: &str) -> Result<()> {
    let cc = &ab.spec.client_config;
    let set = |v: &Option<serde_json::Value>| is_set(v.as_ref());
    let why = if cc.service.as_ref().is_some_and(|s| set(&s.query)) {
        "sets spec.clientConfig.service.query: the Vault address takes no query; remove it"
    } else if cc.server_name.as_deref().is_some_and(|n| !n.is_empty()) {
        "sets spec.clientConfig.serverName, which stashless does not support: Vault's certificate is checked against the host of spec.clientConfig.url or service; remove serverName, or reach Vault by the name its certificate carries"
    } else if set(&ab.spec.secret_transforms) {
        "sets spec.secretTransforms, which stashless does not apply: the Vault token is read from the Secret's key \"token\" as stored; remove secretTransforms and store the token under \"token\""
    } else if set(&ab.spec.tls_secret) {
        "sets spec.tlsSecret: stashless presents no client certificate to Vault; remove spec.tlsSecret, or use a Vault listener that does not require client certificates"
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!("{label} {why}")))
}

/// The Vault token from the AppBinding's Secret. KubeVault puts that Secret in
/// parameters.backupTokenSecretRef; a plain AppBinding uses spec.secret. Either holds the
/// token under `token`.
async fn token_from_secret(
    client: &Client,
    ab: &AppBinding,
    ns: &str,
    label: &str,
) -> Result<String> {
    let token_secret = ab
        .spec
        .parameters
        .as_ref()
        .and_then(|p| p.get("backupTokenSecretRef"))
        .and_then(|r| r.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .or_else(|| ab.spec.secret.as_ref().map(|s| s.name.clone()))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{label} names no token Secret: set spec.parameters.backupTokenSecretRef.name or spec.secret.name"
            ))
        })?;
    let data = read_secret(
        client,
        ns,
        &token_secret,
        &format!("the Vault token of {label}"),
    )
    .await?;
    let token = secret_text(&data, ns, &token_secret, "token")?.ok_or_else(|| {
        Error::invalid(format!(
            "Secret {ns}/{token_secret} has no key \"token\" (the Vault token)"
        ))
    })?;
    // Vault tokens are printable ASCII; anything else cannot be sent as a header as it is.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(format!(
            "Secret {ns}/{token_secret} key \"token\" holds characters a Vault token never has (spaces or non-ASCII): put the token itself there"
        )));
    }
    Ok(token)
}

/// `spec.parameters.awsAuth` of an AppBinding: `{role, mount?, serverIdHeader?, stsRegion?}`
/// selects Vault's `aws` auth method with the function's own IAM role.
fn aws_login(ab: &AppBinding, label: &str) -> Result<Option<AwsLogin>> {
    let Some(v) = ab.spec.parameters.as_ref().and_then(|p| p.get("awsAuth")) else {
        return Ok(None);
    };
    let text = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let role = text("role").ok_or_else(|| {
        Error::invalid(format!(
            "{label} spec.parameters.awsAuth has no role: set awsAuth.role to the Vault aws-auth role to log in as"
        ))
    })?;
    let mount = text("mount").unwrap_or_else(|| "aws".to_string());
    if mount.contains("..")
        || mount.starts_with('/')
        || mount
            .chars()
            .any(|c| c.is_control() || c == '?' || c == '#')
    {
        return Err(Error::invalid(format!(
            "{label} spec.parameters.awsAuth.mount {mount:?} is not an auth mount path"
        )));
    }
    Ok(Some(AwsLogin {
        mount: mount.trim_end_matches('/').to_string(),
        role,
        server_id: text("serverIdHeader"),
        sts_region: text("stsRegion"),
    }))
}

/// Where a session's hooks are called from ([`crate::hooks::Site`]), before the target is
/// resolved: cluster names pinned to endpoint addresses in the session's namespace and in
/// the namespaces the hooks' hosts name (`svc.ns...`). Reads nothing when there are no
/// hooks; the target's address, pins and CA come from the resolved Vault
/// ([`crate::hooks::Site::set_target`]), so its AppBinding is read once.
pub async fn hook_site(
    client: &Client,
    session_ns: &str,
    hooks: &crate::config::hooks::Hooks,
) -> crate::hooks::Site {
    if hooks.is_empty() {
        return crate::hooks::Site::default();
    }
    let mut namespaces = std::collections::BTreeSet::from([session_ns.to_string()]);
    for host in hooks.hosts() {
        let labels: Vec<&str> = host.split('.').collect();
        if labels.len() >= 2 && host.parse::<std::net::IpAddr>().is_err() {
            namespaces.insert(labels[1].to_string());
        }
    }
    let mut pins = Vec::new();
    for ns in namespaces {
        pins.extend(endpoint_pins(client, &ns).await);
    }
    crate::hooks::Site::new(pins)
}

/// Cluster DNS names of the Services and pods in `ns` (`<svc>[.<ns>[.svc[.cluster.local]]]`
/// and `<pod hostname>.<svc>...`) mapped to their ready endpoint addresses, from
/// EndpointSlices. Outside the cluster (a Lambda in the VPC) those names do not resolve,
/// but the addresses are reachable; the Vault client pins the names to them, so TLS still
/// checks the name the certificate was issued for. Vault's `/v1/sys/leader` answers such
/// names too (its `api_addr`). Empty when EndpointSlices cannot be read (no RBAC, or an API
/// server without discovery.k8s.io/v1): then names resolve through DNS as before.
pub async fn endpoint_pins(client: &Client, ns: &str) -> Vec<(String, Vec<std::net::IpAddr>)> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let slices = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(namespace = ns, error = %e, "EndpointSlices not readable; Vault names resolve through DNS");
            return Vec::new();
        }
    };
    let mut pins: std::collections::BTreeMap<String, Vec<std::net::IpAddr>> = Default::default();
    let names = |base: &str| {
        [
            base.to_string(),
            format!("{base}.{ns}"),
            format!("{base}.{ns}.svc"),
            format!("{base}.{ns}.svc.cluster.local"),
        ]
    };
    for slice in slices {
        let Some(svc) = slice.labels().get("kubernetes.io/service-name").cloned() else {
            continue;
        };
        for ep in slice.endpoints.into_iter().flatten() {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let ips: Vec<std::net::IpAddr> =
                ep.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            if ips.is_empty() {
                continue;
            }
            for name in names(&svc) {
                pins.entry(name).or_default().extend(ips.iter().copied());
            }
            if let Some(host) = ep.hostname.as_deref().filter(|h| !h.is_empty()) {
                for name in names(&format!("{host}.{svc}")) {
                    pins.entry(name).or_default().extend(ips.iter().copied());
                }
            }
        }
    }
    pins.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServiceReference;

    fn service(scheme: &str) -> ClientConfig {
        ClientConfig {
            service: Some(ServiceReference {
                scheme: scheme.into(),
                name: "vault".into(),
                namespace: None,
                port: 8200,
                path: None,
                query: None,
            }),
            ..ClientConfig::default()
        }
    }

    fn url(u: &str) -> ClientConfig {
        ClientConfig {
            url: Some(u.into()),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn a_service_without_scheme_is_reached_over_https() {
        let addr = vault_addr(&service(""), "ns", "AppBinding ns/v").unwrap();
        assert_eq!(addr, "https://vault.ns.svc:8200");
        assert!(!is_plain_http(&addr));
    }

    #[test]
    fn an_explicit_scheme_is_kept() {
        let addr = vault_addr(&service("http"), "ns", "l").unwrap();
        assert_eq!(addr, "http://vault.ns.svc:8200");
        assert!(is_plain_http(&addr));
        let addr = vault_addr(&service("https"), "ns", "l").unwrap();
        assert_eq!(addr, "https://vault.ns.svc:8200");
    }

    #[test]
    fn a_url_without_scheme_is_https() {
        let addr = vault_addr(&url("vault.example:8200/"), "ns", "l").unwrap();
        assert_eq!(addr, "https://vault.example:8200");
        let addr = vault_addr(&url("http://10.0.0.5:8200"), "ns", "l").unwrap();
        assert!(is_plain_http(&addr));
        let addr = vault_addr(&url("HTTP://10.0.0.5:8200"), "ns", "l").unwrap();
        assert_eq!(addr, "http://10.0.0.5:8200");
    }

    #[test]
    fn other_schemes_and_credentials_are_refused() {
        for bad in ["ftp://vault:8200", "https://user:pw@vault:8200"] {
            let e = vault_addr(&url(bad), "ns", "l").unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{bad}: {e}");
            assert!(!e.to_string().contains("pw@"), "{e}");
        }
        assert!(vault_addr(&service("ftp"), "ns", "l").is_err());
        assert!(vault_addr(&ClientConfig::default(), "ns", "l").is_err());
    }
}
