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
        Vec::new(),
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
