//! Differential conformance: the same request sequences against the in-memory API server
//! (memkube) and a real kube-apiserver 1.20 with Stash's CRDs, compared answer by answer.
//!
//! Each scenario writes a transcript of what a client can observe (HTTP status and
//! `reason`, the object's name, labels, spec, status, generation, whether the
//! resourceVersion moved, watch event types and names). Server-chosen values (uids,
//! timestamps, resourceVersion numbers, managedFields, selfLink) are normalised away. A
//! difference fails the test and names the scenario, step and both answers; the ones found
//! while building the suite were fixed in memkube (see its doc comment and the issue note).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request};
use http_body_util::BodyExt;
use kube::Client;
use serde_json::{Value, json};
use stashless_tests::{Cluster, CrdSet};

const NS: &str = "conformance";
const BS: &str = "/apis/stash.appscode.com/v1beta1/namespaces/conformance/backupsessions";
const AB: &str = "/apis/appcatalog.appscode.com/v1alpha1/namespaces/conformance/appbindings";

/// One observable answer.
#[derive(Debug)]
struct Step {
    name: String,
    answer: Value,
}

/// A transcript plus the last resourceVersion seen per object, to record "moved or not".
#[derive(Default)]
struct Transcript {
    steps: Vec<Step>,
    last_rv: std::collections::HashMap<String, String>,
}

struct Answer {
    code: u16,
    body: Value,
}

async fn call(
    client: &Client,
    method: Method,
    path: &str,
    ctype: &str,
    body: Option<Value>,
) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", ctype)
        .header("Accept", "application/json")
        .body(
            body.map(|b| serde_json::to_vec(&b).unwrap())
                .unwrap_or_default(),
        )
        .unwrap();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { code, body }
}

impl Transcript {
    /// Record an answer: status code, `reason` for errors, the object's observable fields.
    fn record(&mut self, name: &str, a: &Answer) {
        let answer = if a.code >= 300 {
            json!({"code": a.code, "reason": a.body["reason"]})
        } else if a.body["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
            let mut names: Vec<String> = a.body["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| stable_name(i["metadata"]["name"].as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            json!({"code": a.code, "items": names})
        } else if a.body["kind"] == "Status" {
            json!({"code": a.code, "status": a.body["status"]})
        } else {
            json!({"code": a.code, "object": self.observe(&a.body)})
        };
        self.steps.push(Step {
            name: name.to_string(),
            answer,
        });
    }

    fn observe(&mut self, o: &Value) -> Value {
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        let rv = o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let moved = match self.last_rv.insert(name.clone(), rv.clone()) {
            None => "new",
            Some(prev) if prev == rv => "same",
            Some(_) => "moved",
        };
        json!({
            "name": name,
            "labels": o["metadata"]["labels"],
            "generation": o["metadata"]["generation"],
            "resourceVersion": moved,
            "uid set": o["metadata"]["uid"].is_string(),
            "creationTimestamp set": o["metadata"]["creationTimestamp"].is_string(),
            "spec": o["spec"],
            "status": o["status"],
        })
    }

    fn note(&mut self, name: &str, answer: Value) {
        self.steps.push(Step {
            name: name.to_string(),
            answer,
        });
    }
}

/// generateName's random suffix differs from server to server.
fn stable_name(name: &str) -> String {
    match name.strip_prefix("gen-") {
        Some(_) => "gen-*".to_string(),
        None => name.to_string(),
    }
}

fn session(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": name, "labels": labels},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "cfg"}},
    })
}

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

