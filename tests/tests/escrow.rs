//! The bad day, rehearsed: cluster A (Shamir, 5 shares, threshold 3, keys in a
//! KubeVault-style Secret) is backed up with its keys escrowed under KMS (moto); a forced
//! restore into cluster B (other keys; one node, and a 3-node raft cluster) ends with B
//! unsealed, A's data readable in B and A's keys in B's store. Every way the escrow can be
//! wrong fails before a byte is sent, with B untouched. The pre-restore snapshot undoes a
//! restore.

use std::sync::Arc;

use serde_json::{Value, json};
use stashless::api::{AppBinding, BackupSession, RestoreSession};
use stashless::context::{Context, EscrowKey, Settings};
use stashless::repository::{Manifest, Tuning};
use stashless::session::Outcome;
use stashless_tests::Cluster;
use stashless_tests::moto::Moto;
use stashless_tests::procs::openbao::{BaoCluster, OpenBao};
use stashless_tests::world::{World, failed_reason, session_ref};

const A_PREFIX: &str = "k8s.kubevault.com.demo.vault";
const B_PREFIX: &str = "k8s.kubevault.com.demo.target";

/// What a test needs: the world (A, Garage, Repository `repo`, config `cfg`), moto with a
/// KMS key, and a context that escrows with it.
struct Drill {
    w: World,
    moto: Moto,
    key_id: String,
    a_keys: Vec<String>,
    ctx: Arc<Context>,
}

fn settings(moto: &Moto, key_id: &str, region: &str) -> Settings {
    let aws = moto
        .sdk_config()
        .into_builder()
        .region(aws_config::Region::new(region.to_string()))
        .build();
    Settings {
        tuning: Tuning {
            part_size: 5 * 1024 * 1024,
            parts_in_flight: 3,
            checksums_when_required: false,
        },
        escrow_key: Some(EscrowKey::Kms(key_id.into())),
        aws: Some(aws),
        ..Settings::default()
    }
}

/// The unsealer store KubeVault describes on the AppBinding, and the Secret it names.
async fn kubevault_keys(
    cluster: &Cluster,
    binding: &str,
    secret: &str,
    prefix: &str,
    keys: &[String],
    root_token: &str,
) {
    let mut data: Vec<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("{prefix}-unseal-key-{i}"), k.clone()))
        .collect();
    data.push((format!("{prefix}-root-token"), root_token.to_string()));
    let pairs: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    cluster.secret(secret, &pairs).await.unwrap();
    name_store(cluster, binding, secret).await;
}

