//! Vault login with the function's IAM role (`awsAuth` in the AppBinding): the signed
//! GetCallerIdentity request, held to botocore's signer and answered by a real STS API
//! (moto); and the session failing readably when the login is refused by a real OpenBao.

use std::sync::Arc;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use serde_json::json;
use stashless::api::SessionPhase;
use stashless::backup;
use stashless::context::{Context, Settings};
use stashless::repository::Tuning;
use stashless::session::Outcome;
use stashless_tests::moto::Moto;
use stashless_tests::{Cluster, World, session_ref};

/// The ARN moto's STS reports for `creds`.
async fn caller_arn(moto: &Moto, creds: &Credentials) -> String {
    let conf = moto
        .sdk_config()
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(creds.clone()))
        .build();
    aws_sdk_sts::Client::new(&conf)
        .get_caller_identity()
        .send()
        .await
        .unwrap()
        .arn
        .unwrap()
}

fn context(cluster: &Cluster, creds: Credentials) -> Arc<Context> {
    Context::with_aws_credentials(
        cluster.client.clone(),
        Settings {
            tuning: Tuning {
                part_size: 5 * 1024 * 1024,
                parts_in_flight: 2,
                checksums_when_required: false,
            },
            ..Settings::default()
        },
        SharedCredentialsProvider::new(creds),
    )
}

async fn aws_binding(cluster: &Cluster, name: &str, addr: &str, role: &str) {
    cluster
        .create::<stashless::api::AppBinding>(json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": name},
            "spec": {
                "type": "vault", "version": "2.7.2",
                "clientConfig": {"url": addr},
                "parameters": {
                    "apiVersion": "config.kubevault.com/v1alpha1", "kind": "VaultServerConfiguration",
                    "awsAuth": {"role": role, "serverIdHeader": "vault.example.com"},
                },
            }
        }))
        .await
        .unwrap();
}

/// OpenBao 2.x, the Vault server these tests can run, no longer builds the `aws` auth method
/// in (it lives in the separate openbao-plugins repository, which no reachable registry
/// ships). So the two halves are proven separately: the signed request is the one botocore
/// signs and a real STS API (moto) answers it with the signer's identity; the login call
/// against a real OpenBao without the method fails the session with a reason naming the
/// role and mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signed_login_request_is_botocore_s_and_sts_answers_it_with_our_identity() {
    let cases = [
        (
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            Some("vault.example.com"),
        ),
        (
            "ASIAEXAMPLE",
            "s/e+c=r",
            Some("FwoGZXIvYXdzEBYaDH+session=="),
            Some("eu-west-1"),
            None,
        ),
    ];
    let unix = 1_700_000_000u64;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    for (access, secret, session, region, server_id) in cases {
        let creds = Credentials::new(access, secret, session.map(str::to_string), None, "t");
        let ours =
            stashless::aws_login::caller_identity_request(&creds, region, server_id, t).unwrap();
        let out = std::process::Command::new("python3")
            .args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/oracle/sts_login.py"),
                access,
                secret,
                session.unwrap_or("-"),
                region.unwrap_or("-"),
                server_id.unwrap_or("-"),
                &unix.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_eq!(ours.headers["authorization"], theirs, "{region:?}");
        assert_eq!(
            ours.headers.contains_key("x-amz-security-token"),
            session.is_some()
        );
    }

    // A real STS API answers the request (as Vault would replay it) with the signer.
    let moto = Moto::start()
        .await
        .expect("moto_server starts (bash tests/setup.sh)");
    let creds = Credentials::new("AKIDBACKUPFUNCTION", "backup-secret", None, None, "test");
    let want = caller_arn(&moto, &creds).await;
    let req = stashless::aws_login::caller_identity_request(
        &creds,
        None,
        Some("vault.example.com"),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let mut replay = reqwest::Client::new().post(&moto.endpoint).body(req.body);
    for (k, v) in &req.headers {
        if k != "Host" {
            replay = replay.header(k, v);
        }
    }
    let text = replay.send().await.unwrap().text().await.unwrap();
    assert!(text.contains(&format!("<Arn>{want}</Arn>")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_iam_login_fails_the_session_with_a_reason() {
    let w = World::builder("iam")
        .openbao()
        .backup_to("iam")
        .build()
        .await;
    let (cluster, s3, bucket) = (&w.cluster, w.s3(), w.bucket());
    aws_binding(cluster, "vault", &w.bao().addr, "stashless-backup").await;
    cluster.new_session("cfg", "cfg-1").await.unwrap();
    let ctx = context(
        cluster,
        Credentials::new("AKID", "SECRET", None, None, "test"),
    );
    let outcome = backup::run(&ctx, &session_ref("cfg-1"), None)
        .await
        .unwrap();
    let Outcome::Failed { reason } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("logging in as role \"stashless-backup\" on auth/aws"),
        "{reason}"
    );
    let phase = cluster
        .session("cfg-1")
        .await
        .unwrap()
        .status
        .unwrap()
        .phase;
    assert_eq!(phase, Some(SessionPhase::Failed));
    assert_eq!(s3.open_uploads(bucket).await.unwrap(), 0);
    // The reason carries no credential.
    assert!(
        !reason.contains("SECRET") && !reason.contains("Signature="),
        "{reason}"
    );
}

#[test]
fn the_signed_request_names_sts_and_the_server_id_and_never_prints_its_signature() {
    let creds = Credentials::new("AKID", "SECRET", Some("SESSION".into()), None, "t");
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let r =
        stashless::aws_login::caller_identity_request(&creds, None, Some("vault.example.com"), t)
            .unwrap();
    assert_eq!(r.url, "https://sts.amazonaws.com/");
    assert_eq!(r.body, "Action=GetCallerIdentity&Version=2011-06-15");
    let auth = &r.headers["authorization"];
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/sts/aws4_request"),
        "{auth}"
    );
    assert!(auth.contains("x-vault-aws-iam-server-id"), "{auth}");
    assert_eq!(r.headers["x-amz-security-token"], "SESSION");
    let debug = format!("{r:?}");
    assert!(
        !debug.contains("Signature=") && !debug.contains("SESSION"),
        "{debug}"
    );
    let regional =
        stashless::aws_login::caller_identity_request(&creds, Some("eu-west-1"), None, t).unwrap();
    assert_eq!(regional.url, "https://sts.eu-west-1.amazonaws.com/");
    assert!(regional.headers["authorization"].contains("/eu-west-1/sts/"));
}
