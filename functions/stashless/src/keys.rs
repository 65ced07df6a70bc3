//! Unseal keys for the bad day: read from where the AppBinding says the unsealer keeps
//! them, sealed under KMS envelope encryption bound to one snapshot, opened again by a
//! restore, and written to the new cluster's unsealer store.
//!
//! Where the keys live (the AppBinding says):
//! - KubeVault's `spec.parameters.unsealer.mode.kubernetesSecret.secretName`: a Secret in
//!   the AppBinding's namespace holding `<prefix>-unseal-key-<i>` and `<prefix>-root-token`
//!   (KubeVault's unsealer names);
//! - KubeVault's `spec.parameters.unsealer.mode.awsKmsSsm`: SSM parameters named
//!   `<ssmKeyPrefix><prefix>-unseal-key-<i>`, each the base64 of a KMS ciphertext under
//!   `kmsKeyID` with the context `Tool=vault-unsealer`, as KubeVault's unsealer writes them;
//! - without KubeVault, the annotation `stashless.io/unseal-keys-secret: <name>`: a Secret
//!   with `unseal-key-<i>` (and `root-token`), optionally behind a prefix like KubeVault's.
//!
//! The prefix is `stashless.io/unseal-key-prefix` when set; in a Secret, the one prefix its
//! keys carry (several: the annotation must choose).
//!
//! Key material exists in clear only in this process's memory: [`UnsealKeys`] never prints
//! it, the escrow object holds it under AES-256-GCM with a data key from KMS
//! `GenerateDataKey`, bound (KMS encryption context and GCM associated data) to the
//! snapshot's name and sha256, so an escrow swapped beside another snapshot does not open.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::AppBinding;
use crate::cluster::read_secret;
use crate::error::{Error, ErrorKind, Result, api_code};

/// AppBinding annotation: the Secret holding the unseal keys of a Vault installed without
/// KubeVault.
pub const ANNOTATION_KEYS_SECRET: &str = "stashless.io/unseal-keys-secret";
/// AppBinding annotation: the key prefix in the unsealer store (KubeVault's
/// `k8s.<cluster>.<namespace>.<name>`, or none).
pub const ANNOTATION_KEY_PREFIX: &str = "stashless.io/unseal-key-prefix";
/// AppBinding annotation: the KMS key id of an auto-unseal (awskms) seal, recorded in the
/// manifest so a restore knows which key the new cluster must use.
pub const ANNOTATION_SEAL_KEY_ID: &str = "stashless.io/seal-kms-key-id";
/// KubeVault's unsealer encrypts each SSM value under this KMS encryption context.
const KUBEVAULT_KMS_CONTEXT: (&str, &str) = ("Tool", "vault-unsealer");
/// More shares than Vault allows (255 is its limit; nobody configures more than a few).
const MAX_KEYS: usize = 32;
/// The sealer name of the local demo key, written into every escrow it seals.
pub const LOCAL_DEMO_KEY_ID: &str = "local-demo-key-NOT-FOR-PRODUCTION";

/// The unseal keys (and root token, when the store keeps it) of one cluster. Never
/// printed: `Debug` shows only how many there are.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnsealKeys {
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_token: Option<String>,
}

impl fmt::Debug for UnsealKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UnsealKeys {{ {} key(s), root token: {} }}",
            self.keys.len(),
            self.root_token.is_some()
        )
    }
}

/// Where an unsealer keeps one cluster's keys.
#[derive(Debug, Clone, PartialEq)]
pub enum UnsealerStore {
    /// A Secret in the AppBinding's namespace (KubeVault `kubernetesSecret`, or named by
    /// [`ANNOTATION_KEYS_SECRET`]).
    KubernetesSecret { namespace: String, name: String },
    /// KubeVault `awsKmsSsm`: SSM parameters, each KMS-encrypted.
    AwsKmsSsm {
        kms_key_id: String,
        region: Option<String>,
        ssm_key_prefix: String,
        endpoint: Option<String>,
    },
}

impl UnsealerStore {
    /// KubeVault's mode name.
    pub fn kind(&self) -> &'static str {
        match self {
            UnsealerStore::KubernetesSecret { .. } => "kubernetesSecret",
            UnsealerStore::AwsKmsSsm { .. } => "awsKmsSsm",
        }
    }

    /// Where, for a person (no key material).
    pub fn describe(&self, prefix: &str) -> String {
        let named = if prefix.is_empty() {
            "unseal-key-<i>".to_string()
        } else {
            format!("{prefix}-unseal-key-<i>")
        };
        match self {
            UnsealerStore::KubernetesSecret { namespace, name } => {
                format!("Secret {namespace}/{name} (keys {named})")
            }
            UnsealerStore::AwsKmsSsm {
                ssm_key_prefix,
                kms_key_id,
                ..
            } => format!("SSM parameters {ssm_key_prefix}{named} (KMS key {kms_key_id})"),
        }
    }
}

