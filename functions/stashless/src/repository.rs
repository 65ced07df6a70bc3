//! The backup repository in S3: object layout, manifests, the bounded multipart writer,
//! listing, deletion. Knows nothing of Kubernetes or Vault.
//!
//! Layout under the Repository's prefix:
//! ```text
//! <prefix>/snapshots/<namespace>/<session>.snap   the raft snapshot, byte for byte as Vault sent it
//! <prefix>/snapshots/<namespace>/<session>.json   its manifest, written only after the snapshot verified
//! ```
//! A snapshot without a manifest is not a snapshot (an interrupted run): listings ignore it.

use std::fmt;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::archive::{ArchiveFile, SnapshotMeta};
use crate::error::{Error, ErrorKind, Result};

pub const SNAPSHOT_EXT: &str = ".snap";
pub const MANIFEST_EXT: &str = ".json";
/// The sealed unseal keys beside a snapshot (not `.json`: listings take those as manifests).
pub const ESCROW_EXT: &str = ".escrow";
/// Object metadata (`x-amz-meta-…`) naming the session that uploaded a snapshot.
pub const SESSION_UID_METADATA: &str = "stashless-session-uid";

/// Where a Repository lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// None: AWS S3 proper (endpoint resolved by the SDK from the region).
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Normalised: no leading or trailing '/', may be empty.
    pub prefix: String,
}

/// Static credentials from the Repository's storage Secret.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Tuning for uploads. Memory held by one upload is at most `part_size × (parts_in_flight + 1)`.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub part_size: usize,
    pub parts_in_flight: usize,
    /// Compute request checksums only when S3 requires them (some S3-compatible stores
    /// break on the SDK's default checksums).
    pub checksums_when_required: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            part_size: 8 * 1024 * 1024,
            parts_in_flight: 4,
            checksums_when_required: false,
        }
    }
}

/// Check and normalise a Repository prefix: no `..` segments, no control characters,
/// no leading `/` games: everything stashless writes stays under this prefix. Empty
/// segments (leading, trailing or doubled '/') are dropped, as restic's path joining does.
/// Messages start with the field; the caller puts the Repository's name before them.
pub fn normalise_prefix(prefix: &str) -> Result<String> {
    let shown = || -> String {
        prefix
            .chars()
            .take(80)
            .flat_map(char::escape_default)
            .collect()
    };
    if prefix.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "spec.backend.s3.prefix \"{}\" contains control characters: use letters, digits, '-', '_', '.' and '/'",
            shown()
        )));
    }
    let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == ".." || *s == ".") {
        return Err(Error::invalid(format!(
            "spec.backend.s3.prefix \"{}\" contains '.' or '..' segments, which would lead out of the prefix: name the folder directly, such as \"vault/prod\"",
            shown()
        )));
    }
    if prefix.len() > 512 {
        return Err(Error::invalid(format!(
            "spec.backend.s3.prefix is {} bytes, longer than the 512 stashless accepts (S3 keys end at 1024)",
            prefix.len()
        )));
    }
    Ok(segments.join("/"))
}

/// S3 bucket naming rules (the subset that matters for path-style and virtual-host access).
pub fn validate_bucket(bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric()
        && !bucket.contains("..")
        // S3 refuses names shaped like an IPv4 address.
        && bucket.parse::<std::net::Ipv4Addr>().is_err();
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "spec.backend.s3.bucket {:?} is not a valid bucket name (3-63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, not an IP address)",
            bucket.chars().take(80).collect::<String>()
        )))
    }
}