/// Create, get, duplicate create, status in a create body, bad names, missing objects.
async fn crud(c: &Client, t: &mut Transcript) {
    let mut s = session("a", json!({"app": "vault"}));
    s["status"] = json!({"phase": "Succeeded"});
    let a = call(c, Method::POST, BS, JSON, Some(s.clone())).await;
    t.record("create with a status in the body (status dropped)", &a);
    let a = call(c, Method::POST, BS, JSON, Some(s)).await;
    t.record("create again: AlreadyExists", &a);
    let a = call(c, Method::GET, &format!("{BS}/a"), JSON, None).await;
    t.record("get", &a);
    let a = call(c, Method::GET, &format!("{BS}/missing"), JSON, None).await;
    t.record("get a missing object", &a);
    let a = call(
        c,
        Method::POST,
        BS,
        JSON,
        Some(session("Bad_Name", json!({}))),
    )
    .await;
    t.record("create with an invalid name", &a);
    let mut g = session("", json!({}));
    g["metadata"] = json!({"generateName": "gen-"});
    let a = call(c, Method::POST, BS, JSON, Some(g)).await;
    t.note(
        "generateName",
        json!({"code": a.code, "prefixed": a.body["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("gen-") && n.len() > 4)}),
    );
    let a = call(
        c,
        Method::POST,
        "/apis/stash.appscode.com/v1beta1/namespaces/no-such-namespace/backupsessions",
        JSON,
        Some(session("x", json!({}))),
    )
    .await;
    t.record("create in a namespace that does not exist", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/missing"),
        MERGE,
        Some(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await;
    t.record("patch a missing object", &a);
    let a = call(c, Method::DELETE, &format!("{BS}/missing"), JSON, None).await;
    t.record("delete a missing object", &a);
}

/// Optimistic concurrency: PUT with a stale, a current, and no resourceVersion; a patch
/// carrying a stale resourceVersion; a no-op patch.
async fn conflicts(c: &Client, t: &mut Transcript) {
    let a = call(c, Method::POST, BS, JSON, Some(session("b", json!({})))).await;
    t.record("create", &a);
    let stale = a.body.clone();
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/b"),
        MERGE,
        Some(json!({"metadata": {"labels": {"k": "1"}}})),
    )
    .await;
    t.record("label patch (generation unchanged)", &a);
    let mut put = stale.clone();
    put["spec"]["retryLeft"] = json!(2);
    let a = call(c, Method::PUT, &format!("{BS}/b"), JSON, Some(put.clone())).await;
    t.record("PUT with a stale resourceVersion", &a);
    let cur = call(c, Method::GET, &format!("{BS}/b"), JSON, None).await;
    let mut put = cur.body.clone();
    put["spec"]["retryLeft"] = json!(2);
    let a = call(c, Method::PUT, &format!("{BS}/b"), JSON, Some(put.clone())).await;
    t.record(
        "PUT with the current resourceVersion (spec change: generation+1)",
        &a,
    );
    put["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    put["spec"]["retryLeft"] = json!(3);
    let a = call(c, Method::PUT, &format!("{BS}/b"), JSON, Some(put)).await;
    t.record("PUT without a resourceVersion", &a);
    let stale_rv = stale["metadata"]["resourceVersion"].clone();
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/b/status"),
        MERGE,
        Some(json!({"metadata": {"resourceVersion": stale_rv}, "status": {"phase": "Running"}})),
    )
    .await;
    t.record("status patch with a stale resourceVersion", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/b"),
        MERGE,
        Some(json!({"metadata": {"labels": {"k": "1"}}})),
    )
    .await;
    t.record("a patch that changes nothing (resourceVersion same)", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/b"),
        JSON_PATCH,
        Some(json!([{"op": "test", "path": "/spec/retryLeft", "value": 99}])),
    )
    .await;
    t.record("json-patch whose test fails", &a);
}

/// The status subresource: a status patch that also touches spec, a spec patch that also
/// touches status, PUT of each.
async fn status_subresource(c: &Client, t: &mut Transcript) {
    let a = call(c, Method::POST, BS, JSON, Some(session("c", json!({})))).await;
    t.record("create", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/c/status"),
        MERGE,
        Some(json!({"spec": {"retryLeft": 7}, "status": {"phase": "Running"}})),
    )
    .await;
    t.record("status patch that also touches spec (spec ignored)", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/c"),
        MERGE,
        Some(json!({"spec": {"retryLeft": 5}, "status": {"phase": "Failed"}})),
    )
    .await;
    t.record("spec patch that also touches status (status ignored)", &a);
    let mut put = a.body.clone();
    put["status"] = json!({"phase": "Succeeded"});
    put["spec"]["retryLeft"] = json!(1);
    let a = call(c, Method::PUT, &format!("{BS}/c/status"), JSON, Some(put)).await;
    t.record("PUT /status with a spec change (spec ignored)", &a);
    let a = call(c, Method::GET, &format!("{AB}/none/status"), JSON, None).await;
    t.record("/status of a kind without the subresource", &a);
}

/// Schema handling: unknown fields (pruned), wrong types and enum values (rejected).
async fn schema(c: &Client, t: &mut Transcript) {
    let mut s = session("d", json!({}));
    s["spec"]["bogus"] = json!("x");
    s["spec"]["invoker"]["extra"] = json!(1);
    let a = call(c, Method::POST, BS, JSON, Some(s)).await;
    t.record("create with unknown spec fields (pruned)", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/d/status"),
        MERGE,
        Some(json!({"status": {"phase": "Running", "bogus": 1, "conditions": [{"type": "X", "status": "True", "extra": "y", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
    )
    .await;
    t.record("status patch with unknown fields (pruned)", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/d/status"),
        MERGE,
        Some(json!({"status": {"phase": "NotAPhase"}})),
    )
    .await;
    t.record("status patch with a value outside the enum", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/d"),
        MERGE,
        Some(json!({"spec": {"retryLeft": "three"}})),
    )
    .await;
    t.record("spec patch with a wrong type", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/d/status"),
        MERGE,
        Some(json!({"status": {"sessionDuration": ""}})),
    )
    .await;
    t.record("status patch with an empty string", &a);
    // AppBinding `parameters` is an embedded resource that keeps unknown fields: it needs
    // apiVersion and kind, and keeps everything else.
    let binding = |name: &str, parameters: Value| {
        json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": name},
            "spec": {"clientConfig": {"url": "http://x"}, "parameters": parameters, "notInSchema": 1},
        })
    };
    let a = call(
        c,
        Method::POST,
        AB,
        JSON,
        Some(binding("v1", json!({"anything": {"goes": 1}}))),
    )
    .await;
    t.record("AppBinding: parameters without apiVersion/kind", &a);
    let a = call(
        c,
        Method::POST,
        AB,
        JSON,
        Some(binding("v2", json!({"apiVersion": "config.kubevault.com/v1alpha1", "kind": "VaultServerConfiguration", "backupTokenSecretRef": {"name": "t"}}))),
    )
    .await;
    t.record("AppBinding: parameters kept, unknown spec field pruned", &a);
    let mut s = session("e", json!({}));
    s["spec"]["invoker"] = json!({"kind": "BackupConfiguration"});
    let a = call(c, Method::POST, BS, JSON, Some(s)).await;
    t.record("create without a required field", &a);
    let mut s = session("f", json!({}));
    s["spec"]["retryLeft"] = Value::Null;
    let a = call(c, Method::POST, BS, JSON, Some(s)).await;
    t.record("create with a null in a non-nullable field (dropped)", &a);
}

/// Label selectors, across one namespace and all namespaces.
async fn selectors(c: &Client, t: &mut Transcript) {
    for (n, labels) in [
        ("s1", json!({"tier": "db", "env": "prod"})),
        ("s2", json!({"tier": "web", "env": "prod"})),
        ("s3", json!({"tier": "db"})),
    ] {
        let a = call(c, Method::POST, BS, JSON, Some(session(n, labels))).await;
        t.record(&format!("create {n}"), &a);
    }
    for sel in [
        "tier=db",
        "tier==db",
        "tier!=db",
        "env",
        "!env",
        "tier in (db,web)",
        "tier notin (web)",
        "tier=db,env=prod",
        "tier=nothing",
    ] {
        let q = sel
            .replace(' ', "%20")
            .replace('(', "%28")
            .replace(')', "%29")
            .replace(',', "%2C")
            .replace('!', "%21")
            .replace('=', "%3D");
        let a = call(
            c,
            Method::GET,
            &format!("{BS}?labelSelector={q}"),
            JSON,
            None,
        )
        .await;
        t.record(&format!("list labelSelector {sel}"), &a);
    }
    let a = call(
        c,
        Method::GET,
        &format!("{BS}?fieldSelector=metadata.name%3Ds2"),
        JSON,
        None,
    )
    .await;
    t.record("list fieldSelector metadata.name=s2", &a);
    let a = call(
        c,
        Method::GET,
        "/apis/stash.appscode.com/v1beta1/backupsessions?labelSelector=tier%3Dweb",
        JSON,
        None,
    )
    .await;
    t.record("list across all namespaces", &a);
    let a = call(
        c,
        Method::GET,
        &format!("{BS}?labelSelector=tier%3D%3D%3Dx"),
        JSON,
        None,
    )
    .await;
    t.record("a malformed selector", &a);
}

/// Read watch events from `path` until `want` events arrived or 10 s passed.
async fn watch_events(c: &Client, path: &str, want: usize) -> (u16, Vec<Value>) {
    let req = Request::get(path).body(Vec::new()).unwrap();
    let resp = c.send(req.map(kube::client::Body::from)).await.unwrap();
    let code = resp.status().as_u16();
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let mut body = resp.into_body().into_data_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < want {
        let next: Option<Result<Bytes, _>> =
            match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(n) => n,
                Err(_) => break,
            };
        let Some(Ok(chunk)) = next else { break };
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                events.push(v);
            }
        }
        if code >= 300 {
            break;
        }
    }
    if code >= 300 && events.is_empty() {
        events.push(serde_json::from_slice(&buf).unwrap_or(Value::Null));
    }
    (code, events)
}

fn summarise(events: &[Value]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                if e["type"] == "ERROR" {
                    json!(["ERROR", e["object"]["code"], e["object"]["reason"]])
                } else {
                    json!([
                        e["type"],
                        e["object"]["metadata"]["name"],
                        e["object"]["status"]["phase"]
                    ])
                }
            })
            .collect(),
    )
}

/// Watch from a resourceVersion: the changes after it, in order, with their types.
async fn watches(c: &Client, t: &mut Transcript) {
    let a = call(
        c,
        Method::POST,
        BS,
        JSON,
        Some(session("w1", json!({"w": "1"}))),
    )
    .await;
    t.record("create w1", &a);
    let from = a.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let a = call(
        c,
        Method::POST,
        BS,
        JSON,
        Some(session("w2", json!({"w": "1"}))),
    )
    .await;
    t.record("create w2", &a);
    let a = call(
        c,
        Method::PATCH,
        &format!("{BS}/w1/status"),
        MERGE,
        Some(json!({"status": {"phase": "Running"}})),
    )
    .await;
    t.record("status w1", &a);
    let a = call(c, Method::DELETE, &format!("{BS}/w2"), JSON, None).await;
    t.note("delete w2", json!({"code": a.code, "kind": a.body["kind"]}));
    let (code, ev) = watch_events(
        c,
        &format!("{BS}?watch=true&labelSelector=w%3D1&resourceVersion={from}"),
        3,
    )
    .await;
    t.note(
        "watch from w1's resourceVersion",
        json!({"code": code, "events": summarise(&ev)}),
    );
    let (code, ev) = watch_events(c, &format!("{BS}?watch=true&labelSelector=w%3D1"), 1).await;
    t.note(
        "watch without a resourceVersion (current state as ADDED)",
        json!({"code": code, "events": summarise(&ev)}),
    );
}

fn differences(mem: &Transcript, real: &Transcript) -> Vec<String> {
    let mut out = Vec::new();
    for (m, r) in mem.steps.iter().zip(&real.steps) {
        assert_eq!(m.name, r.name);
        if m.answer != r.answer {
            out.push(format!(
                "{}\n      memkube:        {}\n      kube-apiserver: {}",
                m.name, m.answer, r.answer
            ));
        }
    }
    assert_eq!(mem.steps.len(), real.steps.len());
    out
}

async fn namespace(c: &Client) {
    let a = call(
        c,
        Method::POST,
        "/api/v1/namespaces",
        JSON,
        Some(json!({"metadata": {"name": NS}})),
    )
    .await;
    assert!(a.code == 201 || a.code == 409, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memkube_answers_like_a_real_kube_apiserver() {
    stashless_tests::init_logs();
    let mem = Cluster::memory().await.unwrap();
    let real = Cluster::apiserver(CrdSet::Stash).await.unwrap();
    let mut report = Vec::new();
    type Scenario =
        for<'a> fn(&'a Client, &'a mut Transcript) -> futures::future::BoxFuture<'a, ()>;
    let scenarios: [(&str, Scenario); 6] = [
        ("crud", |c, t| Box::pin(crud(c, t))),
        ("conflicts", |c, t| Box::pin(conflicts(c, t))),
        ("status subresource", |c, t| {
            Box::pin(status_subresource(c, t))
        }),
        ("schema", |c, t| Box::pin(schema(c, t))),
        ("selectors", |c, t| Box::pin(selectors(c, t))),
        ("watches", |c, t| Box::pin(watches(c, t))),
    ];
    namespace(&mem.client).await;
    namespace(&real.client).await;
    let mut steps = 0;
    for (name, run) in scenarios {
        let (mut m, mut r) = (Transcript::default(), Transcript::default());
        run(&mem.client, &mut m).await;
        run(&real.client, &mut r).await;
        steps += m.steps.len();
        for d in differences(&m, &r) {
            report.push(format!("[{name}] {d}"));
        }
    }
    println!("{steps} observable answers compared");
    assert!(
        report.is_empty(),
        "memkube differs from kube-apiserver in {} answers:\n  {}",
        report.len(),
        report.join("\n  ")
    );
}

/// A watch from a resourceVersion older than the server's history gets 410 Gone (as an
/// ERROR event), and `kube::runtime::watcher` recovers by relisting. The real server runs
/// without its watch cache so that compacting etcd expires the version on demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_after_compaction_is_gone_on_both() {
    stashless_tests::init_logs();
    let mem = Cluster::memory().await.unwrap();
    let real = stashless_tests::ApiServer::start_with(CrdSet::Stash, &["--watch-cache=false"])
        .await
        .unwrap();
    let real_client = real.client().await.unwrap();
    let mut answers = Vec::new();
    for (which, c) in [("memkube", &mem.client), ("kube-apiserver", &real_client)] {
        namespace(c).await;
        let a = call(c, Method::POST, BS, JSON, Some(session("old", json!({})))).await;
        assert_eq!(a.code, 201, "{which}: {}", a.body);
        let from = a.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        for i in 0..3 {
            let a = call(
                c,
                Method::POST,
                BS,
                JSON,
                Some(session(&format!("n{i}"), json!({}))),
            )
            .await;
            assert_eq!(a.code, 201);
        }
        if which == "memkube" {
            mem.mem().compact();
        } else {
            real.compact().await.unwrap();
        }
        let (code, ev) =
            watch_events(c, &format!("{BS}?watch=true&resourceVersion={from}"), 1).await;
        answers.push((which, json!({"code": code, "events": summarise(&ev)})));
    }
    assert_eq!(
        answers[0].1, answers[1].1,
        "memkube vs kube-apiserver: {answers:?}"
    );
    assert_eq!(answers[0].1["events"][0][0], "ERROR", "{answers:?}");
    assert_eq!(answers[0].1["events"][0][1], 410, "{answers:?}");
}