/// The unsealer store an AppBinding names: None when it names none; an error (a reason for
/// a person) when it names one stashless cannot read.
pub fn store_of(ab: &AppBinding) -> std::result::Result<Option<UnsealerStore>, String> {
    let ns = ab.namespace().unwrap_or_default();
    if let Some(name) = ab
        .annotations()
        .get(ANNOTATION_KEYS_SECRET)
        .filter(|n| !n.is_empty())
    {
        return Ok(Some(UnsealerStore::KubernetesSecret {
            namespace: ns,
            name: name.clone(),
        }));
    }
    let Some(mode) = ab
        .spec
        .parameters
        .as_ref()
        .and_then(|p| p.get("unsealer"))
        .and_then(|u| u.get("mode"))
        .and_then(Value::as_object)
    else {
        return Ok(None);
    };
    let text = |v: &Value, field: &str| {
        v.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let Some(secret) = mode.get("kubernetesSecret") {
        let name = text(secret, "secretName").ok_or(
            "spec.parameters.unsealer.mode.kubernetesSecret has no secretName".to_string(),
        )?;
        return Ok(Some(UnsealerStore::KubernetesSecret {
            namespace: ns,
            name,
        }));
    }
    if let Some(ssm) = mode.get("awsKmsSsm") {
        let kms_key_id = text(ssm, "kmsKeyID")
            .ok_or("spec.parameters.unsealer.mode.awsKmsSsm has no kmsKeyID".to_string())?;
        return Ok(Some(UnsealerStore::AwsKmsSsm {
            kms_key_id,
            region: text(ssm, "region"),
            ssm_key_prefix: text(ssm, "ssmKeyPrefix").unwrap_or_default(),
            endpoint: text(ssm, "endpoint"),
        }));
    }
    let other = mode.keys().cloned().collect::<Vec<_>>().join(", ");
    Err(format!(
        "spec.parameters.unsealer.mode is {other}: stashless reads unseal keys from kubernetesSecret and awsKmsSsm only"
    ))
}

/// The key prefix [`ANNOTATION_KEY_PREFIX`] sets, if any.
pub fn configured_prefix(ab: &AppBinding) -> Option<String> {
    ab.annotations().get(ANNOTATION_KEY_PREFIX).cloned()
}

/// KubeVault's name of unseal key `i` under `prefix`.
pub fn unseal_key_id(prefix: &str, i: usize) -> String {
    if prefix.is_empty() {
        format!("unseal-key-{i}")
    } else {
        format!("{prefix}-unseal-key-{i}")
    }
}

/// KubeVault's name of the root token under `prefix`.
pub fn root_token_id(prefix: &str) -> String {
    if prefix.is_empty() {
        "root-token".into()
    } else {
        format!("{prefix}-root-token")
    }
}

/// The prefixes of the unseal keys among `names` (`""` for unprefixed ones).
pub fn prefixes_in<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    names
        .into_iter()
        .filter_map(|n| {
            let (head, index) = n.rsplit_once("unseal-key-")?;
            index.parse::<usize>().ok()?;
            Some(head.strip_suffix('-').unwrap_or(head).to_string())
        })
        .collect()
}

/// The keys under `prefix` in a store's name → value map: `<prefix>-unseal-key-0..` up to
/// the first gap, and the root token when present.
pub fn keys_in(
    data: &BTreeMap<String, Vec<u8>>,
    prefix: &str,
    where_: &str,
) -> std::result::Result<UnsealKeys, String> {
    let text = |name: &str| -> std::result::Result<Option<String>, String> {
        data.get(name)
            .map(|v| {
                let t = std::str::from_utf8(v)
                    .map_err(|_| format!("{where_}: {name} is not text"))?
                    .trim();
                if t.is_empty() || t.chars().any(char::is_control) {
                    return Err(format!(
                        "{where_}: {name} is empty or holds control characters"
                    ));
                }
                Ok(t.to_string())
            })
            .transpose()
    };
    let mut keys = Vec::new();
    while keys.len() < MAX_KEYS {
        match text(&unseal_key_id(prefix, keys.len()))? {
            Some(k) => keys.push(k),
            None => break,
        }
    }
    if keys.is_empty() {
        return Err(format!("{where_} holds no {}", unseal_key_id(prefix, 0)));
    }
    Ok(UnsealKeys {
        keys,
        root_token: text(&root_token_id(prefix))?,
    })
}

