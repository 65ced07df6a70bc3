//! The proof of an IAM identity that Vault's and OpenBao's `aws` auth method accepts: a
//! `sts:GetCallerIdentity` request signed (SigV4, headers) with the function's own
//! credentials but not sent. Vault replays it to STS and learns who signed it. Only AWS is
//! known here; `vault::Vault::login_aws` hands the request to Vault.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SigningInstructions, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

use crate::error::{Error, Result};

/// The body every GetCallerIdentity login signs.
pub const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// Header Vault compares with its `iam_server_id_header_value`, if configured.
pub const SERVER_ID_HEADER: &str = "X-Vault-AWS-IAM-Server-ID";

/// A signed request, in the parts Vault's login endpoint takes.
#[derive(Clone)]
pub struct CallerIdentityRequest {
    pub method: &'static str,
    pub url: String,
    pub body: &'static str,
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for CallerIdentityRequest {
    // The signature is a credential for a few minutes: never logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerIdentityRequest")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Sign GetCallerIdentity for the global STS endpoint (`sts_region` None, signed for
/// us-east-1: Vault's default) or `sts.<region>.amazonaws.com`, with the server-id header
/// when Vault requires one.
pub fn caller_identity_request(
    credentials: &Credentials,
    sts_region: Option<&str>,
    server_id: Option<&str>,
    time: SystemTime,
) -> Result<CallerIdentityRequest> {
    let (host, region) = match sts_region {
        None => ("sts.amazonaws.com".to_string(), "us-east-1"),
        Some(r) => (format!("sts.{r}.amazonaws.com"), r),
    };
    let url = format!("https://{host}/");
    let mut headers = BTreeMap::from([
        ("Host".to_string(), host.clone()),
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ]);
    if let Some(id) = server_id {
        headers.insert(SERVER_ID_HEADER.to_string(), id.to_string());
    }
    let signing_headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (signed, _) = sign_sts(
        credentials,
        region,
        time,
        SigningSettings::default(),
        ("POST", &url),
        &signing_headers,
        BODY.as_bytes(),
        "signing GetCallerIdentity",
    )?
    .into_parts();
    for h in signed {
        headers.insert(h.name().to_string(), h.value().to_string());
    }
    Ok(CallerIdentityRequest {
        method: "POST",
        url,
        body: BODY,
        headers,
    })
}

/// SigV4-sign a request to STS in `region` at `time`: the headers or query parameters to
/// add (which of the two depends on `settings.signature_location`). `what` names the
/// purpose in errors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sign_sts(
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
    settings: SigningSettings,
    (method, url): (&str, &str),
    headers: &[(&str, &str)],
    body: &[u8],
    what: &str,
) -> Result<SigningInstructions> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| Error::invalid_because(what, e))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| Error::invalid_because(what, e))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| Error::invalid_because(what, e))?
        .into_parts();
    Ok(instructions)
}