async fn name_store(cluster: &Cluster, binding: &str, secret: &str) {
    let patch = json!({"spec": {"parameters": {
        "apiVersion": "config.kubevault.com/v1alpha1", "kind": "VaultServerConfiguration",
        "unsealer": {"secretShares": 5, "secretThreshold": 3,
                     "mode": {"kubernetesSecret": {"secretName": secret}}}}}});
    cluster
        .api::<AppBinding>()
        .patch(
            binding,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
}

async fn drill(tag: &str) -> Drill {
    let (a, a_keys) = OpenBao::start_shamir(5, 3).await.unwrap();
    let w = World::builder(tag)
        .with_openbao(a)
        .app_binding()
        .backup_to("escrow")
        .build()
        .await;
    kubevault_keys(
        &w.cluster,
        "vault",
        "vault-keys",
        A_PREFIX,
        &a_keys,
        &w.bao().root_token,
    )
    .await;
    let moto = Moto::start().await.unwrap();
    let kms = aws_sdk_kms::Client::new(&moto.sdk_config());
    let key_id = kms
        .create_key()
        .description("stashless escrow (test)")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let ctx = Context::new(
        w.cluster.client.clone(),
        settings(&moto, &key_id, "us-east-1"),
    );
    Drill {
        w,
        moto,
        key_id,
        a_keys,
        ctx,
    }
}

impl Drill {
    async fn backup(&self, session: &str) -> String {
        self.w
            .cluster
            .backup_now(&self.ctx, "cfg", session)
            .await
            .unwrap()
    }

    async fn manifest(&self, snapshot: &str) -> Manifest {
        let key = format!("escrow/snapshots/{snapshot}.json");
        serde_json::from_slice(&self.w.s3().get(self.w.bucket(), &key).await.unwrap()).unwrap()
    }

    async fn restore_with(
        &self,
        ctx: &Context,
        name: &str,
        target: &str,
        snapshot: &str,
    ) -> Outcome {
        self.w
            .cluster
            .new_restore(name, "repo", target, Some(snapshot), true)
            .await
            .unwrap();
        stashless::restore::run(ctx, &session_ref(name), None)
            .await
            .unwrap()
    }

    async fn restore(&self, name: &str, target: &str, snapshot: &str) -> Outcome {
        self.restore_with(&self.ctx, name, target, snapshot).await
    }

    /// Cluster B: a fresh single node with its own keys behind AppBinding `target`, a
    /// marker secret, and its keys in Secret `target-keys`.
    async fn target(&self) -> OpenBao {
        let b = OpenBao::start().await.unwrap();
        self.bind_target(&b.addr, &b.root_token, std::slice::from_ref(&b.unseal_key))
            .await;
        b.kv_put("b/marker", json!({"v": "cluster-b"}))
            .await
            .unwrap();
        b
    }

    async fn bind_target(&self, addr: &str, token: &str, keys: &[String]) {
        self.w
            .cluster
            .vault_binding("target", addr, token)
            .await
            .unwrap();
        kubevault_keys(
            &self.w.cluster,
            "target",
            "target-keys",
            B_PREFIX,
            keys,
            token,
        )
        .await;
    }

    async fn secret_data(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        let s: k8s_openapi::api::core::v1::Secret = self.w.cluster.api().get(name).await.unwrap();
        let mut out: std::collections::BTreeMap<String, String> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect();
        for (k, v) in s.string_data.unwrap_or_default() {
            out.insert(k, v);
        }
        out
    }

    async fn restore_status(&self, name: &str) -> Value {
        let rs: RestoreSession = self.w.cluster.restore_session(name).await.unwrap();
        serde_json::to_value(rs.status.unwrap()).unwrap()
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no condition {type_} in {status}"))
}

/// No key or token of either cluster in `text`, in clear or base64.
fn assert_no_secrets(text: &str, secrets: &[&str]) {
    use base64::Engine;
    for s in secrets {
        let b64 = base64::engine::general_purpose::STANDARD.encode(s);
        assert!(!text.contains(s), "a secret appears in clear");
        assert!(!text.contains(&b64), "a secret appears in base64");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_restore_into_a_new_cluster_ends_unsealed_with_the_source_keys_and_can_be_undone()
{
    let d = drill("escrow-cross").await;
    let a = d.w.bao();
    a.kv_put("app/db", json!({"password": "from-a"}))
        .await
        .unwrap();
    let snapshot = d.backup("cfg-1").await;

    // The backup escrowed A's keys, sealed: the manifest says what, the session says so.
    let m = d.manifest(&snapshot).await;
    let seal = m.seal.clone().unwrap();
    assert_eq!(seal.type_, "shamir");
    assert_eq!((seal.shares, seal.threshold), (Some(5), Some(3)));
    let escrow = seal
        .escrow
        .clone()
        .unwrap_or_else(|| panic!("not escrowed: {seal:?}"));
    assert_eq!((escrow.keys, escrow.root_token), (5, true));
    assert_eq!(escrow.store, "kubernetesSecret");
    assert_eq!(escrow.key_prefix, A_PREFIX);
    assert_eq!(escrow.kms_key_id, d.key_id);
    let session: BackupSession = d.w.cluster.session("cfg-1").await.unwrap();
    let st = serde_json::to_value(session.status.unwrap()).unwrap();
    assert_eq!(
        condition(&st, "UnsealKeysEscrowed")["status"],
        "True",
        "{st}"
    );
    let escrow_object =
        String::from_utf8(d.w.s3().get(d.w.bucket(), &escrow.key).await.unwrap()).unwrap();
    let mut secrets: Vec<&str> = d.a_keys.iter().map(String::as_str).collect();
    secrets.push(&a.root_token);
    assert_no_secrets(&escrow_object, &secrets);
    assert_no_secrets(&serde_json::to_string(&m).unwrap(), &secrets);

    // Cluster B, other keys; A's snapshot forced into it.
    let b = d.target().await;
    let b_keys_before = d.secret_data("target-keys").await;
    let o = d.restore("rs-cross", "target", &snapshot).await;
    let Outcome::Succeeded { sealed_after, .. } = &o else {
        panic!("{o:?}")
    };
    assert!(!sealed_after);
    let health = b.health().await.unwrap();
    assert_eq!(health["sealed"], false, "{health}");
    let v = b
        .kv_get_with_token("app/db", &a.root_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["password"], "from-a");
    // A's keys (and root token) are B's now, under B's prefix; B's are gone.
    let now = d.secret_data("target-keys").await;
    for (i, k) in d.a_keys.iter().enumerate() {
        assert_eq!(now.get(&format!("{B_PREFIX}-unseal-key-{i}")), Some(k));
    }
    assert_eq!(
        now.get(&format!("{B_PREFIX}-root-token")),
        Some(&a.root_token)
    );
    assert_eq!(now.len(), 6, "{:?}", now.keys());
    let st = d.restore_status("rs-cross").await;
    let keys = condition(&st, "UnsealKeysRestored")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        keys.contains("Vault is unsealed") && keys.contains("target-keys"),
        "{keys}"
    );
    assert!(
        keys.contains("no longer valid"),
        "B's token died with B's data: {keys}"
    );
    let ns = snapshot.split('/').next().unwrap();
    let undo_name = format!("{ns}/rs-cross-pre-restore");
    let undo = condition(&st, "PreRestoreSnapshotTaken")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(undo.contains(&undo_name), "{undo}");
    let undo_seal = d.manifest(&undo_name).await.seal.unwrap();
    assert_eq!(
        undo_seal.escrow.unwrap().key_prefix,
        B_PREFIX,
        "the undo escrows B's own keys"
    );
    let mut all: Vec<&str> = secrets.clone();
    all.push(&b.root_token);
    all.push(&b.unseal_key);
    assert_no_secrets(&st.to_string(), &all);

    // Undo: the pre-restore snapshot brings B's own data and keys back, unsealed. As the
    // status asked, the AppBinding first gets a token valid in the restored data.
    let patch = json!({"stringData": {"token": a.root_token}});
    d.w.cluster
        .api::<k8s_openapi::api::core::v1::Secret>()
        .patch(
            "target-token",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let o = d.restore("rs-undo", "target", &undo_name).await;
    assert!(
        matches!(
            o,
            Outcome::Succeeded {
                sealed_after: false,
                ..
            }
        ),
        "{o:?}"
    );
    let v = b
        .kv_get_with_token("b/marker", &b.root_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["v"], "cluster-b");
    assert_eq!(
        b.kv_get_with_token("app/db", &b.root_token).await.unwrap(),
        None,
        "A's data is gone again"
    );
    assert_eq!(d.secret_data("target-keys").await, b_keys_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_restore_unseals_every_node_of_a_raft_cluster() {
    let d = drill("escrow-raft").await;
    let a = d.w.bao();
    a.kv_put("app/db", json!({"password": "into-raft"}))
        .await
        .unwrap();
    let snapshot = d.backup("cfg-1").await;
    let b = BaoCluster::start(3).await.unwrap();
    let leader = &b.nodes[b.leader_index().await.unwrap()];
    d.bind_target(
        &leader.addr,
        &leader.root_token,
        std::slice::from_ref(&leader.unseal_key),
    )
    .await;
    let o = d.restore("rs-raft", "target", &snapshot).await;
    assert!(
        matches!(
            o,
            Outcome::Succeeded {
                sealed_after: false,
                ..
            }
        ),
        "{o:?}"
    );
    for node in &b.nodes {
        let s = node.seal_status().await.unwrap();
        assert_eq!(s["sealed"], false, "{} {s}", node.addr);
        assert_eq!(
            (s["n"].as_u64(), s["t"].as_u64()),
            (Some(5), Some(3)),
            "{s}"
        );
    }
    let v = leader.kv_get_with_token("app/db", &a.root_token).await;
    let active = match v {
        Ok(Some(v)) => v,
        _ => {
            let i = b.leader_index().await.unwrap();
            b.nodes[i]
                .kv_get_with_token("app/db", &a.root_token)
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(active["password"], "into-raft");
    let st = d.restore_status("rs-raft").await;
    let keys = condition(&st, "UnsealKeysRestored")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(keys.contains("3 node(s) unsealed"), "{keys}");
}

/// Each broken escrow fails the restore before anything is sent: B keeps its data, its
/// keys and its seal, and no pre-restore snapshot is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_escrow_fails_the_restore_with_the_target_untouched() {
    let d = drill("escrow-broken").await;
    let first = d.backup("cfg-1").await;
    let second = d.backup("cfg-2").await;
    let b = d.target().await;
    let keys_before = d.secret_data("target-keys").await;
    let untouched = |what: &'static str| {
        let (d, b, keys_before) = (&d, &b, &keys_before);
        async move {
            let h = b.health().await.unwrap();
            assert_eq!(h["sealed"], false, "{what}: {h}");
            let v = b
                .kv_get_with_token("b/marker", &b.root_token)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(v["v"], "cluster-b", "{what}");
            assert_eq!(&d.secret_data("target-keys").await, keys_before, "{what}");
            let listed =
                d.w.s3()
                    .keys(d.w.bucket(), "escrow/snapshots/")
                    .await
                    .unwrap();
            assert!(
                !listed.iter().any(|k| k.contains("pre-restore")),
                "{what}: {listed:?}"
            );
        }
    };

    // KMS refuses the decrypt: the restore's identity cannot use the key (here: the key is
    // not in the region the restore's KMS client asks).
    let denied = Context::new(
        d.w.cluster.client.clone(),
        settings(&d.moto, &d.key_id, "eu-west-1"),
    );
    let o = d.restore_with(&denied, "rs-denied", "target", &first).await;
    let why = failed_reason(&o);
    // (Real KMS answers AccessDeniedException; moto, asked in another region, that the key
    // does not exist there.)
    assert!(
        why.contains("KMS Decrypt")
            && (why.contains("AccessDenied") || why.contains("NotFoundException"))
            && why.contains("nothing was restored"),
        "{why}"
    );
    untouched("KMS denied").await;

    // Another snapshot's escrow in this one's place.
    let m1 = d.manifest(&first).await;
    let m2 = d.manifest(&second).await;
    let (k1, k2) = (
        m1.seal.unwrap().escrow.unwrap().key,
        m2.seal.unwrap().escrow.unwrap().key,
    );
    let other = d.w.s3().get(d.w.bucket(), &k2).await.unwrap();
    d.w.s3()
        .client()
        .put_object()
        .bucket(d.w.bucket())
        .key(&k1)
        .body(other.into())
        .send()
        .await
        .unwrap();
    let o = d.restore("rs-swapped", "target", &first).await;
    let why = failed_reason(&o);
    assert!(
        why.contains("not this snapshot's") && why.contains("nothing was restored"),
        "{why}"
    );
    untouched("escrow swapped").await;

    // The escrow object deleted.
    d.w.s3()
        .client()
        .delete_object()
        .bucket(d.w.bucket())
        .key(&k1)
        .send()
        .await
        .unwrap();
    let o = d.restore("rs-deleted", "target", &first).await;
    let why = failed_reason(&o);
    assert!(
        why.contains("is missing") && why.contains("nothing was restored"),
        "{why}"
    );
    untouched("escrow deleted").await;

    // Every failed session is Failed with its reason, no key in any status.
    let mut secrets: Vec<&str> = d.a_keys.iter().map(String::as_str).collect();
    secrets.extend([
        d.w.bao().root_token.as_str(),
        b.root_token.as_str(),
        b.unseal_key.as_str(),
    ]);
    for name in ["rs-denied", "rs-swapped", "rs-deleted"] {
        let st = d.restore_status(name).await;
        assert_eq!(st["phase"], "Failed", "{st}");
        assert_no_secrets(&st.to_string(), &secrets);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_keys_cannot_be_read_succeeds_and_says_why_nothing_was_escrowed() {
    let d = drill("escrow-nokeys").await;
    name_store(&d.w.cluster, "vault", "no-such-secret").await;
    let snapshot = d.backup("cfg-1").await;
    let session: BackupSession = d.w.cluster.session("cfg-1").await.unwrap();
    let st = serde_json::to_value(session.status.unwrap()).unwrap();
    assert_eq!(st["phase"], "Succeeded", "{st}");
    let c = condition(&st, "UnsealKeysEscrowed");
    assert_eq!(c["status"], "False", "{st}");
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains("no-such-secret") && msg.contains("not found"),
        "{msg}"
    );
    let seal = d.manifest(&snapshot).await.seal.unwrap();
    assert!(seal.escrow.is_none());
    assert!(seal.not_escrowed.unwrap().contains("no-such-secret"));
    let listed =
        d.w.s3()
            .keys(d.w.bucket(), "escrow/snapshots/")
            .await
            .unwrap();
    assert!(!listed.iter().any(|k| k.ends_with(".escrow")), "{listed:?}");

    // Without an escrow, a forced restore into B still restores, and says B is sealed and
    // why no keys came with the snapshot.
    let b = d.target().await;
    let o = d.restore("rs", "target", &snapshot).await;
    assert!(
        matches!(
            o,
            Outcome::Succeeded {
                sealed_after: true,
                ..
            }
        ),
        "{o:?}"
    );
    let st = d.restore_status("rs").await;
    let msg = condition(&st, "RestoreCompleted")["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains("SEALED") && msg.contains("not escrowed"),
        "{msg}"
    );
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_a_snapshots_escrow_with_it() {
    let d = drill("escrow-retention").await;
    d.w.cluster
        .api::<stashless::api::BackupConfiguration>()
        .patch(
            "cfg",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"retentionPolicy": {"name": "one", "keepLast": 1, "prune": true}}}),
            ),
        )
        .await
        .unwrap();
    let first = d.backup("cfg-1").await;
    let escrow = d.manifest(&first).await.seal.unwrap().escrow.unwrap().key;
    let second = d.backup("cfg-2").await;
    let listed =
        d.w.s3()
            .keys(d.w.bucket(), "escrow/snapshots/")
            .await
            .unwrap();
    assert!(!listed.contains(&escrow), "{listed:?}");
    assert!(!listed.iter().any(|k| k.contains("/cfg-1.")), "{listed:?}");
    let kept = d.manifest(&second).await.seal.unwrap().escrow.unwrap().key;
    assert!(listed.contains(&kept), "{listed:?}");
}

/// moto's SSM over its JSON protocol, written the way KubeVault's unsealer writes (base64 of a
/// KMS ciphertext under the unsealer's key, context `Tool=vault-unsealer`): independent of
/// stashless's own SSM code.
async fn ssm_call(moto: &Moto, action: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(&moto.endpoint)
        .header("X-Amz-Target", format!("AmazonSSM.{action}"))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "SSM {action}: {status} {v}");
    v
}

async fn unsealer_put(
    moto: &Moto,
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    name: &str,
    value: &str,
) {
    use base64::Engine;
    let blob = kms
        .encrypt()
        .key_id(key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(value.as_bytes()))
        .encryption_context("Tool", "vault-unsealer")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
        .into_inner();
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    ssm_call(
        moto,
        "PutParameter",
        json!({"Name": name, "Value": b64, "Type": "String", "Overwrite": true}),
    )
    .await;
}

async fn unsealer_get(moto: &Moto, kms: &aws_sdk_kms::Client, name: &str) -> String {
    use base64::Engine;
    let v = ssm_call(moto, "GetParameter", json!({"Name": name})).await;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(v["Parameter"]["Value"].as_str().unwrap())
        .unwrap();
    let plain = kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
        .encryption_context("Tool", "vault-unsealer")
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap()
        .into_inner();
    String::from_utf8(plain).unwrap()
}

async fn name_ssm_store(
    cluster: &Cluster,
    binding: &str,
    kms_key: &str,
    ssm_prefix: &str,
    key_prefix: &str,
) {
    let patch = json!({
        "metadata": {"annotations": {"stashless.io/unseal-key-prefix": key_prefix}},
        "spec": {"parameters": {
            "apiVersion": "config.kubevault.com/v1alpha1", "kind": "VaultServerConfiguration",
            "unsealer": {"secretShares": 5, "secretThreshold": 3, "mode": {"kubernetesSecret": null, "awsKmsSsm": {
                "kmsKeyID": kms_key, "region": "us-east-1", "ssmKeyPrefix": ssm_prefix}}}}}});
    cluster
        .api::<AppBinding>()
        .patch(
            binding,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
}

/// KubeVault's awsKmsSsm store on both sides: A's keys read from SSM at backup, written into
/// B's SSM parameters (under B's unsealer key) by the forced restore, B unsealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubevault_aws_kms_ssm_keys_travel_from_one_cluster_to_another() {
    let d = drill("escrow-ssm").await;
    let kms = aws_sdk_kms::Client::new(&d.moto.sdk_config());
    let unsealer_key = |desc: &'static str| {
        let kms = kms.clone();
        async move {
            kms.create_key()
                .description(desc)
                .send()
                .await
                .unwrap()
                .key_metadata
                .unwrap()
                .key_id
        }
    };
    let (a_unsealer, b_unsealer) = (
        unsealer_key("A's unsealer").await,
        unsealer_key("B's unsealer").await,
    );
    let a = d.w.bao();
    for (i, k) in d.a_keys.iter().enumerate() {
        unsealer_put(
            &d.moto,
            &kms,
            &a_unsealer,
            &format!("/a/{A_PREFIX}-unseal-key-{i}"),
            k,
        )
        .await;
    }
    unsealer_put(
        &d.moto,
        &kms,
        &a_unsealer,
        &format!("/a/{A_PREFIX}-root-token"),
        &a.root_token,
    )
    .await;
    name_ssm_store(&d.w.cluster, "vault", &a_unsealer, "/a/", A_PREFIX).await;
    a.kv_put("app/db", json!({"password": "via-ssm"}))
        .await
        .unwrap();
    let snapshot = d.backup("cfg-1").await;
    let escrow = d.manifest(&snapshot).await.seal.unwrap().escrow.unwrap();
    assert_eq!(
        (escrow.store.as_str(), escrow.keys),
        ("awsKmsSsm", 5),
        "{escrow:?}"
    );

    let b = OpenBao::start().await.unwrap();
    d.w.cluster
        .vault_binding("target", &b.addr, &b.root_token)
        .await
        .unwrap();
    unsealer_put(
        &d.moto,
        &kms,
        &b_unsealer,
        &format!("/b/{B_PREFIX}-unseal-key-0"),
        &b.unseal_key,
    )
    .await;
    name_ssm_store(&d.w.cluster, "target", &b_unsealer, "/b/", B_PREFIX).await;
    let o = d.restore("rs-ssm", "target", &snapshot).await;
    assert!(
        matches!(
            o,
            Outcome::Succeeded {
                sealed_after: false,
                ..
            }
        ),
        "{o:?}"
    );
    let v = b
        .kv_get_with_token("app/db", &a.root_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["password"], "via-ssm");
    for (i, k) in d.a_keys.iter().enumerate() {
        assert_eq!(
            &unsealer_get(&d.moto, &kms, &format!("/b/{B_PREFIX}-unseal-key-{i}")).await,
            k
        );
    }
    assert_eq!(
        unsealer_get(&d.moto, &kms, &format!("/b/{B_PREFIX}-root-token")).await,
        a.root_token
    );
}