/// The prefix to use in a Secret: the configured one, else the only one its keys carry.
pub fn choose_prefix(
    configured: Option<&str>,
    found: &BTreeSet<String>,
    where_: &str,
) -> std::result::Result<String, String> {
    if let Some(p) = configured {
        return Ok(p.to_string());
    }
    match found.len() {
        0 => Err(format!("{where_} holds no unseal-key-<i> keys")),
        1 => Ok(found.iter().next().cloned().unwrap_or_default()),
        _ => Err(format!(
            "{where_} holds keys of {} prefixes ({}): name one with the AppBinding annotation {ANNOTATION_KEY_PREFIX}",
            found.len(),
            found
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// One unseal key share as bytes: Vault prints them hex (`keys`) or base64 (`keys_base64`).
fn share_bytes(share: &str) -> Option<Vec<u8>> {
    hex::decode(share).ok().or_else(|| B64.decode(share).ok())
}

/// GF(2^8) multiplication with the AES polynomial (Vault's Shamir field).
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80;
        a <<= 1;
        if carry != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

fn gf_inv(a: u8) -> u8 {
    // a^254 = a^-1 in GF(2^8).
    let mut r = 1u8;
    for _ in 0..254 {
        r = gf_mul(r, a);
    }
    r
}

/// The key Vault's Shamir shares split (`shamir.Combine`): each share is its y bytes then
/// its x coordinate; Lagrange interpolation at 0. A node whose seal configuration is still
/// its own (1 share) after another cluster's snapshot replaced it takes this combined key
/// where it would take a share (OpenBao keeps the old configuration until it restarts).
/// None when the shares are malformed or repeat a coordinate.
pub fn combine_shares(shares: &[String]) -> Option<String> {
    let parts: Vec<Vec<u8>> = shares
        .iter()
        .map(|s| share_bytes(s))
        .collect::<Option<_>>()?;
    let len = parts.first()?.len();
    if len < 2 || parts.iter().any(|p| p.len() != len) {
        return None;
    }
    let xs: Vec<u8> = parts.iter().map(|p| p[len - 1]).collect();
    if xs.iter().enumerate().any(|(i, x)| xs[..i].contains(x)) {
        return None;
    }
    let mut secret = vec![0u8; len - 1];
    for (j, part) in parts.iter().enumerate() {
        // Basis polynomial j at 0: prod over m != j of x_m / (x_m - x_j).
        let mut basis = 1u8;
        for (m, xm) in xs.iter().enumerate() {
            if m != j {
                basis = gf_mul(basis, gf_mul(*xm, gf_inv(xm ^ xs[j])));
            }
        }
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte ^= gf_mul(part[i], basis);
        }
    }
    Some(hex::encode(secret))
}

/// What to send to `sys/unseal` of a node that expects `threshold` shares, from the keys of
/// the cluster whose data it now holds. After another cluster's snapshot replaced its data,
/// a node keeps the seal configuration it had (OpenBao and Vault re-read it only on unseal
/// or restart), so the shares it expects may not be the ones escrowed: the key they combine
/// into (one unseal key is the key itself) is split afresh into as many shares as it expects.
pub fn shares_for(keys: &[String], threshold: u32) -> Option<Vec<String>> {
    let key = match keys {
        [] => return None,
        [one] => share_bytes(one)?,
        many => hex::decode(combine_shares(many)?).ok()?,
    };
    if threshold <= 1 {
        return Some(vec![hex::encode(key)]);
    }
    // A random polynomial of degree threshold-1 through the key, sampled at 1..=threshold.
    let mut coefficients = vec![0u8; key.len() * (threshold as usize - 1)];
    aws_lc_rs::rand::fill(&mut coefficients).ok()?;
    Some(
        (1..=threshold as u8)
            .map(|x| {
                let mut share: Vec<u8> = key
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let mut y = *k;
                        let mut power = 1u8;
                        for c in coefficients.chunks(key.len()) {
                            power = gf_mul(power, x);
                            y ^= gf_mul(c[i], power);
                        }
                        y
                    })
                    .collect();
                share.push(x);
                hex::encode(share)
            })
            .collect(),
    )
}

/// AWS clients for the stores and the envelope, built from one SDK configuration.
#[derive(Clone, Debug)]
pub struct Aws {
    pub config: aws_config::SdkConfig,
}

impl Aws {
    fn kms(&self, region: Option<&str>, endpoint: Option<&str>) -> aws_sdk_kms::Client {
        let mut b = aws_sdk_kms::config::Builder::from(&self.config);
        if let Some(r) = region {
            b = b.region(aws_sdk_kms::config::Region::new(r.to_string()));
        }
        if let Some(e) = endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_kms::Client::from_conf(b.build())
    }

    fn ssm(&self, region: Option<&str>, endpoint: Option<&str>) -> aws_sdk_ssm::Client {
        let mut b = aws_sdk_ssm::config::Builder::from(&self.config);
        if let Some(r) = region {
            b = b.region(aws_sdk_ssm::config::Region::new(r.to_string()));
        }
        if let Some(e) = endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_ssm::Client::from_conf(b.build())
    }
}

fn aws_err<E>(what: String, e: aws_sdk_kms::error::SdkError<E>) -> Error
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (code, retry) = match &e {
        aws_sdk_kms::error::SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            (
                s.err().code().unwrap_or("error").to_string()
                    + &s.err()
                        .message()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default(),
                status >= 500 || status == 429,
            )
        }
        other => (crate::vault::error_chain(other), true),
    };
    Error::Keys {
        message: format!("{what}: {code}"),
        kind: ErrorKind::retry_helps(retry),
        source: Some(Box::new(e)),
    }
}

