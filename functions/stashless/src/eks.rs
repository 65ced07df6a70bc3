//! Reaching an EKS cluster's API server with the function's own IAM role: `DescribeCluster`
//! for the endpoint and CA, and a bearer token made the way aws-iam-authenticator and
//! `aws eks get-token` make it — a presigned STS `GetCallerIdentity` URL carrying the
//! `x-k8s-aws-id: <cluster>` header, as `k8s-aws-v1.` + unpadded base64url. EKS accepts such
//! a token for 15 minutes from its signing time; [`TokenSource`] re-signs after 10.
//!
//! The token is signed with `aws-sigv4`; a test holds it byte for byte to botocore's signer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignatureLocation, SigningSettings};
use base64::Engine;
use kube::Client;

use crate::error::{Error, Result};

/// How long a signed token is used before signing a new one (EKS accepts 15 minutes).
pub const TOKEN_REFRESH: Duration = Duration::from_secs(10 * 60);

/// `X-Amz-Expires` of the presigned URL, as `aws eks get-token` sets it.
const URL_EXPIRES: Duration = Duration::from_secs(60);

/// RFC 3986 unreserved characters stay, everything else is %XX (SigV4's URI encoding).
fn aws_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The bearer token for `cluster` in `region`, signed with `credentials` at `time`.
pub fn token(
    credentials: &Credentials,
    region: &str,
    cluster: &str,
    time: SystemTime,
) -> Result<String> {
    let host = format!("sts.{region}.amazonaws.com");
    let base = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(URL_EXPIRES);
    let (_, mut query) = crate::aws_login::sign_sts(
        credentials,
        region,
        time,
        settings,
        ("GET", &base),
        &[("host", host.as_str()), ("x-k8s-aws-id", cluster)],
        &[],
        "signing the EKS token",
    )?
    .into_parts();
    // The order botocore (and so `aws eks get-token`) writes them in.
    const ORDER: [&str; 7] = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
    ];
    query.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
    let mut url = base;
    for (k, v) in query {
        url.push('&');
        url.push_str(k);
        url.push('=');
        url.push_str(&aws_encode(&v));
    }
    Ok(format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    ))
}

/// Signs tokens with the function's credentials and reuses each for [`TOKEN_REFRESH`].
pub struct TokenSource {
    credentials: SharedCredentialsProvider,
    region: String,
    cluster: String,
    cached: std::sync::Mutex<Option<(String, SystemTime)>>,
}

impl TokenSource {
    pub fn new(credentials: SharedCredentialsProvider, region: &str, cluster: &str) -> Self {
        Self {
            credentials,
            region: region.to_string(),
            cluster: cluster.to_string(),
            cached: std::sync::Mutex::new(None),
        }
    }

    /// The cached token if it is younger than [`TOKEN_REFRESH`].
    pub fn fresh(&self) -> Option<String> {
        let cached = self.cached.lock().expect("token cache lock");
        cached
            .as_ref()
            .filter(|(_, signed)| {
                SystemTime::now()
                    .duration_since(*signed)
                    .unwrap_or_default()
                    < TOKEN_REFRESH
            })
            .map(|(t, _)| t.clone())
    }

    /// A token at least [`TOKEN_REFRESH`] short of expiring (signs a new one if needed).
    pub async fn bearer(&self) -> Result<String> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let credentials = self.credentials.provide_credentials().await.map_err(|e| {
            Error::unavailable("no AWS credentials for the EKS token", Some(Box::new(e)))
        })?;
        let now = SystemTime::now();
        let fresh = token(&credentials, &self.region, &self.cluster, now)?;
        *self.cached.lock().expect("token cache lock") = Some((fresh.clone(), now));
        Ok(fresh)
    }
}

/// A tower layer putting `Authorization: Bearer <token>` on every request. The token is
/// made fresh in `poll_ready` (signing may have to fetch credentials), so `call` stays
/// synchronous and the inner service need not be `Clone`.
#[derive(Clone)]
pub struct BearerLayer(pub Arc<TokenSource>);

