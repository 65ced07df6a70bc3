//! A real Garage S3 server on loopback: one node (`--single-node`, so the
//! layout is assigned and applied at start-up), `replication_factor = 1`,
//! LMDB metadata (with sqlite, parallel multipart uploads of 1 GiB got "database is
//! locked" and a request that never finished), one access key with read/write/owner on
//! every bucket made by [`Garage::create_bucket`].
//!
//! S3 clients must use **path-style** addressing (Garage has no virtual-host
//! buckets here) and region [`REGION`] (`"garage"`); requests must be SigV4
//! signed (anonymous requests are refused with 403 AccessDenied).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{
    ChildGuard, TempDir, cleanup_at_exit, expect_success, free_port, garage_binary, http_client,
    is_port_clash, wait_ready,
};

/// The S3 region Garage is configured with (`s3_region`). Clients that sign
/// for another region get 400 AuthorizationHeaderMalformed.
pub const REGION: &str = "garage";

const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Garage {
    /// S3 endpoint, `http://127.0.0.1:PORT` (path-style: `{endpoint}/{bucket}/{key}`).
    pub endpoint: String,
    /// `"garage"`, see [`REGION`].
    pub region: String,
    /// Access key id (`GK` + 24 hex) with read/write/owner on buckets made by
    /// [`Garage::create_bucket`], and allowed to create buckets itself.
    pub access_key: String,
    pub secret_key: String,
    /// Admin API, `http://127.0.0.1:PORT` (bearer [`Garage::admin_token`]).
    pub admin_endpoint: String,
    pub admin_token: String,
    child: ChildGuard,
    dir: TempDir,
}