/// Read a cluster's keys from its unsealer store.
pub async fn read(
    kube: &Client,
    aws: Option<&Aws>,
    store: &UnsealerStore,
    configured_prefix: Option<&str>,
) -> Result<(String, UnsealKeys)> {
    match store {
        UnsealerStore::KubernetesSecret { namespace, name } => {
            let data = read_secret(kube, namespace, name, "the unseal keys").await?;
            let where_ = format!("Secret {namespace}/{name}");
            let prefix = choose_prefix(
                configured_prefix,
                &prefixes_in(data.keys().map(String::as_str)),
                &where_,
            )
            .map_err(Error::invalid)?;
            let keys = keys_in(&data, &prefix, &where_).map_err(Error::invalid)?;
            Ok((prefix, keys))
        }
        UnsealerStore::AwsKmsSsm {
            kms_key_id: _,
            region,
            ssm_key_prefix,
            endpoint,
        } => {
            let aws = aws.ok_or_else(|| {
                Error::invalid("the unsealer store is awsKmsSsm but no AWS configuration is loaded")
            })?;
            let prefix = configured_prefix.unwrap_or_default().to_string();
            let ssm = aws.ssm(region.as_deref(), endpoint.as_deref());
            let kms = aws.kms(region.as_deref(), endpoint.as_deref());
            let mut data = BTreeMap::new();
            let mut names: Vec<String> = (0..MAX_KEYS)
                .map(|i| format!("{ssm_key_prefix}{}", unseal_key_id(&prefix, i)))
                .collect();
            names.push(format!("{ssm_key_prefix}{}", root_token_id(&prefix)));
            // GetParameters takes at most 10 names a call.
            for chunk in names.chunks(10) {
                let out = ssm
                    .get_parameters()
                    .set_names(Some(chunk.to_vec()))
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| {
                        aws_err(
                            format!("reading SSM parameters under {ssm_key_prefix:?}"),
                            e,
                        )
                    })?;
                for p in out.parameters.unwrap_or_default() {
                    let (Some(name), Some(value)) = (p.name, p.value) else {
                        continue;
                    };
                    let blob = B64.decode(value.trim()).map_err(|_| {
                        Error::invalid(format!("SSM parameter {name} is not base64 (KubeVault's unsealer writes base64 KMS ciphertext)"))
                    })?;
                    let plain = kms
                        .decrypt()
                        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
                        .encryption_context(KUBEVAULT_KMS_CONTEXT.0, KUBEVAULT_KMS_CONTEXT.1)
                        .send()
                        .await
                        .map_err(|e| {
                            aws_err(format!("decrypting SSM parameter {name} with KMS"), e)
                        })?;
                    let plain = plain.plaintext.map(|b| b.into_inner()).unwrap_or_default();
                    let short = name.strip_prefix(ssm_key_prefix.as_str()).unwrap_or(&name);
                    data.insert(short.to_string(), plain);
                }
            }
            let where_ = format!("SSM parameters under {ssm_key_prefix:?}");
            let keys = keys_in(&data, &prefix, &where_).map_err(Error::invalid)?;
            Ok((prefix, keys))
        }
    }
}

/// The prefix a target's store takes the new keys under: the configured one (Stash's
/// `keyPrefix`, or the AppBinding annotation); in a Secret, the one prefix its present
/// keys carry (the cluster's own, being replaced); else the source's.
pub async fn target_prefix(
    kube: &Client,
    store: &UnsealerStore,
    configured: Option<&str>,
    source_prefix: &str,
) -> Result<String> {
    match store {
        UnsealerStore::KubernetesSecret { namespace, name } => {
            // Read now, before anything is sent: a Secret that is missing or unreadable
            // fails the restore with Vault untouched.
            let data = read_secret(kube, namespace, name, "the new cluster's unseal keys").await?;
            if let Some(p) = configured {
                return Ok(p.to_string());
            }
            let found = prefixes_in(data.keys().map(String::as_str));
            if found.is_empty() {
                return Ok(source_prefix.to_string());
            }
            choose_prefix(None, &found, &format!("Secret {namespace}/{name}"))
                .map_err(Error::invalid)
        }
        UnsealerStore::AwsKmsSsm { .. } => Ok(configured.unwrap_or(source_prefix).to_string()),
    }
}

