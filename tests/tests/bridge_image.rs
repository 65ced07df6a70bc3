//! The bridge's OCI image, as `scripts/build-bridge-image.sh` writes it (directory in
//! `STASHLESS_BRIDGE_IMAGE`), read back by tools that did not write it: skopeo resolves
//! the index, each platform's config and manifest; umoci unpacks each platform's layer into
//! a root filesystem. The amd64 binary from that filesystem then runs as the image runs it
//! (chrooted into it, as the image's user, with only the image's environment) against the
//! API server; the arm64 one, a static aarch64 ELF, runs the same way under `qemu-aarch64`.
//! Rebuilt from its own contents, the image comes out byte for byte the same; pushed to a
//! registry with skopeo, it keeps its index digest.
//!
//! Tools (Debian's; `scripts/build-bridge-image.sh --with-test-tools` installs them):
//! skopeo, umoci, qemu-user, docker-registry, and gzip and GNU tar.
//!
//! Not ignored: these run in `cargo test --workspace`, which needs what `tests/setup.sh`
//! installs (the README's test command is `bash tests/run.sh`, which also builds this image and
//! exports `STASHLESS_BRIDGE_IMAGE`). Without the variable every test here fails, naming the
//! command that builds the image, as the end-to-end tests fail naming `tests/setup.sh` when a
//! server is missing: a missing artefact never passes as a skipped test. No default location
//! is looked at, so an image left from other sources is not tested by mistake. None depends
//! on the run's Kubernetes backend (the bridge runs against the in-memory API server), so
//! `tests/run.sh` skips them in the kube-apiserver pass.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stashless_tests::bridge_run::bridge_binary_conformance;
use stashless_tests::procs::poll_until;
use stashless_tests::{Cluster, init_logs};

const UID: u32 = 65532;
const CA: &str = "etc/ssl/certs/ca-certificates.crt";
/// Everything the layer holds: the binary, the user's passwd/group lines, the CA bundle
/// (kube's and the AWS SDK's rustls clients load their roots from the system). No shell.
const ENTRIES: [&str; 7] = [
    "bridge",
    "etc/",
    "etc/group",
    "etc/passwd",
    "etc/ssl/",
    "etc/ssl/certs/",
    CA,
];

fn image_dir() -> PathBuf {
    let dir = std::env::var_os("STASHLESS_BRIDGE_IMAGE")
        .filter(|v| !v.is_empty())
        .expect(
            "STASHLESS_BRIDGE_IMAGE is not set: build the image with \
             `bash scripts/build-bridge-image.sh --with-test-tools` (a release cross build; \
             the option also installs the tools these tests read it with) and set \
             STASHLESS_BRIDGE_IMAGE to the absolute path of the directory it wrote \
             (<repository>/target/image/stashless-bridge); `bash tests/run.sh` does both",
        );
    let dir = std::path::absolute(dir).unwrap();
    assert!(
        dir.join("index.json").is_file(),
        "{} holds no OCI image layout (index.json)",
        dir.display()
    );
    dir
}

/// Run a command to completion; its stdout, or a panic with its stderr.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (is it installed? scripts/build-bridge-image.sh --with-test-tools)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    // Signature policy governs pulls from registries; between local layouts it has nothing
    // to check, and a machine may have no /etc/containers/policy.json.
    c.arg("--insecure-policy");
    c
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A blob of the layout, checked against the digest and size that name it.
fn blob(dir: &Path, desc: &Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let data = std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        sha256(&data),
        digest,
        "blob content does not match its name"
    );
    assert_eq!(desc["size"], json!(data.len()), "{digest}: size");
    data
}

