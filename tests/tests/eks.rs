//! EKS access from the functions: the bearer token equals the one botocore's SigV4 signer
//! makes (`tests/oracle/eks_token.py`, the way `aws eks get-token` makes it), DescribeCluster
//! is read from a real AWS-API server (moto), and a client built by `eks::client` sends the
//! token on every request to a real HTTP API server that refuses anything else.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use stashless::eks;
use stashless_tests::moto::Moto;

fn oracle(
    access: &str,
    secret: &str,
    session: Option<&str>,
    region: &str,
    cluster: &str,
    unix: u64,
) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/oracle/eks_token.py");
    let out = Command::new("python3")
        .args([
            script,
            access,
            secret,
            session.unwrap_or("-"),
            region,
            cluster,
            &unix.to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the botocore oracle failed (bash tests/setup.sh installs botocore): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn token_equals_botocore_for_fixed_inputs() {
    let cases = [
        (
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            "us-east-1",
            "prod",
            1_700_000_000,
        ),
        (
            "ASIAEXAMPLE",
            "secret/with+odd=chars",
            Some("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+session/token=="),
            "eu-central-1",
            "vault-cluster-1",
            1_767_225_600,
        ),
        (
            "AKID2",
            "s2",
            None,
            "ap-southeast-2",
            "a.b-c_d",
            2_000_000_123,
        ),
    ];
    for (access, secret, session, region, cluster, unix) in cases {
        let creds = Credentials::new(access, secret, session.map(str::to_string), None, "test");
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(unix);
        let ours = eks::token(&creds, region, cluster, time).unwrap();
        let theirs = oracle(access, secret, session, region, cluster, unix);
        assert_eq!(ours, theirs, "{region}/{cluster}");
        // What the token is: the presigned GetCallerIdentity URL for this cluster.
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(ours.strip_prefix("k8s-aws-v1.").unwrap())
            .unwrap();
        let url = String::from_utf8(url).unwrap();
        assert!(
            url.starts_with(&format!(
                "https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
            )),
            "{url}"
        );
        assert!(
            url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Expires=60"), "{url}");
        assert_eq!(
            url.contains("X-Amz-Security-Token="),
            session.is_some(),
            "{url}"
        );
    }
    // A different cluster or second gives a different signature.
    let creds = Credentials::new("A", "B", None, None, "test");
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_ne!(
        eks::token(&creds, "us-east-1", "a", t).unwrap(),
        eks::token(&creds, "us-east-1", "b", t).unwrap()
    );
    assert_ne!(
        eks::token(&creds, "us-east-1", "a", t).unwrap(),
        eks::token(&creds, "us-east-1", "a", t + Duration::from_secs(1)).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_reads_endpoint_and_ca_and_names_a_missing_cluster() {
    let moto = Moto::start()
        .await
        .expect("moto_server starts (bash tests/setup.sh)");
    let eks_client = aws_sdk_eks::Client::new(&moto.sdk_config());
    eks_client
        .create_cluster()
        .name("vault-prod")
        .role_arn("arn:aws:iam::123456789012:role/eks")
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigRequest::builder()
                .subnet_ids("subnet-1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (endpoint, ca) = eks::describe(&eks_client, "vault-prod").await.unwrap();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    assert!(!ca.is_empty());
    let err = eks::describe(&eks_client, "no-such-cluster")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("eks:DescribeCluster no-such-cluster"), "{err}");
}

/// A self-signed CA certificate in PEM (the client needs one; the server here is plain HTTP).
fn some_ca_pem() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("stashless-eks-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, crt) = (dir.join("ca.key"), dir.join("ca.crt"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let pem = std::fs::read(&crt).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eks_client_sends_the_signed_token_on_every_request() {
    stashless::install_crypto_provider();
    let kube = memkube::MemKube::new();
    kube.namespace("vault");
    let server = kube.serve().await.unwrap();
    let creds =
        SharedCredentialsProvider::new(Credentials::new("AKID", "SECRET", None, None, "test"));
    let tokens = Arc::new(eks::TokenSource::new(creds, "us-east-1", "vault-prod"));
    // The token is reused within its refresh window, so the server can be told it upfront.
    let token = tokens.bearer().await.unwrap();
    assert_eq!(token, tokens.bearer().await.unwrap());
    assert!(token.starts_with("k8s-aws-v1."));
    kube.require_token(token);
    let client = eks::client(&server.url(), &some_ca_pem(), tokens)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, "vault");
    assert!(
        secrets
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Without the token the same server refuses.
    kube.require_token("something-else");
    let err = secrets.list(&Default::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err:?}"
    );
    // A bundle without a certificate is refused clearly.
    let tokens = Arc::new(eks::TokenSource::new(
        SharedCredentialsProvider::new(Credentials::new("A", "B", None, None, "t")),
        "us-east-1",
        "c",
    ));
    let Err(err) = eks::client(&server.url(), b"not pem", tokens).await else {
        panic!("a CA bundle without a certificate was accepted")
    };
    let err = err.to_string();
    assert!(err.contains("CA bundle"), "{err}");
}
