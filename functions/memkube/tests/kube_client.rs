//! Drives memkube with the real `kube` client.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Client, CustomResource, ResourceExt};
use memkube::{Failure, MemKube, ResourceKind, RunningServer};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "stash.appscode.com",
    version = "v1beta1",
    kind = "BackupSession",
    namespaced,
    status = "BackupSessionStatus",
    schema = "disabled"
)]
pub struct BackupSessionSpec {
    pub invoker: String,
    #[serde(default)]
    pub retries: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct BackupSessionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

const GROUP: &str = "stash.appscode.com";
const WAIT: Duration = Duration::from_secs(5);

fn client_for(url: &str) -> Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = kube::Config::new(url.parse().expect("url"));
    Client::try_from(config).expect("client")
}

async fn setup() -> (MemKube, RunningServer, Client) {
    let kube = MemKube::new();
    kube.register(
        ResourceKind::new(GROUP, "v1beta1", "BackupSession", "backupsessions").with_status(),
    );
    kube.namespace("ns1");
    kube.namespace("ns2");
    let server = kube.serve().await.expect("serve");
    let client = client_for(&server.url());
    (kube, server, client)
}

fn session(name: &str, invoker: &str, labels: &[(&str, &str)]) -> BackupSession {
    let mut bs = BackupSession::new(
        name,
        BackupSessionSpec {
            invoker: invoker.into(),
            retries: 0,
        },
    );
    if !labels.is_empty() {
        bs.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    bs
}

fn api_err(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn next_item<S: Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("timed out waiting for a stream item")
        .expect("stream ended")
}

/// Waits (bounded) until `cond` holds, polling.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn rv_of<K: ResourceExt>(o: &K) -> u64 {
    o.resource_version()
        .expect("rv")
        .parse()
        .expect("numeric rv")
}