struct Image {
    dir: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`) in index.json.
    tag: String,
    index_desc: Value,
    index_raw: Vec<u8>,
    /// Architecture → the manifest's descriptor in the image index.
    platforms: BTreeMap<String, Value>,
}

impl Image {
    fn open() -> Image {
        let dir = image_dir();
        let layout: Value =
            serde_json::from_slice(&std::fs::read(dir.join("oci-layout")).unwrap()).unwrap();
        assert_eq!(layout, json!({"imageLayoutVersion": "1.0.0"}));
        let top: Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let tags = top["manifests"].as_array().unwrap();
        assert_eq!(tags.len(), 1, "one tagged image: {top}");
        let index_desc = tags[0].clone();
        assert_eq!(
            index_desc["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        let tag = index_desc["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap()
            .to_string();
        let index_raw = blob(&dir, &index_desc);
        let index: Value = serde_json::from_slice(&index_raw).unwrap();
        let platforms: BTreeMap<String, Value> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["platform"]["os"], "linux");
                (
                    m["platform"]["architecture"].as_str().unwrap().to_string(),
                    m.clone(),
                )
            })
            .collect();
        assert_eq!(
            platforms.keys().map(String::as_str).collect::<Vec<_>>(),
            ["amd64", "arm64"]
        );
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        Image {
            dir,
            tag,
            index_desc,
            index_raw,
            platforms,
        }
    }

    fn reference(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// One platform as skopeo resolves it: `skopeo inspect --raw --config`.
    fn config_via_skopeo(&self, arch: &str) -> Vec<u8> {
        run(skopeo()
            .args(["--override-os", "linux", "--override-arch", arch])
            .args(["inspect", "--raw", "--config"])
            .arg(self.reference()))
    }

    /// Copy one platform out with skopeo (a single-image layout), unpack it with umoci;
    /// the unpacked root filesystem.
    fn unpack(&self, arch: &str, scratch: &Path) -> PathBuf {
        let single = scratch.join(format!("oci-{arch}"));
        run(skopeo()
            .args(["--override-os", "linux", "--override-arch", arch])
            .arg("copy")
            .arg(self.reference())
            .arg(format!("oci:{}:{arch}", single.display())));
        // skopeo copied the platform's manifest unchanged: the same digest as in the index.
        let copied: Value =
            serde_json::from_slice(&std::fs::read(single.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            copied["manifests"][0]["digest"], self.platforms[arch]["digest"],
            "skopeo picked another manifest for {arch}, or rewrote it"
        );
        let bundle = scratch.join(format!("bundle-{arch}"));
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{arch}", single.display()))
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        assert_eq!(tree(&rootfs), ENTRIES.map(String::from).into());
        rootfs
    }
}

/// Every path under `root`, relative, directories with a trailing `/`.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if p.symlink_metadata().unwrap().is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// `(e_machine, has a PT_INTERP header)` of a 64-bit little-endian ELF file.
fn elf(path: &Path) -> (u16, bool) {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], b"\x7fELF", "{}: not ELF", path.display());
    assert_eq!((data[4], data[5]), (2, 1), "not ELFCLASS64, little-endian");
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54) as usize, u16_at(56) as usize);
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) == 3 // PT_INTERP
    });
    (u16_at(18), interp)
}

#[test]
fn index_configs_and_layers_read_back_as_built() {
    let img = Image::open();
    // skopeo resolves the tag to the same image index, byte for byte.
    let raw = run(skopeo().args(["inspect", "--raw"]).arg(img.reference()));
    assert_eq!(raw, img.index_raw, "skopeo read another index");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(img.tag, version);

    let scratch = tempfile::tempdir().unwrap();
    for (arch, desc) in &img.platforms {
        let manifest: Value = serde_json::from_slice(&blob(&img.dir, desc)).unwrap();
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let config_raw = blob(&img.dir, &manifest["config"]);
        assert_eq!(
            img.config_via_skopeo(arch),
            config_raw,
            "skopeo resolves {arch} to another config"
        );
        let config: Value = serde_json::from_slice(&config_raw).unwrap();
        assert_eq!(config["architecture"], arch.as_str());
        assert_eq!(config["os"], "linux");
        let c = &config["config"];
        assert_eq!(c["User"], format!("{UID}:{UID}"), "a non-root user");
        assert_eq!(c["Entrypoint"], json!(["/bridge"]));
        assert!(c.get("Cmd").is_none(), "no Cmd: {c}");
        assert_eq!(c["Env"], json!([format!("SSL_CERT_FILE=/{CA}")]));
        assert_eq!(c["WorkingDir"], "/");
        let labels = &c["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], version);
        let revision = labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap();
        assert!(
            revision.len() >= 40 && revision[..40].bytes().all(|b| b.is_ascii_hexdigit()),
            "revision {revision}: a commit id"
        );
        let created = config["created"].as_str().unwrap();
        assert_eq!(labels["org.opencontainers.image.created"], created);

        // One gzip layer whose uncompressed tar is the config's diff_id.
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        blob(&img.dir, &layers[0]);
        let hex = layers[0]["digest"].as_str().unwrap()["sha256:".len()..].to_string();
        let layer_path = img.dir.join("blobs/sha256").join(hex);
        let tar = run(Command::new("gzip").arg("-dc").arg(&layer_path));
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(config["rootfs"]["diff_ids"], json!([sha256(&tar)]));
        // GNU tar's listing: owners numeric 0/0, every mtime the image's creation time.
        let listing = run(Command::new("tar")
            .env("TZ", "UTC")
            .args(["--numeric-owner", "--full-time", "-tvzf"])
            .arg(&layer_path));
        let when = created.trim_end_matches('Z').replace('T', " ");
        let mut names = BTreeSet::new();
        for line in String::from_utf8(listing).unwrap().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (mode, owner, date, time, name) = (f[0], f[1], f[3], f[4], f[5]);
            assert_eq!(owner, "0/0", "{line}");
            assert_eq!(format!("{date} {time}"), when, "{line}");
            let want = match name {
                "bridge" => "-r-xr-xr-x",
                n if n.ends_with('/') => "drwxr-xr-x",
                _ => "-r--r--r--",
            };
            assert_eq!(mode, want, "{line}");
            names.insert(name.to_string());
        }
        assert_eq!(names, ENTRIES.map(String::from).into());

        // Unpacked by umoci: the same files; the user and the binary's machine.
        let rootfs = img.unpack(arch, scratch.path());
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
        assert!(
            passwd.starts_with(&format!("nonroot:x:{UID}:{UID}:")),
            "{passwd}"
        );
        let bundle = std::fs::read_to_string(rootfs.join(CA)).unwrap();
        assert!(
            bundle.matches("-----BEGIN CERTIFICATE-----").count() > 50,
            "a CA bundle, not an empty file"
        );
        let machine = match arch.as_str() {
            "amd64" => 62,  // EM_X86_64
            "arm64" => 183, // EM_AARCH64
            _ => unreachable!(),
        };
        assert_eq!(
            elf(&rootfs.join("bridge")),
            (machine, false),
            "{arch}: (e_machine, dynamic)"
        );
    }
}

#[test]
fn rebuilt_from_its_own_contents_the_image_is_byte_identical() {
    let img = Image::open();
    let scratch = tempfile::tempdir().unwrap();
    // Every input of build-bridge-image.py, recovered from the image: the binaries and CA
    // bundle from the unpacked layers, the rest from the amd64 config.
    let mut args: Vec<String> = Vec::new();
    let mut bundle = None;
    for arch in img.platforms.keys() {
        let rootfs = img.unpack(arch, scratch.path());
        args.push("--binary".into());
        args.push(format!("{arch}={}", rootfs.join("bridge").display()));
        bundle = Some(rootfs.join(CA));
    }
    let config: Value = serde_json::from_slice(&img.config_via_skopeo("amd64")).unwrap();
    let labels = &config["config"]["Labels"];
    let label = |k: &str| labels[k].as_str().unwrap_or("").to_string();
    let created = config["created"].as_str().unwrap();
    let epoch = chrono::DateTime::parse_from_rfc3339(created)
        .unwrap()
        .timestamp();
    // The history comment ends with the bundle's origin in parentheses.
    let comment = config["history"][0]["comment"].as_str().unwrap();
    let origin = comment
        .rsplit_once(&format!("/{CA} ("))
        .map(|(_, o)| o.trim_end_matches(')').to_string())
        .unwrap_or_default();
    let out = scratch.path().join("rebuilt");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-bridge-image.py");
    run(Command::new("python3")
        .arg(script)
        .arg("--out")
        .arg(&out)
        .args(args)
        .arg("--ca-bundle")
        .arg(bundle.unwrap())
        .args(["--ca-origin", &origin])
        .args(["--version", &label("org.opencontainers.image.version")])
        .args(["--revision", &label("org.opencontainers.image.revision")])
        .args(["--source", &label("org.opencontainers.image.source")])
        .args(["--epoch", &epoch.to_string()])
        .args(["--ref-name", &img.tag]));
    let rebuilt = std::fs::read(out.join("index.json")).unwrap();
    assert_eq!(
        String::from_utf8(rebuilt).unwrap(),
        std::fs::read_to_string(img.dir.join("index.json")).unwrap(),
        "another index digest from the same inputs"
    );
    // And every file the same: no blob left over or missing.
    let files = |root: &Path| -> BTreeMap<String, Vec<u8>> {
        tree(root)
            .into_iter()
            .filter(|p| !p.ends_with('/'))
            .map(|p| (p.clone(), std::fs::read(root.join(&p)).unwrap()))
            .collect()
    };
    let (a, b) = (files(&out), files(&img.dir));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a == b, "same files, other bytes");
}

/// A command that runs `/bridge` chrooted into `rootfs` as the image's user, with only the
/// image's environment: what a container runtime does, less the namespaces (the API server
/// and the bus are on this host's loopback).
fn as_the_image_runs_it(rootfs: &Path, env: &Value) -> tokio::process::Command {
    let root = CString::new(rootfs.as_os_str().as_bytes()).unwrap();
    let mut cmd = tokio::process::Command::new("/bridge");
    cmd.env_clear();
    for kv in env.as_array().unwrap() {
        let (k, v) = kv.as_str().unwrap().split_once('=').unwrap();
        cmd.env(k, v);
    }
    // SAFETY: only async-signal-safe system calls between fork and exec. They run here,
    // not through Command::uid (applied before pre_exec), because chroot needs root.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::chroot(root.as_ptr()))?;
            check(libc::chdir(c"/".as_ptr()))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(UID))?;
            check(libc::setuid(UID))
        });
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amd64_binary_from_the_image_serves_as_the_bridge() {
    init_logs();
    assert_eq!(
        std::env::consts::ARCH,
        "x86_64",
        "this test runs the amd64 image's binary natively"
    );
    let img = Image::open();
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = img.unpack("amd64", scratch.path());
    let config: Value = serde_json::from_slice(&img.config_via_skopeo("amd64")).unwrap();
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "chroot and setuid to the image's user need root"
    );
    // The bridge loads its TLS roots as it starts (kube's and the AWS SDK's rustls clients
    // read the system's), so this run, which sees no file but the image's, also proves the
    // image's CA bundle: without it the bridge exits "No CA certificates were loaded from
    // the system". The in-memory API server whatever the run's backend: this test is about
    // the image, and a real server's token and CA files are outside the chroot.
    let cluster = Cluster::memory().await.unwrap();
    let cmd = as_the_image_runs_it(&rootfs, &config["config"]["Env"]);
    bridge_binary_conformance(&cluster, cmd, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm64_binary_from_the_image_serves_as_the_bridge_under_qemu() {
    init_logs();
    let img = Image::open();
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = img.unpack("arm64", scratch.path());
    assert_eq!(elf(&rootfs.join("bridge")), (183, false));
    let qemu = which("qemu-aarch64").expect(
        "qemu-aarch64 (Debian's qemu-user; scripts/build-bridge-image.sh --with-test-tools)",
    );
    let config: Value = serde_json::from_slice(&img.config_via_skopeo("arm64")).unwrap();
    // qemu itself is a host binary and cannot run chrooted into the image; the guest gets
    // the image's environment, and -L makes its absolute paths (the CA bundle) resolve in
    // the image's files first. Emulation is slow: more time to start.
    let mut cmd = tokio::process::Command::new(qemu);
    cmd.arg("-L")
        .arg(&rootfs)
        .arg(rootfs.join("bridge"))
        .env_clear();
    for kv in config["config"]["Env"].as_array().unwrap() {
        let (k, v) = kv.as_str().unwrap().split_once('=').unwrap();
        cmd.env(k, v);
    }
    let cluster = Cluster::memory().await.unwrap();
    bridge_binary_conformance(&cluster, cmd, Duration::from_secs(120)).await;
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Debian's `docker-registry` (the CNCF distribution registry) on a loopback port, storing
/// under `dir`; killed on drop.
struct Registry {
    addr: String,
    _child: tokio::process::Child,
}

impl Registry {
    async fn start(dir: &Path) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut child = tokio::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            // It logs the 404s of the blob checks skopeo makes before each upload as
            // errors: noise in the test output. Failures show in skopeo's answers.
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry (Debian's docker-registry; scripts/build-bridge-image.sh --with-test-tools)");
        let url = format!("http://{addr}/v2/");
        poll_until("docker-registry to answer", Duration::from_secs(30), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("docker-registry exited: {status:?}");
            }
            let url = &url;
            async move {
                let r = reqwest::get(url).await?;
                Ok(r.status().is_success().then_some(()))
            }
        })
        .await
        .expect("docker-registry never answered");
        Registry {
            addr,
            _child: child,
        }
    }
}

/// The README's push: `skopeo copy --all --preserve-digests --digestfile`. The registry
/// serves the same index (so the digest the module's `bridge_image_digest` takes is the
/// one the build printed) and each platform's config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_with_skopeo_the_image_keeps_its_index_digest() {
    init_logs();
    let img = Image::open();
    let scratch = tempfile::tempdir().unwrap();
    let registry = Registry::start(scratch.path()).await;
    let remote = format!("docker://{}/stashless-bridge:{}", registry.addr, img.tag);
    let digest_file = scratch.path().join("digest");
    // Plain HTTP on loopback: TLS verification off is what lets skopeo use it.
    run(skopeo()
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(img.reference())
        .arg(&remote));
    let want = img.index_desc["digest"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(&digest_file).unwrap().trim(), want);
    let inspected = run(skopeo()
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(&remote));
    assert_eq!(String::from_utf8(inspected).unwrap().trim(), want);
    let raw = run(skopeo()
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(&remote));
    assert_eq!(raw, img.index_raw);
    for (arch, desc) in &img.platforms {
        let manifest: Value = serde_json::from_slice(&blob(&img.dir, desc)).unwrap();
        let config = run(skopeo()
            .args(["--override-os", "linux", "--override-arch", arch])
            .args(["inspect", "--tls-verify=false", "--raw", "--config"])
            .arg(&remote));
        assert_eq!(config, blob(&img.dir, &manifest["config"]), "{arch}");
    }
}