/// `n` random bytes from the kernel, hex encoded.
fn random_hex(n: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Percent-encode for a URL path segment or query value (RFC 3986
/// unreserved characters kept; `/` kept when `keep_slash`).
fn pct(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Text between the first `<tag>` and `</tag>` of `xml`.
fn xml_field<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

impl Garage {
    /// Start a Garage owned by the caller (killed on drop). Takes ~1 s.
    pub async fn start() -> Result<Garage> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(g) => return Ok(g),
                Err(e) if is_port_clash(&e) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap())
    }

    async fn try_start() -> Result<Garage> {
        let started = Instant::now();
        let dir = TempDir::new("garage")?;
        let (s3_port, rpc_port, admin_port) = (free_port()?, free_port()?, free_port()?);
        let admin_token = random_hex(32)?;
        let access_key = format!("GK{}", random_hex(12)?);
        let secret_key = random_hex(32)?;
        crate::leaks::secret("S3 secret key", &secret_key);
        crate::leaks::secret("Garage admin token", &admin_token);
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "lmdb"
replication_factor = 1
metadata_fsync = false
# Snapshots are gzip'd and hold ciphertext: compressing blocks again only burns the CPU the
# functions under test share with this server (zstd showed in the benchmark's profile).
compression_level = "none"
data_fsync = false

rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
admin_token = "{admin_token}"
"#,
                d = dir.path().display(),
                rpc_secret = random_hex(32)?,
            ),
        )?;
        let mut cmd = Command::new(garage_binary()?);
        cmd.arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-access-key"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
            .env("RUST_LOG", "garage=info,garage_api_s3=info")
            .env_remove("GARAGE_RPC_SECRET")
            .env_remove("GARAGE_ADMIN_TOKEN")
            .current_dir(dir.path());
        let mut child = ChildGuard::spawn("garage", cmd, &dir.path().join("garage.log"))?;
        let admin_endpoint = format!("http://127.0.0.1:{admin_port}");
        let http = http_client();
        let health = format!("{admin_endpoint}/health");
        // /health (no auth) answers 200 once the layout is applied and the
        // node is up; the key was imported before the APIs started.
        wait_ready(&mut child, "/health", READY_TIMEOUT, || {
            let req = http.get(&health).timeout(Duration::from_secs(2));
            async move { Ok(req.send().await?.status().is_success()) }
        })
        .await?;
        let garage = Garage {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            region: REGION.to_string(),
            access_key,
            secret_key,
            admin_endpoint,
            admin_token,
            child,
            dir,
        };
        if std::env::var_os("STASHLESS_PROCS_VERBOSE").is_some() {
            eprintln!(
                "garage {} ready in {:?}",
                garage.endpoint,
                started.elapsed()
            );
        }
        Ok(garage)
    }

    /// One Garage for the whole test process, started on first use and
    /// killed at exit. Every test makes its own bucket(s).
    pub async fn shared() -> Result<&'static Garage> {
        static SHARED: OnceCell<Garage> = OnceCell::const_new();
        SHARED
            .get_or_try_init(|| async {
                let garage = Garage::start().await?;
                cleanup_at_exit(Some(&garage.child), Some(&garage.dir));
                Ok(garage)
            })
            .await
    }

    /// The server's process id (for CPU accounting in the benchmark).
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    pub fn log_path(&self) -> PathBuf {
        self.child.log_path().to_path_buf()
    }

    /// Kill the server (for "S3 is down" tests; only on an owned instance).
    pub fn stop(&mut self) {
        self.child.terminate(Duration::from_secs(5));
    }

    /// `POST {admin}/v2/<endpoint>` (or GET without body) with the token;
    /// the JSON answer.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = http_client()
            .request(method, format!("{}/v2/{endpoint}", self.admin_endpoint))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = expect_success(&format!("garage admin {endpoint}"), req.send().await?).await?;
        let text = resp.text().await?;
        Ok(if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// The bucket id of global alias `name`.
    pub async fn bucket_id(&self, name: &str) -> Result<String> {
        let info = self
            .admin(
                reqwest::Method::GET,
                &format!("GetBucketInfo?globalAlias={}", pct(name, false)),
                None,
            )
            .await?;
        Ok(info["id"]
            .as_str()
            .context("GetBucketInfo answer without id")?
            .to_string())
    }

    /// Create bucket `name` and give [`Self::access_key`] read, write and
    /// owner on it.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        let info = self
            .admin(
                reqwest::Method::POST,
                "CreateBucket",
                Some(json!({"globalAlias": name})),
            )
            .await?;
        let id = info["id"]
            .as_str()
            .context("CreateBucket answer without id")?;
        self.set_permissions(name, Some(id), &self.access_key, true, true, true)
            .await
    }

    /// Set exactly these permissions of `access_key` on bucket `name`.
    pub async fn set_key_permissions(
        &self,
        name: &str,
        access_key: &str,
        read: bool,
        write: bool,
        owner: bool,
    ) -> Result<()> {
        self.set_permissions(name, None, access_key, read, write, owner)
            .await
    }

    async fn set_permissions(
        &self,
        name: &str,
        id: Option<&str>,
        access_key: &str,
        read: bool,
        write: bool,
        owner: bool,
    ) -> Result<()> {
        let id = match id {
            Some(id) => id.to_string(),
            None => self.bucket_id(name).await?,
        };
        let allow = json!({"bucketId": id, "accessKeyId": access_key,
            "permissions": {"read": read, "write": write, "owner": owner}});
        let deny = json!({"bucketId": id, "accessKeyId": access_key,
            "permissions": {"read": !read, "write": !write, "owner": !owner}});
        self.admin(reqwest::Method::POST, "AllowBucketKey", Some(allow))
            .await?;
        self.admin(reqwest::Method::POST, "DenyBucketKey", Some(deny))
            .await?;
        Ok(())
    }

    /// A new access key without any bucket permission: (id, secret).
    pub async fn create_key(&self, name: &str) -> Result<(String, String)> {
        let key = self
            .admin(
                reqwest::Method::POST,
                "CreateKey",
                Some(json!({"name": name})),
            )
            .await?;
        Ok((
            key["accessKeyId"]
                .as_str()
                .context("CreateKey answer without accessKeyId")?
                .to_string(),
            key["secretAccessKey"]
                .as_str()
                .context("CreateKey answer without secretAccessKey")?
                .to_string(),
        ))
    }

    /// Delete bucket `name`, first deleting every object in it.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        let id = self.bucket_id(name).await?;
        for (key, _) in self.list_objects(name).await? {
            self.delete_object(name, &key).await?;
        }
        self.admin(
            reqwest::Method::POST,
            &format!("DeleteBucket?id={id}"),
            None,
        )
        .await?;
        Ok(())
    }

    /// A SigV4-signed S3 request through `curl --aws-sigv4` (independent of
    /// the S3 client under test): (HTTP status, body).
    pub async fn s3_curl(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>)> {
        let url = format!(
            "{}/{}",
            self.endpoint,
            path_and_query.trim_start_matches('/')
        );
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "120",
            "-X",
            method,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        // Garage requires the payload-hash header; curl signs it along.
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .arg("--aws-sigv4")
        .arg(format!("aws:amz:{}:s3", self.region))
        .arg("--user")
        .arg(format!("{}:{}", self.access_key, self.secret_key))
        .arg(&url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        if body.is_some() {
            cmd.args(["--data-binary", "@-"]);
        }
        let mut child = cmd
            .spawn()
            .context("running curl (install it: bash tests/setup.sh)")?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = body.map(<[u8]>::to_vec).unwrap_or_default();
        let feed = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&input).await;
        });
        let out = child.wait_with_output().await?;
        let _ = feed.await;
        if !out.status.success() {
            bail!(
                "curl {method} {url} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut stdout = out.stdout;
        let split = stdout
            .iter()
            .rposition(|&b| b == b'\n')
            .context("curl printed no status")?;
        let code: u16 = std::str::from_utf8(&stdout[split + 1..])?.trim().parse()?;
        stdout.truncate(split);
        Ok((code, stdout))
    }

    /// Every object of `bucket` as (key, size), via ListObjectsV2.
    pub async fn list_objects(&self, bucket: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = format!("{}?list-type=2", pct(bucket, false));
            if let Some(t) = &token {
                query.push_str(&format!("&continuation-token={}", pct(t, false)));
            }
            let (code, body) = self.s3_curl("GET", &query, None).await?;
            let xml = String::from_utf8_lossy(&body);
            if code != 200 {
                bail!("ListObjectsV2 {bucket}: HTTP {code}: {xml}");
            }
            for part in xml.split("<Contents>").skip(1) {
                let key = xml_field(part, "Key").context("Contents without Key")?;
                let size = xml_field(part, "Size").unwrap_or("0").parse().unwrap_or(0);
                out.push((xml_unescape(key), size));
            }
            match (
                xml_field(&xml, "IsTruncated"),
                xml_field(&xml, "NextContinuationToken"),
            ) {
                (Some("true"), Some(next)) => token = Some(xml_unescape(next)),
                _ => return Ok(out),
            }
        }
    }

    /// The object's bytes, `None` if it does not exist.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let (code, body) = self
            .s3_curl(
                "GET",
                &format!("{}/{}", pct(bucket, false), pct(key, true)),
                None,
            )
            .await?;
        match code {
            200 => Ok(Some(body)),
            404 => Ok(None),
            _ => bail!(
                "GetObject {bucket}/{key}: HTTP {code}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Upload `data` as `bucket/key`.
    pub async fn put_object(&self, bucket: &str, key: &str, data: &[u8]) -> Result<()> {
        let (code, body) = self
            .s3_curl(
                "PUT",
                &format!("{}/{}", pct(bucket, false), pct(key, true)),
                Some(data),
            )
            .await?;
        if code != 200 {
            bail!(
                "PutObject {bucket}/{key}: HTTP {code}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        let (code, body) = self
            .s3_curl(
                "DELETE",
                &format!("{}/{}", pct(bucket, false), pct(key, true)),
                None,
            )
            .await?;
        if code != 204 && code != 200 {
            bail!(
                "DeleteObject {bucket}/{key}: HTTP {code}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}