/// What we know about one stored snapshot. Written as JSON beside it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    /// `<namespace>/<session>`: what `rules[].snapshots` names in a RestoreSession.
    pub name: String,
    pub key: String,
    pub session: ObjectId,
    pub invoker: Invoker,
    pub target: TargetId,
    pub created_at: DateTime<Utc>,
    pub size: u64,
    pub sha256: String,
    /// The object's ETag when it was written: a restore refuses an object whose ETag or
    /// size changed since (modified or replaced after the backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The object's S3 version (versioned buckets, Object Lock): restores and `verify` read
    /// exactly this version, whatever was written under the key since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    pub duration_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_cluster_name: Option<String>,
    pub raft: SnapshotMeta,
    pub files: Vec<ArchiveFile>,
    /// The cluster's seal and what of its unseal keys was escrowed beside the snapshot
    /// (never key material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealRecord>,
    /// Set on the snapshot a restore takes of its target before applying another one: the
    /// undo. Retention keeps it until `keepUntil`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_restore: Option<PreRestore>,
}

/// The seal of the cluster a snapshot came from, and the escrow of its keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SealRecord {
    /// Vault's seal type (`shamir`, `awskms`, ...), from `sys/seal-status`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Key shares and threshold (Shamir), from `sys/seal-status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// The auto-unseal KMS key (from the AppBinding annotation `stashless.io/seal-kms-key-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key_id: Option<String>,
    /// What was escrowed; None with `notEscrowed` saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<EscrowRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_escrowed: Option<String>,
}

/// Where an escrow is and what it holds (counts, never keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EscrowRecord {
    pub key: String,
    /// The unsealer store the keys were read from: `kubernetesSecret` or `awsKmsSsm`.
    pub store: String,
    /// Where in it, for a person (`Secret demo/vault-keys (keys k8s...-unseal-key-<i>)`).
    pub source: String,
    pub key_prefix: String,
    pub keys: u32,
    pub root_token: bool,
    /// The KMS key the escrow's data key is sealed under.
    pub kms_key_id: String,
}