impl<S> tower::Layer<S> for BearerLayer {
    type Service = Bearer<S>;
    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            tokens: self.0.clone(),
            header: None,
            refreshing: None,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service [`BearerLayer`] makes.
pub struct Bearer<S> {
    inner: S,
    tokens: Arc<TokenSource>,
    header: Option<http::HeaderValue>,
    refreshing: Option<futures::future::BoxFuture<'static, Result<String>>>,
}

impl<S, B> tower::Service<http::Request<B>> for Bearer<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, std::result::Result<S::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), BoxError>> {
        use std::task::Poll;
        let token = match self.tokens.fresh() {
            Some(t) => t,
            None => {
                let tokens = self.tokens.clone();
                let fut = self
                    .refreshing
                    .get_or_insert_with(|| Box::pin(async move { tokens.bearer().await }));
                match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => {
                        self.refreshing = None;
                        r?
                    }
                }
            }
        };
        let mut header = http::HeaderValue::from_str(&format!("Bearer {token}"))?;
        header.set_sensitive(true);
        self.header = Some(header);
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(h) = &self.header {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, h.clone());
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// The cluster's API endpoint and CA bundle (PEM) from `eks:DescribeCluster`.
pub async fn describe(eks: &aws_sdk_eks::Client, cluster: &str) -> Result<(String, Vec<u8>)> {
    let out = eks
        .describe_cluster()
        .name(cluster)
        .send()
        .await
        .map_err(|e| {
            let message = format!(
                "eks:DescribeCluster {cluster}: {} (does the function's role allow eks:DescribeCluster on this cluster?)",
                aws_sdk_eks::error::DisplayErrorContext(&e)
            );
            // Refused (no such cluster, access denied): only a change fixes it. Anything
            // else (network, throttling, AWS errors) may pass on a retry.
            let refused = matches!(&e, aws_sdk_eks::error::SdkError::ServiceError(se)
                if se.raw().status().is_client_error() && se.raw().status().as_u16() != 429);
            if refused {
                Error::Invalid { message, source: Some(Box::new(e)) }
            } else {
                Error::Unavailable { message, source: Some(Box::new(e)) }
            }
        })?;
    let c = out.cluster.ok_or_else(|| {
        Error::invalid(format!(
            "eks:DescribeCluster {cluster}: no cluster in the answer"
        ))
    })?;
    let endpoint = c.endpoint.filter(|e| !e.is_empty()).ok_or_else(|| {
        Error::invalid(format!(
            "EKS cluster {cluster} has no endpoint yet (still creating?)"
        ))
    })?;
    let ca = c
        .certificate_authority
        .and_then(|a| a.data)
        .ok_or_else(|| {
            Error::invalid(format!(
                "EKS cluster {cluster} reports no certificate authority"
            ))
        })?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca.trim())
        .map_err(|e| {
            Error::invalid(format!(
                "EKS cluster {cluster}: certificate authority is not base64: {e}"
            ))
        })?;
    Ok((endpoint, pem))
}

/// A kube client for `cluster`: endpoint and CA from DescribeCluster, and every request
/// carrying a fresh bearer token from `tokens`.
pub async fn client(endpoint: &str, ca_pem: &[u8], tokens: Arc<TokenSource>) -> Result<Client> {
    let uri = endpoint.parse().map_err(|e| {
        Error::invalid_because(format!("EKS endpoint {endpoint:?} is not a URL"), e)
    })?;
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(pem_certificates(ca_pem)?);
    let layer = BearerLayer(tokens);
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| Error::kube("building the EKS client", e))?;
    Ok(builder.with_layer(&layer).build())
}

/// DER certificates of a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid_because("CA bundle is not PEM", e))?;
    if certs.is_empty() {
        return Err(Error::invalid("CA bundle holds no certificate"));
    }
    Ok(certs)
}