/// Write `keys` into a cluster's unsealer store under `prefix`, replacing the keys stored
/// there under that prefix (extra old shares are removed; other prefixes are left alone).
/// Returns what was written, for a person.
pub async fn write(
    kube: &Client,
    aws: Option<&Aws>,
    store: &UnsealerStore,
    prefix: &str,
    keys: &UnsealKeys,
) -> Result<String> {
    match store {
        UnsealerStore::KubernetesSecret { namespace, name } => {
            let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
            let old = read_secret(kube, namespace, name, "the unseal keys").await?;
            let mut data = serde_json::Map::new();
            for k in old.keys().filter(|k| {
                prefixes_in([k.as_str()]).contains(prefix) || **k == root_token_id(prefix)
            }) {
                data.insert(k.clone(), Value::Null);
            }
            for (i, k) in keys.keys.iter().enumerate() {
                data.insert(unseal_key_id(prefix, i), Value::String(B64.encode(k)));
            }
            if let Some(t) = &keys.root_token {
                data.insert(root_token_id(prefix), Value::String(B64.encode(t)));
            }
            let patch = serde_json::json!({ "data": data });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| match api_code(&e) {
                    Some(403) => Error::invalid(format!(
                        "not allowed to update Secret {namespace}/{name} (the new cluster's unseal keys): grant the restore function `patch` on that Secret"
                    )),
                    _ => Error::kube(format!("writing the unseal keys into Secret {namespace}/{name}"), e),
                })?;
            Ok(format!(
                "{} unseal key(s){} written to {}",
                keys.keys.len(),
                if keys.root_token.is_some() {
                    " and the root token"
                } else {
                    ""
                },
                store.describe(prefix)
            ))
        }
        UnsealerStore::AwsKmsSsm {
            kms_key_id,
            region,
            ssm_key_prefix,
            endpoint,
        } => {
            let aws = aws.ok_or_else(|| {
                Error::invalid("the unsealer store is awsKmsSsm but no AWS configuration is loaded")
            })?;
            let ssm = aws.ssm(region.as_deref(), endpoint.as_deref());
            let kms = aws.kms(region.as_deref(), endpoint.as_deref());
            let mut entries: Vec<(String, &str)> = keys
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| (unseal_key_id(prefix, i), k.as_str()))
                .collect();
            if let Some(t) = &keys.root_token {
                entries.push((root_token_id(prefix), t.as_str()));
            }
            for (id, value) in &entries {
                let name = format!("{ssm_key_prefix}{id}");
                let blob = kms
                    .encrypt()
                    .key_id(kms_key_id)
                    .plaintext(aws_sdk_kms::primitives::Blob::new(value.as_bytes()))
                    .encryption_context(KUBEVAULT_KMS_CONTEXT.0, KUBEVAULT_KMS_CONTEXT.1)
                    .send()
                    .await
                    .map_err(|e| {
                        aws_err(format!("encrypting {name} with KMS key {kms_key_id}"), e)
                    })?
                    .ciphertext_blob
                    .map(|b| b.into_inner())
                    .unwrap_or_default();
                ssm.put_parameter()
                    .name(&name)
                    .description("vault-unsealer")
                    .value(B64.encode(blob))
                    .r#type(aws_sdk_ssm::types::ParameterType::String)
                    .overwrite(true)
                    .send()
                    .await
                    .map_err(|e| aws_err(format!("writing SSM parameter {name}"), e))?;
            }
            // Shares beyond the new count belong to the old keys: remove them.
            let stale: Vec<String> = (keys.keys.len()..MAX_KEYS)
                .map(|i| format!("{ssm_key_prefix}{}", unseal_key_id(prefix, i)))
                .collect();
            for chunk in stale.chunks(10) {
                ssm.delete_parameters()
                    .set_names(Some(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| {
                        aws_err("removing the old cluster's extra SSM parameters".into(), e)
                    })?;
            }
            Ok(format!(
                "{} unseal key(s){} written to {}",
                keys.keys.len(),
                if keys.root_token.is_some() {
                    " and the root token"
                } else {
                    ""
                },
                store.describe(prefix)
            ))
        }
    }
}

/// What seals escrows: a KMS key, or the local demo's key.
#[derive(Clone)]
pub enum Sealer {
    Kms {
        key_id: String,
        aws: Box<Aws>,
    },
    /// The local demo's key: never for production (it lives in the demo's process).
    LocalDemo([u8; 32]),
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer({})", self.key_id())
    }
}