/// The snapshot a restore took of its target first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreRestore {
    /// `<namespace>/<name>` of the RestoreSession.
    pub restore_session: String,
    /// The snapshot that restore applied.
    pub replaced_by: String,
    pub keep_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectId {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Invoker {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetId {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub address: String,
}

/// One Repository, opened.
#[derive(Debug, Clone)]
pub struct Store {
    s3: Client,
    pub location: Location,
    pub tuning: Tuning,
}

impl Store {
    /// Build the S3 client for a Repository. Static credentials when the storage Secret has
    /// them, else the function's own (environment, web identity, container/instance role).
    pub async fn open(
        location: Location,
        credentials: Option<StaticCredentials>,
        ca_pem: Option<Vec<u8>>,
        tuning: Tuning,
    ) -> Result<Store> {
        crate::install_crypto_provider();
        validate_bucket(&location.bucket)?;
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new(location.region.clone()));
        if let Some(endpoint) = &location.endpoint {
            b = b
                .endpoint_url(endpoint.trim_end_matches('/'))
                .force_path_style(true);
        }
        match credentials {
            Some(c) => {
                b = b.credentials_provider(Credentials::new(
                    c.access_key_id,
                    c.secret_access_key,
                    c.session_token,
                    None,
                    "repository-secret",
                ));
            }
            None => {
                let chain =
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .region(Region::new(location.region.clone()))
                        .build()
                        .await;
                b = b.credentials_provider(chain);
            }
        }
        if tuning.checksums_when_required {
            b = b
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        if let Some(pem) = ca_pem {
            use aws_smithy_http_client::tls;
            let ctx = tls::TlsContext::builder()
                .with_trust_store(tls::TrustStore::default().with_pem_certificate(pem))
                .build()
                .map_err(|e| {
                    Error::invalid(format!(
                        "storage Secret CA_CERT_DATA is not a usable PEM bundle: {e}"
                    ))
                })?;
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(ctx)
                .build_https();
            b = b.http_client(http);
        }
        Ok(Store {
            s3: Client::from_conf(b.build()),
            location,
            tuning,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.location.bucket
    }

    fn under_prefix(&self, rest: &str) -> String {
        if self.location.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.location.prefix)
        }
    }

    pub fn snapshots_root(&self) -> String {
        self.under_prefix("snapshots/")
    }

    pub fn snapshot_key(&self, name: &str) -> String {
        self.under_prefix(&format!("snapshots/{name}{SNAPSHOT_EXT}"))
    }

    pub fn manifest_key(&self, name: &str) -> String {
        self.under_prefix(&format!("snapshots/{name}{MANIFEST_EXT}"))
    }

    pub fn escrow_key(&self, name: &str) -> String {
        self.under_prefix(&format!("snapshots/{name}{ESCROW_EXT}"))
    }

    /// Write a snapshot's escrow (never over an existing one).
    pub async fn put_escrow(&self, name: &str, envelope: &crate::keys::Envelope) -> Result<String> {
        let key = self.escrow_key(name);
        let body = serde_json::to_vec_pretty(envelope).expect("an envelope serialises");
        self.s3
            .put_object()
            .bucket(self.bucket())
            .key(&key)
            .content_type("application/json")
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("writing the unseal-key escrow", e))?;
        Ok(key)
    }

    /// A snapshot's escrow: None when its object is gone.
    pub async fn escrow_of(&self, record: &EscrowRecord) -> Result<Option<crate::keys::Envelope>> {
        let out = match self
            .s3
            .get_object()
            .bucket(self.bucket())
            .key(&record.key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(e))
                if e.raw().status().as_u16() == 404 && e.err().code() != Some("NoSuchBucket") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(self.err(&format!("reading the escrow {}", record.key), e)),
        };
        let body = out.body.collect().await.map_err(|e| {
            self.plain_err(&format!("reading the escrow {}: {e}", record.key), true)
        })?;
        serde_json::from_slice(&body.into_bytes())
            .map(Some)
            .map_err(|e| {
                Error::Integrity(format!(
                    "the escrow {} is not an escrow object: {e}",
                    record.key
                ))
            })
    }

    fn err<E>(&self, what: &str, e: SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        storage_error(&self.location, what, e)
    }

    /// Start a multipart upload of the snapshot `name`, for the session `session_uid`
    /// (stored as object metadata, so an object left without its manifest can be told to be
    /// this session's own).
    pub async fn begin_upload(&self, name: &str, session_uid: &str) -> Result<MultipartUpload> {
        let key = self.snapshot_key(name);
        let out = self
            .s3
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(&key)
            .content_type("application/gzip")
            .metadata(SESSION_UID_METADATA, session_uid)
            .send()
            .await
            .map_err(|e| self.err("starting the upload", e))?;
        let upload_id = out
            .upload_id
            .ok_or_else(|| self.plain_err("CreateMultipartUpload returned no upload id", true))?;
        Ok(MultipartUpload {
            s3: self.s3.clone(),
            location: self.location.clone(),
            key,
            upload_id,
            part_size: self.tuning.part_size.max(5 * 1024 * 1024),
            max_in_flight: self.tuning.parts_in_flight.max(1),
            buf: BytesMut::new(),
            next_part: 1,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            finished: false,
        })
    }

    fn plain_err(&self, message: &str, retryable: bool) -> Error {
        Error::Storage {
            bucket: self.location.bucket.clone(),
            message: message.into(),
            kind: ErrorKind::retry_helps(retryable),
            source: None,
        }
    }

    /// Size and ETag of an object (HEAD), None when absent.
    pub async fn object_info(&self, key: &str) -> Result<Option<Stored>> {
        self.version_info(key, None).await
    }

    /// The stored snapshot a manifest describes: the version it recorded, when it did.
    pub async fn snapshot_info(&self, manifest: &Manifest) -> Result<Option<Stored>> {
        self.version_info(&manifest.key, manifest.version_id.as_deref())
            .await
    }

    async fn version_info(&self, key: &str, version: Option<&str>) -> Result<Option<Stored>> {
        match self
            .s3
            .head_object()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
        {
            Ok(o) => Ok(Some(Stored {
                size: o.content_length.unwrap_or(0).max(0) as u64,
                version_id: o.version_id,
                session_uid: o.metadata.and_then(|mut m| m.remove(SESSION_UID_METADATA)),
                etag: o.e_tag,
            })),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => Ok(None),
            Err(e) => Err(self.err("reading object metadata", e)),
        }
    }

    /// Write a snapshot's manifest; never over an existing one (If-None-Match: a stored
    /// manifest is never replaced, whatever Object Lock or versioning the bucket has).
    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        let body = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        self.s3
            .put_object()
            .bucket(self.bucket())
            .key(self.manifest_key(&manifest.name))
            .content_type("application/json")
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("writing the manifest", e))?;
        Ok(())
    }

    /// Every manifest in the Repository, oldest first. Unreadable manifests are reported,
    /// not skipped silently: a listing that hides a snapshot would mislead retention.
    pub async fn list_manifests(&self) -> Result<Vec<Manifest>> {
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(self.snapshots_root())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("listing snapshots", e))?;
            for obj in page.contents.unwrap_or_default() {
                if let Some(k) = obj.key
                    && k.ends_with(MANIFEST_EXT)
                {
                    keys.push(k);
                }
            }
        }
        let mut manifests: Vec<Manifest> = futures::stream::iter(keys)
            .map(|k| async move {
                // Listed a moment ago: gone now means removed meanwhile (retention elsewhere).
                match self.get_manifest(&k).await {
                    Ok(m) => Ok(Some(m)),
                    Err(ManifestRead::Absent) => Ok(None),
                    Err(ManifestRead::Failed(e)) => Err(e),
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        manifests.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        Ok(manifests)
    }

    /// The manifest of snapshot `name`, if one is stored.
    /// One GET, not HEAD then GET: a GET's error has a body, so a refusal says why (wrong
    /// keys, denied), where a HEAD answers a bare status.
    pub async fn manifest_of(&self, name: &str) -> Result<Option<Manifest>> {
        let key = self.manifest_key(name);
        match self.get_manifest(&key).await {
            Ok(m) => Ok(Some(m)),
            Err(ManifestRead::Absent) => Ok(None),
            Err(ManifestRead::Failed(e)) => Err(e),
        }
    }

    async fn get_manifest(&self, key: &str) -> std::result::Result<Manifest, ManifestRead> {
        let out = match self
            .s3
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(e))
                if e.raw().status().as_u16() == 404 && e.err().code() != Some("NoSuchBucket") =>
            {
                return Err(ManifestRead::Absent);
            }
            Err(e) => return Err(self.err(&format!("reading manifest {key}"), e).into()),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| self.plain_err(&format!("reading manifest {key}: {e}"), true))?;
        Ok(serde_json::from_slice(&body.into_bytes()).map_err(|e| {
            self.plain_err(&format!("manifest {key} is not valid JSON: {e}"), false)
        })?)
    }

    /// Remove one object (in a versioned bucket: a delete marker; the versions stay until
    /// the lifecycle expires them).
    pub async fn delete_object(&self, key: &str) -> Result<()> {
        self.s3
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| self.err(&format!("deleting {key}"), e))?;
        Ok(())
    }

    /// Remove a stored snapshot with its escrow (last: an interruption leaves at worst a
    /// sealed escrow nobody lists).
    pub async fn delete_stored(&self, manifest: &Manifest) -> Result<()> {
        self.delete_snapshot(&manifest.name).await?;
        if let Some(escrow) = manifest.seal.as_ref().and_then(|s| s.escrow.as_ref()) {
            self.delete_object(&escrow.key).await?;
        }
        Ok(())
    }

    /// Remove a snapshot: manifest first, so an interruption leaves at worst an orphan
    /// object nobody lists, never a manifest pointing at nothing.
    pub async fn delete_snapshot(&self, name: &str) -> Result<()> {
        for key in [self.manifest_key(name), self.snapshot_key(name)] {
            self.delete_object(&key).await?;
        }
        Ok(())
    }

    /// Abort the incomplete multipart uploads of snapshot `name`: what a function killed
    /// mid-upload leaves behind. Returns how many were aborted.
    pub async fn abort_uploads_of(&self, name: &str) -> Result<usize> {
        let key = self.snapshot_key(name);
        let out = self
            .s3
            .list_multipart_uploads()
            .bucket(self.bucket())
            .prefix(&key)
            .send()
            .await
            .map_err(|e| self.err(&format!("listing the uploads of {key}"), e))?;
        let mut aborted = 0;
        for u in out.uploads.unwrap_or_default() {
            if let (Some(k), Some(id)) = (u.key.as_deref(), u.upload_id.as_deref())
                && k == key
            {
                abort_upload(&self.s3, &self.location, k, id).await;
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    /// Stream the snapshot a manifest describes, at the version it recorded (for restores
    /// and `verify`).
    pub async fn open_snapshot(&self, manifest: &Manifest) -> Result<ByteStream> {
        let key = &manifest.key;
        let out = self
            .s3
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(manifest.version_id.clone())
            .send()
            .await
            .map_err(|e| self.err(&format!("reading {key}"), e))?;
        Ok(out.body)
    }
}

/// Reading one manifest: absent (404) is an answer, not an error.
enum ManifestRead {
    Absent,
    Failed(Error),
}

impl From<Error> for ManifestRead {
    fn from(e: Error) -> Self {
        ManifestRead::Failed(e)
    }
}

fn storage_error<E>(location: &Location, what: &str, e: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (message, retryable) = match &e {
        // An answer with neither code nor message (e.g. a 200 whose body did not parse):
        // what the SDK said about it is the only clue.
        SdkError::ServiceError(se)
            if se.err().code().unwrap_or("").is_empty()
                && se.err().message().unwrap_or("").is_empty() =>
        {
            let status = se.raw().status().as_u16();
            // HEAD answers carry no body: the status is all there is to go on.
            let hint = match status {
                403 => {
                    " — access denied: check the storage Secret's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the bucket policy"
                }
                _ => "",
            };
            (
                format!(
                    "{what}: HTTP {status}{hint}: the answer could not be read: {}",
                    DisplayErrorContext(&e)
                ),
                status >= 500 || status == 429,
            )
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let msg = se.err().message().unwrap_or("");
            let lower = msg.to_lowercase();
            let hint = match code {
                _ if lower.contains("signature") || lower.contains("access key") => {
                    " — the storage Secret's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are wrong"
                }
                "NoSuchBucket" => {
                    " — the bucket does not exist: create it or fix spec.backend.s3.bucket"
                }
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
                    " — the storage Secret's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are wrong"
                }
                "AccessDenied" | "Forbidden" => {
                    " — the credentials are not allowed to write under this prefix"
                }
                "ExpiredToken" | "TokenRefreshRequired" => " — the credentials expired",
                "PreconditionFailed" => {
                    " — an object of that name is stored already, and stashless never overwrites a stored snapshot or manifest"
                }
                _ if lower.contains("object lock") => {
                    " — the bucket has Object Lock, whose writes need a checksum: remove the stashless.io/s3-checksums annotation from the Repository"
                }
                _ if status == 403 => {
                    " — access denied: check the storage Secret's keys and the bucket policy"
                }
                _ if status == 404 => " — not found: check the bucket name and endpoint",
                _ => "",
            };
            (
                format!("{what}: HTTP {status} {code} {msg}{hint}").replace("  ", " "),
                status >= 500 || status == 429 || code == "SlowDown" || code == "RequestTimeout",
            )
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (
            format!(
                "{what}: cannot reach {}: {}",
                location.endpoint.as_deref().unwrap_or("S3"),
                DisplayErrorContext(&e)
            ),
            true,
        ),
        SdkError::ResponseError(_) => (
            format!(
                "{what}: the answer from {} could not be read: {}",
                location.endpoint.as_deref().unwrap_or("S3"),
                DisplayErrorContext(&e)
            ),
            true,
        ),
        _ => (format!("{what}: {}", DisplayErrorContext(&e)), false),
    };
    Error::Storage {
        bucket: location.bucket.clone(),
        message,
        kind: ErrorKind::retry_helps(retryable),
        source: Some(Box::new(e)),
    }
}

/// What S3 holds for an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub size: u64,
    pub etag: Option<String>,
    /// Set by versioned buckets.
    pub version_id: Option<String>,
    /// The session that uploaded it (object metadata; None for objects of older versions).
    pub session_uid: Option<String>,
}

/// A multipart upload in progress. Memory is bounded by `part_size × (parts_in_flight + 1)`.
/// Dropped without `complete` or `abort` (a panic, a cancelled future), it aborts itself
/// in the background so no incomplete upload is left behind.
pub struct MultipartUpload {
    s3: Client,
    location: Location,
    key: String,
    upload_id: String,
    part_size: usize,
    max_in_flight: usize,
    buf: BytesMut,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart>>,
    done: Vec<CompletedPart>,
    finished: bool,
}

impl MultipartUpload {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Queue bytes; full parts go out as soon as a slot is free.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve(self.part_size);
            }
            let take = (self.part_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<()> {
        while self.in_flight.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        let body: Bytes = self.buf.split().freeze();
        let number = self.next_part;
        self.next_part += 1;
        let s3 = self.s3.clone();
        let (bucket, key, upload_id) = (
            self.location.bucket.clone(),
            self.key.clone(),
            self.upload_id.clone(),
        );
        let location = self.location.clone();
        self.in_flight.spawn(async move {
            // The SDK retries transient failures (5xx, SlowDown, resets) itself: a Bytes body replays.
            let out = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| storage_error(&location, &format!("uploading part {number}"), e))?;
            // Part number and ETag only: the upload was created without a checksum
            // algorithm, so echoing the SDK's per-request part checksums makes some servers
            // refuse the completion. The whole stream is covered by our own sha256.
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build())
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(part)) => {
                self.done.push(part?);
                Ok(())
            }
            Some(Err(join)) => Err(Error::Storage {
                bucket: self.location.bucket.clone(),
                message: format!("part upload task failed: {join}"),
                kind: ErrorKind::Unavailable,
                source: Some(Box::new(join)),
            }),
            None => Ok(()),
        }
    }

    /// Send the last part, wait for all, and complete. Only call once the stream verified.
    /// On an error the upload is still open (or completed but unchecked): the caller aborts
    /// it and removes the object.
    pub async fn complete(&mut self) -> Result<Stored> {
        if !self.buf.is_empty() || self.next_part == 1 {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        self.done.sort_by_key(|p| p.part_number);
        let parts = std::mem::take(&mut self.done);
        // If-None-Match: never over a stored snapshot (S3 answers 412 when the key exists).
        let completed = self
            .s3
            .complete_multipart_upload()
            .bucket(&self.location.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| storage_error(&self.location, "completing the upload", e))?;
        self.finished = true;
        // The version just written, not whatever the key holds by now.
        let head = self
            .s3
            .head_object()
            .bucket(&self.location.bucket)
            .key(&self.key)
            .set_version_id(completed.version_id)
            .send()
            .await
            .map_err(|e| storage_error(&self.location, "checking the uploaded object", e))?;
        Ok(Stored {
            size: head.content_length.unwrap_or(0).max(0) as u64,
            etag: head.e_tag,
            version_id: head.version_id,
            session_uid: head
                .metadata
                .and_then(|mut m| m.remove(SESSION_UID_METADATA)),
        })
    }

    /// Cancel: stop part uploads and abort the upload so S3 keeps nothing.
    pub async fn abort(mut self) {
        self.finished = true;
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        abort_upload(&self.s3, &self.location, &self.key, &self.upload_id).await;
    }
}

async fn abort_upload(s3: &Client, location: &Location, key: &str, upload_id: &str) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=4 {
        match s3
            .abort_multipart_upload()
            .bucket(&location.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(attempt, error = %DisplayErrorContext(&e), key, "aborting the multipart upload failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

impl Drop for MultipartUpload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.in_flight.abort_all();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (s3, location, key, upload_id) = (
                self.s3.clone(),
                self.location.clone(),
                self.key.clone(),
                self.upload_id.clone(),
            );
            handle.spawn(async move { abort_upload(&s3, &location, &key, &upload_id).await });
        }
    }
}
