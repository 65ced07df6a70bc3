//! The watch bridge end to end: session changes in the API server become events on an
//! EventBridge bus (moto), routed by a rule to an SQS queue, with the documented source,
//! detail-type and detail — and no object bodies.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use stashless::dispatch::{EventBridge, Health, SOURCE, bridge};
use stashless_tests::moto::Moto;
use stashless_tests::{Cluster, ConfigBuilder, init_logs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_changes_arrive_on_the_bus_as_documented() {
    init_logs();
    let moto = Moto::start().await.unwrap();
    let conf = moto.sdk_config();
    let eb = aws_sdk_eventbridge::Client::new(&conf);
    let sqs = aws_sdk_sqs::Client::new(&conf);
    eb.create_event_bus()
        .name("stashless")
        .send()
        .await
        .unwrap();
    let q = sqs
        .create_queue()
        .queue_name("functions")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&q)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    eb.put_rule()
        .name("to-functions")
        .event_bus_name("stashless")
        .event_pattern(format!(r#"{{"source": ["{SOURCE}"]}}"#))
        .send()
        .await
        .unwrap();
    eb.put_targets()
        .rule("to-functions")
        .event_bus_name("stashless")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let cluster = Cluster::start().await.unwrap();
    let health = Arc::new(Health::default());
    let task = tokio::spawn(bridge(
        cluster.client.clone(),
        stashless::context::NamespaceScope::all(),
        Arc::new(EventBridge::new(eb.clone(), "stashless")),
        health.clone(),
    ));
    cluster
        .backup_config(ConfigBuilder::new("cfg"))
        .await
        .unwrap();
    for i in 0..12 {
        cluster
            .new_session("cfg", &format!("cfg-{i}"))
            .await
            .unwrap();
    }
    cluster
        .new_restore("rs-1", "repo", "vault", None, false)
        .await
        .unwrap();

    // 12 BackupSessions + 1 RestoreSession + the new BackupConfiguration.
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 14 && tokio::time::Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(&q)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let ev: Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
            assert_eq!(ev["source"], SOURCE);
            let d = &ev["detail"];
            assert_eq!(
                ev["detail-type"],
                format!(
                    "{} {}",
                    d["kind"].as_str().unwrap(),
                    d["change"].as_str().unwrap()
                )
            );
            assert!(
                d.get("spec").is_none() && d.get("status").is_none(),
                "object body leaked: {d}"
            );
            assert_eq!(d["namespace"], "vault");
            assert!(
                d["uid"].is_string() && d["resourceVersion"].is_string(),
                "{d}"
            );
            seen.insert(format!(
                "{} {}",
                d["kind"].as_str().unwrap(),
                d["name"].as_str().unwrap()
            ));
            sqs.delete_message()
                .queue_url(&q)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    assert!(seen.contains("RestoreSession rs-1"), "{seen:?}");
    assert!(seen.contains("BackupConfiguration cfg"), "{seen:?}");
    assert_eq!(
        seen.iter()
            .filter(|s| s.starts_with("BackupSession "))
            .count(),
        12,
        "{seen:?}"
    );
    assert!(health.ok());
    task.abort();
}

use stashless::dispatch::{Change, Dispatch};
use stashless_tests::put_events::PutEventsServer;
use stashless_tests::recorder::Recorder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_eventbridge_partial_put_events_failures_are_retried_and_never_doubled() {
    init_logs();
    let server = PutEventsServer::start().await.unwrap();
    let bus = EventBridge::new(server.client(), "stashless");
    let changes: Vec<Change> = (0..13)
        .map(|i| Change {
            kind: "BackupSession".into(),
            namespace: "vault".into(),
            name: format!("s-{i}"),
            uid: Some(format!("uid-{i}")),
            resource_version: Some("1".into()),
            change: "Added".into(),
        })
        .collect();
    // The first request (10 entries) has its first 3 entries throttled.
    server.fail_next(3);
    bus.dispatch(&changes).await.unwrap();
    let accepted = server.accepted().await;
    let mut names: Vec<String> = accepted
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["Detail"].as_str().unwrap()).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..13).map(|i| format!("s-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected, "every change exactly once");
    assert_eq!(server.requests(), 3, "10 + the 3 retried + 3");
    assert_eq!(server.unsigned(), 0);
    assert!(
        accepted
            .iter()
            .all(|e| e["Source"] == SOURCE && e["EventBusName"] == "stashless")
    );
    assert_eq!(accepted[0]["DetailType"], "BackupSession Added");
}

fn session(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
        "metadata": {"name": name, "namespace": "vault",
                     "labels": {"app.kubernetes.io/managed-by": "stashless"}},
        "spec": {"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "cfg"}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kube_410_gone_on_watch_relists_without_losing_or_duplicating() {
    init_logs();
    stashless::install_crypto_provider();
    let kube = memkube::MemKube::new();
    stashless_tests::register_stash_kinds(&kube);
    kube.namespace("vault");
    let server = kube.serve().await.unwrap();
    let addr = server.addr();
    let client = stashless::cluster::ClusterSource::Url {
        url: server.url(),
        token: None,
        ca_file: None,
    }
    .client()
    .await
    .unwrap();
    let rec = Arc::new(Recorder::default());
    let task = tokio::spawn(bridge(
        client.clone(),
        stashless::context::NamespaceScope::all(),
        rec.clone(),
        Arc::new(Health::default()),
    ));
    for n in ["a", "b", "c"] {
        kube.insert("stash.appscode.com", "backupsessions", session(n))
            .unwrap();
    }
    assert_eq!(rec.wait_for(3).await.len(), 3);

    // The API server goes away; meanwhile history is compacted and a session is created.
    server.shutdown().await;
    kube.compact();
    kube.insert("stash.appscode.com", "backupsessions", session("d"))
        .unwrap();
    let _server = kube.serve_on(addr).await.unwrap();
    // The watcher resumes from its old resourceVersion, gets 410 Gone, relists. "d" must
    // come through; a session created after the relist proves the relist was processed.
    assert_eq!(rec.wait_for(4).await.len(), 4);
    kube.insert("stash.appscode.com", "backupsessions", session("e"))
        .unwrap();
    let all = rec.wait_for(5).await;
    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b", "c", "d", "e"],
        "lost or duplicated dispatches"
    );

    // Updates that claim a session, and deletes, produce no entries: the next entry after
    // them is the next new session.
    let api: kube::Api<stashless::api::BackupSession> =
        kube::Api::namespaced(client.clone(), "vault");
    let a = api.get("a").await.unwrap();
    let stashless::session::Claim::Claimed(_) =
        stashless::session::claim(&api, &a, chrono::Utc::now())
            .await
            .unwrap()
    else {
        panic!("claim")
    };
    stashless::session::patch_status(&api, "a", &serde_json::json!({"phase": "Succeeded"}))
        .await
        .unwrap();
    api.delete("b", &Default::default()).await.unwrap();
    kube.insert("stash.appscode.com", "backupsessions", session("f"))
        .unwrap();
    let all = rec.wait_for(6).await;
    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b", "c", "d", "e", "f"],
        "an update or delete produced an entry"
    );
    task.abort();
}