/// An escrow object: one cluster's keys sealed for one snapshot. JSON beside the snapshot;
/// holds no key material in clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub format_version: u32,
    /// The snapshot (`<namespace>/<session>`) these keys open.
    pub snapshot: String,
    pub snapshot_sha256: String,
    /// The KMS key the data key is sealed under (or [`LOCAL_DEMO_KEY_ID`]).
    pub key_id: String,
    /// The data key as KMS returned it sealed (base64).
    pub encrypted_data_key: String,
    /// AES-256-GCM nonce (base64, 12 bytes).
    pub nonce: String,
    /// The keys (JSON) under AES-256-GCM with the tag appended (base64).
    pub ciphertext: String,
}

/// What binds an escrow to its snapshot: the KMS encryption context, and (as JSON, keys
/// sorted) the GCM associated data.
pub fn encryption_context(snapshot: &str, sha256: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("stashless:purpose".to_string(), "unseal-keys".to_string()),
        ("stashless:snapshot".to_string(), snapshot.to_string()),
        ("stashless:sha256".to_string(), sha256.to_string()),
    ])
}

fn gcm_seal(key: &[u8], aad: &[u8], plain: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>)> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| keys_err("no randomness for a nonce"))?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| keys_err("the data key is not 256 bits"))?,
    );
    let mut out = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut out,
    )
    .map_err(|_| keys_err("AES-256-GCM refused to seal"))?;
    Ok((nonce, out))
}

fn gcm_open(key: &[u8], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = sealed.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
    Some(plain.to_vec())
}

fn keys_err(message: impl Into<String>) -> Error {
    Error::Keys {
        message: message.into(),
        kind: ErrorKind::Invalid,
        source: None,
    }
}

fn integrity(message: impl Into<String>) -> Error {
    Error::Keys {
        message: message.into(),
        kind: ErrorKind::Integrity,
        source: None,
    }
}

impl Sealer {
    /// The key id recorded in manifests and escrows.
    pub fn key_id(&self) -> String {
        match self {
            Sealer::Kms { key_id, .. } => key_id.clone(),
            Sealer::LocalDemo(_) => LOCAL_DEMO_KEY_ID.into(),
        }
    }