#[tokio::test]
async fn create_get_and_already_exists() {
    let (kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    let created = api
        .create(&PostParams::default(), &session("a", "inv", &[]))
        .await
        .unwrap();
    assert_eq!(created.namespace().as_deref(), Some("ns1"));
    assert!(created.uid().is_some_and(|u| u.len() == 36));
    assert_eq!(created.metadata.generation, Some(1));
    let ts = serde_json::to_value(&created.metadata.creation_timestamp).unwrap();
    let ts = ts.as_str().unwrap();
    assert!(ts.len() == 20 && ts.ends_with('Z'), "{ts}");
    assert_eq!(rv_of(&created), kube.resource_version());

    let got = api.get("a").await.unwrap();
    assert_eq!(got.spec.invoker, "inv");
    assert_eq!(got.uid(), created.uid());

    let (code, reason, msg) = api_err(
        api.create(&PostParams::default(), &session("a", "x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        msg,
        "backupsessions.stash.appscode.com \"a\" already exists"
    );

    // generateName
    let mut generated = session("", "inv", &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("bs-".into());
    let g = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(
        g.name_any().starts_with("bs-") && g.name_any().len() == 8,
        "{}",
        g.name_any()
    );

    // body namespace must agree with the path
    let mut other = session("b", "inv", &[]);
    other.metadata.namespace = Some("elsewhere".into());
    let (code, reason, _) = api_err(
        api.create(&PostParams::default(), &other)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));

    // invalid name
    let (code, reason, _) = api_err(
        api.create(&PostParams::default(), &session("Bad_Name", "i", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));

    let (code, reason, _) = api_err(api.get("missing").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(kube.objects(GROUP, "backupsessions").len(), 2);
}

#[tokio::test]
async fn list_with_label_and_field_selectors() {
    let (_kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client.clone(), "ns1");
    let pp = PostParams::default();
    api.create(&pp, &session("a1", "i", &[("app", "a"), ("tier", "x")]))
        .await
        .unwrap();
    api.create(&pp, &session("a2", "i", &[("app", "a"), ("tier", "y")]))
        .await
        .unwrap();
    api.create(&pp, &session("b1", "i", &[("app", "b"), ("tier", "z")]))
        .await
        .unwrap();
    api.create(&pp, &session("n1", "i", &[])).await.unwrap();
    let other: Api<BackupSession> = Api::namespaced(client.clone(), "ns2");
    other
        .create(&pp, &session("a1", "i", &[("app", "a")]))
        .await
        .unwrap();

    let names = |sel: &'static str| {
        let api = api.clone();
        async move {
            let mut n: Vec<String> = api
                .list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .iter()
                .map(|o| o.name_any())
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(names("app=a").await, ["a1", "a2"]);
    assert_eq!(names("app==b").await, ["b1"]);
    assert_eq!(names("app!=a").await, ["b1", "n1"]);
    assert_eq!(names("tier in (x,z)").await, ["a1", "b1"]);
    assert_eq!(names("tier notin (x,z)").await, ["a2", "n1"]);
    assert_eq!(names("app").await, ["a1", "a2", "b1"]);
    assert_eq!(names("!app").await, ["n1"]);
    assert_eq!(names("app=a,tier=y").await, ["a2"]);

    let by_field = api
        .list(&ListParams::default().fields("metadata.name=b1"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    let not_field = api
        .list(&ListParams::default().fields("metadata.name!=b1"))
        .await
        .unwrap();
    assert_eq!(not_field.items.len(), 3);

    let all: Api<BackupSession> = Api::all(client.clone());
    let everywhere = all
        .list(&ListParams::default().labels("app=a"))
        .await
        .unwrap();
    assert_eq!(everywhere.items.len(), 3);
    let ns2 = all
        .list(&ListParams::default().fields("metadata.namespace=ns2"))
        .await
        .unwrap();
    assert_eq!(ns2.items.len(), 1);
    assert!(
        everywhere
            .metadata
            .resource_version
            // setup created five namespaces (three a new cluster has, ns1, ns2)
            .is_some_and(|rv| rv == "10")
    );
    // kind/apiVersion set on the list and every item
    let raw: serde_json::Value = client
        .request(
            http::Request::get("/apis/stash.appscode.com/v1beta1/backupsessions")
                .body(vec![])
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(raw["kind"], "BackupSessionList");
    assert_eq!(raw["apiVersion"], "stash.appscode.com/v1beta1");
    let items = raw["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(
        items.iter().all(
            |i| i["kind"] == "BackupSession" && i["apiVersion"] == "stash.appscode.com/v1beta1"
        )
    );

    let (code, _, _) = api_err(
        api.list(&ListParams::default().labels("app in x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);
}

#[tokio::test]
async fn merge_patch_with_resource_version_is_optimistic_locking() {
    let (_kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    let created = api
        .create(&PostParams::default(), &session("a", "i", &[]))
        .await
        .unwrap();
    let rv = created.resource_version().unwrap();
    // someone else writes
    let p = json!({"metadata": {"labels": {"touched": "yes"}}});
    let after = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert!(rv_of(&after) > rv_of(&created));

    let stale = json!({"metadata": {"resourceVersion": rv}, "spec": {"retries": 3}});
    let (code, reason, msg) = api_err(
        api.patch("a", &PatchParams::default(), &Patch::Merge(&stale))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        msg,
        "Operation cannot be fulfilled on backupsessions.stash.appscode.com \"a\": the object has been \
         modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(api.get("a").await.unwrap().spec.retries, 0);

    let fresh =
        json!({"metadata": {"resourceVersion": after.resource_version()}, "spec": {"retries": 3}});
    let ok = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&fresh))
        .await
        .unwrap();
    assert_eq!(ok.spec.retries, 3);
    assert!(rv_of(&ok) > rv_of(&after));
    assert_eq!(ok.labels().get("touched").map(String::as_str), Some("yes"));

    // strategic merge patch behaves as a merge patch, including the precondition
    let smp = json!({"metadata": {"resourceVersion": rv}, "spec": {"retries": 9}});
    let (code, _, _) = api_err(
        api.patch("a", &PatchParams::default(), &Patch::Strategic(&smp))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    let smp = json!({"spec": {"retries": 4}});
    assert_eq!(
        api.patch("a", &PatchParams::default(), &Patch::Strategic(&smp))
            .await
            .unwrap()
            .spec
            .retries,
        4
    );

    let (code, reason, _) = api_err(
        api.patch("missing", &PatchParams::default(), &Patch::Merge(&fresh))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn replace_requires_current_resource_version() {
    let (_kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    let created = api
        .create(&PostParams::default(), &session("a", "i", &[]))
        .await
        .unwrap();

    let mut v1 = created.clone();
    v1.spec.retries = 1;
    let updated = api.replace("a", &PostParams::default(), &v1).await.unwrap();
    assert_eq!(updated.spec.retries, 1);

    let mut stale = created.clone();
    stale.spec.retries = 2;
    let (code, reason, msg) = api_err(
        api.replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(msg.contains("the object has been modified"), "{msg}");

    let mut no_rv = updated.clone();
    no_rv.metadata.resource_version = None;
    let (code, reason, msg) = api_err(
        api.replace("a", &PostParams::default(), &no_rv)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        msg.contains(
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
        ),
        "{msg}"
    );

    let mut renamed = updated.clone();
    renamed.metadata.name = Some("b".into());
    let (code, _, _) = api_err(
        api.replace("a", &PostParams::default(), &renamed)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);

    // the server-managed fields survive a replace
    let again = api.get("a").await.unwrap();
    assert_eq!(again.uid(), created.uid());
    assert_eq!(
        again.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );
}

#[tokio::test]
async fn status_subresource_rules() {
    let (_kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client.clone(), "ns1");
    let mut bs = session("a", "i", &[]);
    bs.status = Some(BackupSessionStatus {
        phase: Some("Succeeded".into()),
    });
    let created = api.create(&PostParams::default(), &bs).await.unwrap();
    assert_eq!(created.status, None, "create drops status");

    // patch_status cannot change spec
    let p = json!({"spec": {"invoker": "changed"}, "status": {"phase": "Running"}});
    let s = api
        .patch_status("a", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert_eq!(s.spec.invoker, "i");
    assert_eq!(
        s.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(
        s.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );

    // patch on the main resource cannot change status
    let p = json!({"spec": {"retries": 5}, "status": {"phase": "Failed"}});
    let m = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert_eq!(m.spec.retries, 5);
    assert_eq!(
        m.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );

    // replace_status: only status; the RV precondition applies
    let mut cur = api.get("a").await.unwrap();
    cur.status = Some(BackupSessionStatus {
        phase: Some("Succeeded".into()),
    });
    cur.spec.invoker = "ignored".into();
    let r = api
        .replace_status("a", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(r.status.unwrap().phase.as_deref(), Some("Succeeded"));
    assert_eq!(r.spec.invoker, "i");
    let (code, _, _) = api_err(
        api.replace_status("a", &PostParams::default(), &cur)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);

    // a status patch carrying a stale RV conflicts too
    let p = json!({"metadata": {"resourceVersion": created.resource_version()}, "status": {"phase": "X"}});
    let (code, _, _) = api_err(
        api.patch_status("a", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);

    // /status on a kind without the subresource is a 404
    let secrets: Api<Secret> = Api::namespaced(client, "ns1");
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: meta("s"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (code, _, _) = api_err(
        secrets
            .patch_status(
                "s",
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn generation_bumps_only_on_spec_changes() {
    let (kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    api.create(&PostParams::default(), &session("a", "i", &[]))
        .await
        .unwrap();
    let pp = PatchParams::default();

    let l = api
        .patch(
            "a",
            &pp,
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(l.metadata.generation, Some(1));
    let s = api
        .patch_status(
            "a",
            &pp,
            &Patch::Merge(&json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(s.metadata.generation, Some(1));
    let g = api
        .patch("a", &pp, &Patch::Merge(&json!({"spec": {"retries": 1}})))
        .await
        .unwrap();
    assert_eq!(g.metadata.generation, Some(2));
    let g = api
        .patch("a", &pp, &Patch::Merge(&json!({"spec": {"invoker": "j"}})))
        .await
        .unwrap();
    assert_eq!(g.metadata.generation, Some(3));

    // a no-op write keeps the resourceVersion (like a real server)
    let before = kube.resource_version();
    let same = api
        .patch("a", &pp, &Patch::Merge(&json!({"spec": {"invoker": "j"}})))
        .await
        .unwrap();
    assert_eq!(same.resource_version(), g.resource_version());
    assert_eq!(same.metadata.generation, Some(3));
    assert_eq!(kube.resource_version(), before);
}

#[tokio::test]
async fn json_patch_and_failed_test_op() {
    let (_kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    let created = api
        .create(&PostParams::default(), &session("a", "i", &[]))
        .await
        .unwrap();
    let pp = PatchParams::default();

    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/invoker", "value": "not-i"},
        {"op": "replace", "path": "/spec/retries", "value": 7}
    ]))
    .unwrap();
    let (code, reason, _) = api_err(
        api.patch("a", &pp, &Patch::<()>::Json(failing))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(api.get("a").await.unwrap().spec.retries, 0);

    // test-and-set on resourceVersion, the JSON-patch way of optimistic locking
    let ok: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": created.resource_version()},
        {"op": "replace", "path": "/spec/retries", "value": 7},
        {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}
    ]))
    .unwrap();
    let patched = api
        .patch("a", &pp, &Patch::<()>::Json(ok.clone()))
        .await
        .unwrap();
    assert_eq!(patched.spec.retries, 7);
    assert_eq!(patched.labels().get("a").map(String::as_str), Some("b"));
    let (code, _, _) = api_err(
        api.patch("a", &pp, &Patch::<()>::Json(ok))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
}

#[tokio::test]
async fn server_side_apply_creates_then_merges() {
    let (_kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    let pp = PatchParams::apply("memkube-test");
    let cfg = json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"invoker": "i"}
    });
    let created = api.patch("a", &pp, &Patch::Apply(&cfg)).await.unwrap();
    assert_eq!(created.spec.invoker, "i");
    assert_eq!(created.metadata.generation, Some(1));
    let cfg2 = json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": "a"}, "spec": {"invoker": "i", "retries": 2}
    });
    let merged = api.patch("a", &pp, &Patch::Apply(&cfg2)).await.unwrap();
    assert_eq!(merged.spec.retries, 2);
    assert_eq!(merged.labels().get("x").map(String::as_str), Some("1"));
    assert_eq!(merged.uid(), created.uid());
}

#[tokio::test]
async fn delete_then_not_found() {
    let (kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    let created = api
        .create(&PostParams::default(), &session("a", "i", &[]))
        .await
        .unwrap();

    // failing preconditions
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let (code, _, _) = api_err(api.delete("a", &dp).await.unwrap_err());
    assert_eq!(code, 409);

    let res = api.delete("a", &DeleteParams::default()).await.unwrap();
    let status = res.right().expect("a Status");
    assert_eq!(status.details.as_ref().map(|d| d.name.as_str()), Some("a"));
    assert_eq!(
        status.details.as_ref().map(|d| d.uid.clone()),
        Some(created.uid().unwrap())
    );

    let (code, reason, _) = api_err(api.get("a").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let (code, _, _) = api_err(api.delete("a", &DeleteParams::default()).await.unwrap_err());
    assert_eq!(code, 404);
    assert!(kube.objects(GROUP, "backupsessions").is_empty());

    // delete collection with a selector
    let pp = PostParams::default();
    api.create(&pp, &session("k1", "i", &[("keep", "no")]))
        .await
        .unwrap();
    api.create(&pp, &session("k2", "i", &[("keep", "no")]))
        .await
        .unwrap();
    api.create(&pp, &session("k3", "i", &[("keep", "yes")]))
        .await
        .unwrap();
    let gone = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("keep=no"),
        )
        .await
        .unwrap();
    assert_eq!(gone.left().expect("a list").items.len(), 2);
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|o| o.name_any())
        .collect();
    assert_eq!(left, ["k3"]);
}

#[tokio::test]
async fn secret_string_data_is_merged_into_data() {
    let (kube, _server, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client.clone(), "ns1");
    let secret = Secret {
        metadata: meta("creds"),
        data: Some(BTreeMap::from([(
            "a".to_string(),
            k8s_openapi::ByteString(b"raw".to_vec()),
        )])),
        string_data: Some(BTreeMap::from([("b".to_string(), "hello".to_string())])),
        ..Default::default()
    };
    let created = api.create(&PostParams::default(), &secret).await.unwrap();
    let data = created.data.clone().unwrap();
    assert_eq!(data["a"].0, b"raw");
    assert_eq!(data["b"].0, b"hello");
    assert!(created.string_data.is_none());
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let stored = kube.object("", "secrets", "ns1", "creds").unwrap();
    assert_eq!(stored["data"]["b"], "aGVsbG8=");
    assert!(stored.get("stringData").is_none());

    // on patches too
    let p = json!({"stringData": {"c": "more"}});
    let patched = api
        .patch("creds", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["c"].0, b"more");

    // core Events are just another kind
    let events: Api<CoreEvent> = Api::namespaced(client, "ns1");
    let ev = CoreEvent {
        metadata: meta("e1"),
        reason: Some("BackupFailed".into()),
        ..Default::default()
    };
    events.create(&PostParams::default(), &ev).await.unwrap();
    let listed = events
        .list(&ListParams::default().fields("reason=BackupFailed"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
}

#[tokio::test]
async fn runtime_watcher_sees_live_changes() {
    let (_kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    api.create(&PostParams::default(), &session("pre", "i", &[]))
        .await
        .unwrap();
    let mut w = watcher(api.clone(), watcher::Config::default()).boxed();

    // initial list
    let mut initial = Vec::new();
    loop {
        match next_item(&mut w).await.unwrap() {
            watcher::Event::Init => {}
            watcher::Event::InitApply(o) => initial.push(o.name_any()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, ["pre"]);

    api.create(&PostParams::default(), &session("live", "i", &[]))
        .await
        .unwrap();
    match next_item(&mut w).await.unwrap() {
        watcher::Event::Apply(o) => assert_eq!(o.name_any(), "live"),
        other => panic!("unexpected {other:?}"),
    }
    api.patch(
        "live",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"retries": 2}})),
    )
    .await
    .unwrap();
    match next_item(&mut w).await.unwrap() {
        watcher::Event::Apply(o) => assert_eq!(o.spec.retries, 2),
        other => panic!("unexpected {other:?}"),
    }
    api.delete("live", &DeleteParams::default()).await.unwrap();
    match next_item(&mut w).await.unwrap() {
        watcher::Event::Delete(o) => assert_eq!(o.name_any(), "live"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_compacted_version_gets_410_and_watcher_relists() {
    let (kube, server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client.clone(), "ns1");
    let first = api
        .create(&PostParams::default(), &session("a", "i", &[]))
        .await
        .unwrap();
    let old_rv = first.resource_version().unwrap();
    api.create(&PostParams::default(), &session("b", "i", &[]))
        .await
        .unwrap();

    // history still there: replay from old_rv yields b
    let mut s = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match next_item(&mut s).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "b"),
        other => panic!("unexpected {other:?}"),
    }
    drop(s);

    kube.compact();
    let mut s = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match next_item(&mut s).await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(
                status
                    .message
                    .starts_with(&format!("too old resource version: {old_rv} (")),
                "{}",
                status.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        tokio::time::timeout(WAIT, s.next())
            .await
            .unwrap()
            .is_none(),
        "stream ends after the 410"
    );

    // A runtime watcher resuming after a restart + compaction relists.
    let mut w = watcher(api.clone(), watcher::Config::default()).boxed();
    loop {
        if let watcher::Event::InitDone = next_item(&mut w).await.unwrap() {
            break;
        }
    }
    api.create(&PostParams::default(), &session("d", "i", &[]))
        .await
        .unwrap();
    match next_item(&mut w).await.unwrap() {
        watcher::Event::Apply(o) => assert_eq!(o.name_any(), "d"), // the watch is open
        other => panic!("unexpected {other:?}"),
    }
    let addr = server.addr();
    server.shutdown().await; // ends the watcher's open watch
    // a write the watcher misses, then compaction: resuming from its last RV is impossible
    kube.insert(
        GROUP,
        "backupsessions",
        json!({"metadata": {"name": "c", "namespace": "ns1"}, "spec": {"invoker": "i"}}),
    )
    .unwrap();
    kube.compact();
    let _server = kube.serve_on(addr).await.expect("rebind the same port");
    let mut saw_expired = false;
    let mut relisted = Vec::new();
    loop {
        match next_item(&mut w).await {
            Err(watcher::Error::WatchError(s)) if s.code == 410 => saw_expired = true,
            Err(_) => {} // e.g. the stream cut by the restart
            Ok(watcher::Event::InitApply(o)) => relisted.push(o.name_any()),
            Ok(watcher::Event::InitDone) => break,
            Ok(_) => {}
        }
    }
    assert!(
        saw_expired,
        "the resumed watch was answered with 410 Expired"
    );
    relisted.sort();
    assert_eq!(relisted, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn bookmarks_arrive_only_when_requested() {
    let (kube, _server, client) = setup().await;
    kube.set_bookmark_interval(Duration::from_millis(20));
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    api.create(&PostParams::default(), &session("a", "i", &[]))
        .await
        .unwrap();
    let rv = kube.resource_version().to_string();

    let mut s = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_item(&mut s).await.unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, rv);
            assert_eq!(b.types.kind, "BackupSession");
            assert_eq!(b.types.api_version, "stash.appscode.com/v1beta1");
        }
        other => panic!("unexpected {other:?}"),
    }

    // without allowWatchBookmarks, the first item is the next real event
    let mut quiet = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(
        tokio::time::timeout(Duration::from_millis(150), quiet.next())
            .await
            .is_err(),
        "no bookmark expected"
    );
    api.create(&PostParams::default(), &session("b", "i", &[]))
        .await
        .unwrap();
    match next_item(&mut quiet).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "b"),
        other => panic!("unexpected {other:?}"),
    }

    // sendInitialEvents: ADDED for the current state, then the initial-events-end bookmark
    let mut init = api
        .watch(&WatchParams::default().initial_events(), "")
        .await
        .unwrap()
        .boxed();
    let mut added = Vec::new();
    loop {
        match next_item(&mut init).await.unwrap() {
            WatchEvent::Added(o) => added.push(o.name_any()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, ["a", "b"]);

    // and the runtime watcher's streaming-list mode works on top of it
    let mut w = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    loop {
        match next_item(&mut w).await.unwrap() {
            watcher::Event::InitApply(o) => seen.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen, ["a", "b"]);
}

#[tokio::test]
async fn selector_watch_translates_modifications() {
    let (_kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");
    let mut s = api
        .watch(
            &WatchParams::default().labels("app=x").disable_bookmarks(),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    api.create(
        &PostParams::default(),
        &session("other", "i", &[("app", "y")]),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &session("m", "i", &[("app", "x")]))
        .await
        .unwrap();
    match next_item(&mut s).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "m"),
        other => panic!("unexpected {other:?}"),
    }
    let relabel = |v: &str| json!({"metadata": {"labels": {"app": v}}});
    api.patch("m", &PatchParams::default(), &Patch::Merge(&relabel("z")))
        .await
        .unwrap();
    match next_item(&mut s).await.unwrap() {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "m"),
        other => panic!("unexpected {other:?}"),
    }
    api.patch(
        "other",
        &PatchParams::default(),
        &Patch::Merge(&relabel("x")),
    )
    .await
    .unwrap();
    match next_item(&mut s).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "other"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn watches_are_released_on_disconnect_timeout_and_shutdown() {
    let (kube, server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client, "ns1");

    let s = api
        .watch(&WatchParams::default().disable_bookmarks(), "0")
        .await
        .unwrap()
        .boxed();
    eventually("the watch to register", || kube.active_watches() == 1).await;
    drop(s);
    eventually("the dropped watch to be released", || {
        kube.active_watches() == 0
    })
    .await;

    let mut t = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    loop {
        match tokio::time::timeout(WAIT, t.next())
            .await
            .expect("the watch ends at timeoutSeconds")
        {
            None => break,
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    eventually("the timed-out watch to be released", || {
        kube.active_watches() == 0
    })
    .await;

    let mut open = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    eventually("the watch to register", || kube.active_watches() == 1).await;
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown completes with an open watch");
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match open.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the open watch ended on shutdown");
    assert_eq!(kube.active_watches(), 0);
}

#[tokio::test]
async fn injected_failures_then_recovery() {
    let (kube, _server, client) = setup().await;
    let api: Api<BackupSession> = Api::namespaced(client.clone(), "ns1");
    api.create(&PostParams::default(), &session("a", "i", &[]))
        .await
        .unwrap();

    kube.inject_failure(Failure::new("/backupsessions/a", 500).method("GET"));
    let (code, reason, _) = api_err(api.get("a").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (500, "InternalError"));
    assert_eq!(api.get("a").await.unwrap().name_any(), "a");

    kube.inject_failure(Failure {
        method: Some("PATCH".into()),
        path_contains: "backupsessions".into(),
        status: 409,
        times: 2,
    });
    let p = Patch::Merge(json!({"spec": {"retries": 1}}));
    for _ in 0..2 {
        let (code, reason, _) = api_err(
            api.patch("a", &PatchParams::default(), &p)
                .await
                .unwrap_err(),
        );
        assert_eq!((code, reason.as_str()), (409, "Conflict"));
    }
    assert_eq!(
        api.patch("a", &PatchParams::default(), &p)
            .await
            .unwrap()
            .spec
            .retries,
        1
    );

    kube.inject_failure(Failure::new("/backupsessions", 403));
    let (code, reason, _) = api_err(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));

    // the kube client retries 503 by itself: one injected 503 costs one extra request
    kube.inject_failure(Failure::new("/backupsessions/a", 503));
    let before = kube.request_count();
    api.get("a").await.unwrap();
    assert_eq!(kube.request_count() - before, 2);
}

#[tokio::test]
async fn discovery_auth_and_unknown_paths() {
    let (kube, server, client) = setup().await;
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, "v1.30.0-memkube");
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == GROUP));
    let core = client.list_core_api_versions().await.unwrap();
    assert_eq!(core.versions, ["v1"]);
    let resources = client
        .list_api_group_resources("stash.appscode.com/v1beta1")
        .await
        .unwrap();
    assert!(
        resources
            .resources
            .iter()
            .any(|r| r.name == "backupsessions/status")
    );

    // unknown kind -> 404 Status
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug)]
    #[kube(
        group = "example.com",
        version = "v1",
        kind = "Unknown",
        namespaced,
        schema = "disabled"
    )]
    struct UnknownSpec {}
    let unknown: Api<Unknown> = Api::namespaced(client.clone(), "ns1");
    let (code, reason, _) = api_err(unknown.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));

    kube.require_token("s3cret");
    let (code, reason, _) = api_err(client.apiserver_version().await.unwrap_err());
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.auth_info.token = Some("s3cret".to_string().into());
    let authed = Client::try_from(config).unwrap();
    assert!(authed.apiserver_version().await.is_ok());

    // cluster-scoped Namespaces
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(authed);
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: meta("team-a"),
        ..Default::default()
    };
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
    assert_eq!(
        namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        6, // default, kube-system, kube-public, ns1, ns2 (setup) and team-a
    );
}

#[tokio::test]
async fn malformed_bodies_are_rejected() {
    let (_kube, server, client) = setup().await;
    let req = http::Request::post(format!(
        "{}/apis/stash.appscode.com/v1beta1/namespaces/ns1/backupsessions",
        server.url()
    ))
    .header("content-type", "application/json")
    .body(b"{not json".to_vec())
    .unwrap();
    let (code, reason, _) = api_err(client.request::<serde_json::Value>(req).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));

    let req = http::Request::patch(format!(
        "{}/apis/stash.appscode.com/v1beta1/namespaces/ns1/backupsessions/a",
        server.url()
    ))
    .header("content-type", "text/plain")
    .body(b"{}".to_vec())
    .unwrap();
    let (code, _, _) = api_err(client.request::<serde_json::Value>(req).await.unwrap_err());
    assert_eq!(code, 415);
}