    /// Seal `keys` for snapshot `snapshot` with sha256 `sha256`.
    pub async fn seal(&self, keys: &UnsealKeys, snapshot: &str, sha256: &str) -> Result<Envelope> {
        let context = encryption_context(snapshot, sha256);
        let aad = serde_json::to_vec(&context).expect("a map of strings serialises");
        let (data_key, encrypted_data_key) = match self {
            Sealer::Kms { key_id, aws } => {
                let out = aws
                    .kms(None, None)
                    .generate_data_key()
                    .key_id(key_id)
                    .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                    .set_encryption_context(Some(context.clone().into_iter().collect()))
                    .send()
                    .await
                    .map_err(|e| aws_err(format!("KMS GenerateDataKey with key {key_id}"), e))?;
                let plain = out.plaintext.map(|b| b.into_inner()).unwrap_or_default();
                let sealed = out
                    .ciphertext_blob
                    .map(|b| b.into_inner())
                    .unwrap_or_default();
                (plain, sealed)
            }
            Sealer::LocalDemo(local) => {
                let mut data_key = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut data_key)
                    .map_err(|_| keys_err("no randomness for a data key"))?;
                let (nonce, sealed) = gcm_seal(local, &aad, &data_key)?;
                (data_key, [nonce.as_slice(), &sealed].concat())
            }
        };
        let plain = serde_json::to_vec(keys).expect("keys serialise");
        let (nonce, ciphertext) = gcm_seal(&data_key, &aad, &plain)?;
        Ok(Envelope {
            format_version: 1,
            snapshot: snapshot.into(),
            snapshot_sha256: sha256.into(),
            key_id: self.key_id(),
            encrypted_data_key: B64.encode(encrypted_data_key),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        })
    }

    /// Open an escrow for snapshot `snapshot` with sha256 `sha256`: fails (KMS refuses, or
    /// the GCM tag does not match) when the escrow was sealed for any other snapshot.
    pub async fn open(&self, env: &Envelope, snapshot: &str, sha256: &str) -> Result<UnsealKeys> {
        if env.snapshot != snapshot || env.snapshot_sha256 != sha256 {
            return Err(integrity(format!(
                "the escrow stored beside snapshot {snapshot} was sealed for snapshot {} (sha256 {}): it is not this snapshot's; not restoring",
                env.snapshot, env.snapshot_sha256
            )));
        }
        let context = encryption_context(snapshot, sha256);
        let aad = serde_json::to_vec(&context).expect("a map of strings serialises");
        let decode = |field: &str, v: &str| {
            B64.decode(v)
                .map_err(|_| integrity(format!("the escrow's {field} is not base64")))
        };
        let sealed_key = decode("encryptedDataKey", &env.encrypted_data_key)?;
        let data_key = match self {
            Sealer::Kms { key_id, aws } => {
                if env.key_id != *key_id {
                    tracing::info!(escrow_key = %env.key_id, configured = %key_id, "the escrow names another KMS key than configured: asking KMS with the escrow's");
                }
                aws.kms(None, None)
                    .decrypt()
                    .key_id(&env.key_id)
                    .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(sealed_key))
                    .set_encryption_context(Some(context.clone().into_iter().collect()))
                    .send()
                    .await
                    .map_err(|e| aws_err(format!("KMS Decrypt of the escrowed unseal keys of snapshot {snapshot} (key {})", env.key_id), e))?
                    .plaintext
                    .map(|b| b.into_inner())
                    .unwrap_or_default()
            }
            Sealer::LocalDemo(local) => {
                if env.key_id != LOCAL_DEMO_KEY_ID || sealed_key.len() < NONCE_LEN {
                    return Err(keys_err(format!(
                        "the escrow of snapshot {snapshot} is sealed with {} but this function has only the local demo key",
                        env.key_id
                    )));
                }
                let (nonce, rest) = sealed_key.split_at(NONCE_LEN);
                gcm_open(local, nonce, &aad, rest).ok_or_else(|| {
                    integrity(format!(
                        "the escrow of snapshot {snapshot} does not open with the local demo key"
                    ))
                })?
            }
        };
        let nonce = decode("nonce", &env.nonce)?;
        let ciphertext = decode("ciphertext", &env.ciphertext)?;
        let plain = gcm_open(&data_key, &nonce, &aad, &ciphertext).ok_or_else(|| {
            integrity(format!(
                "the escrow of snapshot {snapshot} fails its AES-256-GCM check: it was altered or sealed for another snapshot; not restoring"
            ))
        })?;
        serde_json::from_slice(&plain).map_err(|_| {
            integrity(format!(
                "the escrow of snapshot {snapshot} opened but holds no keys"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Split `secret` into `n` shares of threshold `t` with a fixed polynomial, in Vault's
    /// layout (y bytes, then x).
    fn split(secret: &[u8], n: u8, t: usize) -> Vec<String> {
        (1..=n)
            .map(|x| {
                let mut share: Vec<u8> = secret
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        // f(x) = s + c1 x + c2 x^2 ..., coefficients from the byte index.
                        let mut y = *s;
                        let mut xp = 1u8;
                        for k in 1..t {
                            xp = gf_mul(xp, x);
                            y ^= gf_mul((i as u8).wrapping_mul(31).wrapping_add(k as u8 * 7), xp);
                        }
                        y
                    })
                    .collect();
                share.push(x);
                hex::encode(share)
            })
            .collect()
    }

    #[test]
    fn shamir_shares_combine_into_the_key() {
        assert_eq!(gf_mul(0x57, 0x83), 0xc1); // FIPS-197's example
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1);
        }
        let secret: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let shares = split(&secret, 5, 3);
        let want = hex::encode(&secret);
        assert_eq!(combine_shares(&shares[..3]).unwrap(), want);
        assert_eq!(
            combine_shares(&[shares[4].clone(), shares[1].clone(), shares[3].clone()]).unwrap(),
            want
        );
        assert_ne!(
            combine_shares(&shares[..2]).unwrap(),
            want,
            "below the threshold"
        );
        let b64: Vec<String> = shares[..3]
            .iter()
            .map(|s| B64.encode(hex::decode(s).unwrap()))
            .collect();
        assert_eq!(combine_shares(&b64).unwrap(), want);
        assert_eq!(
            combine_shares(&[shares[0].clone(), shares[0].clone()]),
            None
        );
        // Re-split for a node expecting another threshold: they combine into the same key.
        for t in [1u32, 2, 3, 5] {
            let fresh = shares_for(&shares, t).unwrap();
            assert_eq!(fresh.len(), t as usize);
            let back = if t == 1 {
                fresh[0].clone()
            } else {
                combine_shares(&fresh).unwrap()
            };
            assert_eq!(back, want, "threshold {t}");
        }
        // One unseal key is the key itself.
        assert_eq!(
            combine_shares(&shares_for(std::slice::from_ref(&want), 3).unwrap()).unwrap(),
            want
        );
        assert_eq!(combine_shares(&["zz".into()]), None);
    }

    #[test]
    fn kubevault_names_and_prefix_discovery() {
        assert_eq!(
            unseal_key_id("k8s.x.demo.vault", 2),
            "k8s.x.demo.vault-unseal-key-2"
        );
        assert_eq!(root_token_id(""), "root-token");
        let found = prefixes_in([
            "k8s.a-unseal-key-0",
            "k8s.a-unseal-key-1",
            "k8s.a-root-token",
            "unseal-key-0",
            "x-unseal-key-y",
        ]);
        assert_eq!(found, BTreeSet::from(["k8s.a".to_string(), String::new()]));
        let e = choose_prefix(None, &found, "Secret v/keys").unwrap_err();
        assert!(e.contains(ANNOTATION_KEY_PREFIX), "{e}");
        assert_eq!(choose_prefix(Some("k8s.a"), &found, "s").unwrap(), "k8s.a");
        let one = BTreeSet::from(["p".to_string()]);
        assert_eq!(choose_prefix(None, &one, "s").unwrap(), "p");
    }

    #[test]
    fn keys_stop_at_the_first_gap_and_never_print() {
        let data = map(&[
            ("p-unseal-key-0", "share0"),
            ("p-unseal-key-1", "share1\n"),
            ("p-unseal-key-3", "share3"),
            ("p-root-token", "s.rootvalue"),
        ]);
        let keys = keys_in(&data, "p", "Secret v/keys").unwrap();
        assert_eq!(keys.keys, vec!["share0", "share1"]);
        assert_eq!(keys.root_token.as_deref(), Some("s.rootvalue"));
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains("share0") && !shown.contains("s.rootvalue"),
            "{shown}"
        );
        assert!(
            keys_in(&data, "q", "Secret v/keys")
                .unwrap_err()
                .contains("q-unseal-key-0")
        );
    }

    #[test]
    fn stores_from_appbindings() {
        let ab = |params: Value, ann: Option<&str>| -> AppBinding {
            let mut v = serde_json::json!({
                "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
                "metadata": {"name": "vault", "namespace": "demo"},
                "spec": {"clientConfig": {"url": "http://v:8200"}, "parameters": params}});
            if let Some(a) = ann {
                v["metadata"]["annotations"] = serde_json::json!({ANNOTATION_KEYS_SECRET: a});
            }
            serde_json::from_value(v).unwrap()
        };
        let s = store_of(&ab(serde_json::json!({"unsealer": {"mode": {"kubernetesSecret": {"secretName": "vault-keys"}}}}), None)).unwrap();
        assert_eq!(
            s,
            Some(UnsealerStore::KubernetesSecret {
                namespace: "demo".into(),
                name: "vault-keys".into()
            })
        );
        let s = store_of(&ab(serde_json::json!({"unsealer": {"mode": {"awsKmsSsm": {"kmsKeyID": "k1", "region": "us-east-1", "ssmKeyPrefix": "/c/"}}}}), None)).unwrap().unwrap();
        assert_eq!(s.kind(), "awsKmsSsm");
        let e = store_of(&ab(
            serde_json::json!({"unsealer": {"mode": {"googleKmsGcs": {}}}}),
            None,
        ))
        .unwrap_err();
        assert!(e.contains("googleKmsGcs"), "{e}");
        assert_eq!(store_of(&ab(serde_json::json!({}), None)).unwrap(), None);
        let s = store_of(&ab(serde_json::json!({}), Some("plain-keys"))).unwrap();
        assert_eq!(
            s,
            Some(UnsealerStore::KubernetesSecret {
                namespace: "demo".into(),
                name: "plain-keys".into()
            })
        );
    }

    #[tokio::test]
    async fn an_envelope_opens_only_for_its_own_snapshot() {
        let sealer = Sealer::LocalDemo([7u8; 32]);
        let keys = UnsealKeys {
            keys: vec!["share-one".into(), "share-two".into()],
            root_token: Some("s.root".into()),
        };
        let env = sealer.seal(&keys, "ns/a", "aa").await.unwrap();
        let json = serde_json::to_string(&env).unwrap();
        for secret in ["share-one", "share-two", "s.root"] {
            assert!(!json.contains(secret));
            assert!(!json.contains(&B64.encode(secret)));
        }
        assert_eq!(sealer.open(&env, "ns/a", "aa").await.unwrap(), keys);
        // Relabelled for another snapshot: the binding fails the tag check.
        let mut moved = env.clone();
        moved.snapshot = "ns/b".into();
        let e = sealer.open(&moved, "ns/b", "aa").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        // Beside another snapshot as it is: refused by name.
        let e = sealer.open(&env, "ns/b", "bb").await.unwrap_err();
        assert!(e.to_string().contains("not this snapshot's"), "{e}");
        // Another key cannot open it.
        let e = Sealer::LocalDemo([8u8; 32])
            .open(&env, "ns/a", "aa")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    }
}
