//! Metrics out: Stash's gauges and labels for a backup or restore, pushed to a Pushgateway
//! (as Stash does) with the outcome recorded as the `MetricsPushed` condition, and
//! CloudWatch embedded-metric-format lines on stdout (picked up from the function's logs).

use std::fmt::Write as _;
use std::time::Duration;

use chrono::Utc;

use crate::api::{APPBINDING_KIND, Condition, DEFAULT_HOST, TargetRef, condition, set_condition};
use crate::error::{Error, Result};

/// One gauge.
#[derive(Debug, Clone)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub value: f64,
}

/// A group of gauges pushed together under one Pushgateway grouping key.
#[derive(Debug, Clone)]
pub struct MetricGroup {
    /// Pushgateway job: `stash-backup` / `stash-restore`, Stash's names.
    pub job: &'static str,
    /// Grouping labels (the URL path): values must be URL-path safe (Kubernetes names are).
    pub grouping: Vec<(&'static str, String)>,
    /// Labels on every series.
    pub labels: Vec<(&'static str, String)>,
    pub gauges: Vec<Gauge>,
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl MetricGroup {
    /// Prometheus text exposition format 0.0.4.
    pub fn to_text(&self) -> String {
        let labels = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect::<Vec<_>>()
            .join(",");
        let mut out = String::new();
        for g in &self.gauges {
            let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
            let _ = writeln!(out, "# TYPE {} gauge", g.name);
            let _ = writeln!(out, "{}{{{labels}}} {}", g.name, g.value);
        }
        out
    }

    fn path(&self) -> String {
        let mut p = format!("/metrics/job/{}", self.job);
        for (k, v) in &self.grouping {
            let _ = write!(p, "/{k}/{v}");
        }
        p
    }
}

/// Push (PUT: replace the group) to a Pushgateway.
pub async fn push(http: &reqwest::Client, gateway: &str, group: &MetricGroup) -> Result<()> {
    let url = format!("{}{}", gateway.trim_end_matches('/'), group.path());
    let resp = http
        .put(&url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .timeout(Duration::from_secs(10))
        .body(group.to_text())
        .send()
        .await
        .map_err(|e| {
            Error::unavailable(
                format!("pushing metrics to {gateway}"),
                Some(Box::new(e.without_url())),
            )
        })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = format!(
            "Pushgateway {gateway} refused metrics: HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        );
        // A 4xx is about what was sent (only a change here fixes it); the rest may pass.
        return Err(if status.is_client_error() {
            Error::invalid(message)
        } else {
            Error::unavailable(message, None)
        });
    }
    Ok(())
}

/// Push a group to the Pushgateway when one is configured, and say how it went as the
/// `MetricsPushed` condition (`None`: no Pushgateway, nothing to say). A failed push never
/// fails the session: it is a warning in its conditions.
pub async fn publish(
    http: &reqwest::Client,
    gateway: Option<&str>,
    group: &MetricGroup,
) -> Option<Condition> {
    let gateway = gateway?;
    Some(match push(http, gateway, group).await {
        Ok(()) => Condition::new(
            condition::METRICS_PUSHED,
            true,
            "SuccessfullyPushedMetrics",
            "metrics pushed to the Pushgateway",
        ),
        Err(e) => {
            let reason = e.reason();
            tracing::warn!(error = %reason, "pushing metrics failed");
            Condition::new(
                condition::METRICS_PUSHED,
                false,
                "FailedToPushMetrics",
                reason,
            )
        }
    })
}

/// What a session reports as it ends: its EMF line printed, its group pushed (when a
/// Pushgateway is configured), and how the push went as `MetricsPushed` in `conditions`.
pub async fn report(
    http: &reqwest::Client,
    gateway: Option<&str>,
    emf: &str,
    group: &MetricGroup,
    conditions: &mut Vec<Condition>,
) {
    emit_emf(emf);
    if let Some(c) = publish(http, gateway, group).await {
        set_condition(conditions, c);
    }
}

fn flag(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

/// What a backup measured, for its gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupMeasure {
    pub success: bool,
    pub duration: Duration,
    /// The snapshot's size, when one was stored.
    pub size: Option<u64>,
    /// The Repository after retention: (snapshots, bytes), when it was listed.
    pub repository: Option<(usize, u64)>,
    /// Snapshots the retention removed.
    pub removed: usize,
}

/// Stash's backup gauges for one session.
pub fn backup_gauges(m: &BackupMeasure) -> Vec<Gauge> {
    let mut g = vec![
        Gauge {
            name: "stash_backup_session_success",
            help: "Indicates whether the entire backup session succeeded",
            value: flag(m.success),
        },
        Gauge {
            name: "stash_backup_session_duration_seconds",
            help: "Time taken to complete the backup session",
            value: m.duration.as_secs_f64(),
        },
        Gauge {
            name: "stash_backup_target_success",
            help: "Indicates whether the backup of the target succeeded",
            value: flag(m.success),
        },
        Gauge {
            name: "stash_backup_host_backup_success",
            help: "Indicates whether the backup of the host succeeded",
            value: flag(m.success),
        },
    ];
    if m.success {
        g.push(Gauge {
            name: "stash_backup_last_success_time_seconds",
            help: "Unix time of the last successful backup",
            value: Utc::now().timestamp() as f64,
        });
    }
    if let Some(size) = m.size {
        g.push(Gauge {
            name: "stash_backup_host_data_size_bytes",
            help: "Size of the snapshot taken",
            value: size as f64,
        });
        g.push(Gauge {
            name: "stash_backup_host_data_uploaded_bytes",
            help: "Bytes uploaded to the repository",
            value: size as f64,
        });
    }
    if let Some((count, bytes)) = m.repository {
        g.push(Gauge {
            name: "stash_repository_integrity",
            help: "Result of the repository integrity check",
            value: 1.0,
        });
        g.push(Gauge {
            name: "stash_repository_size_bytes",
            help: "Total size of the repository",
            value: bytes as f64,
        });
        g.push(Gauge {
            name: "stash_repository_snapshot_count",
            help: "Number of snapshots in the repository",
            value: count as f64,
        });
        g.push(Gauge {
            name: "stash_repository_snapshot_cleaned",
            help: "Number of snapshots removed by the last cleanup",
            value: m.removed as f64,
        });
    }
    g
}

/// A group with Stash's labels for one invoker: grouped by namespace and invoker name (so
/// each push replaces the invoker's last one), labelled with the invoker, the repository
/// (backups), the target and the one host.
fn invoker_group(
    job: &'static str,
    invoker: (&str, &str),
    namespace: &str,
    repository: Option<&str>,
    target: &TargetRef,
    gauges: Vec<Gauge>,
) -> MetricGroup {
    let (kind, name) = invoker;
    let mut labels = vec![
        ("invoker_kind", kind.to_string()),
        ("invoker_name", name.to_string()),
        ("namespace", namespace.to_string()),
    ];
    if let Some(repository) = repository {
        labels.push(("repository", repository.to_string()));
    }
    let target_kind = target.kind.as_deref().unwrap_or(APPBINDING_KIND);
    labels.extend([
        ("target_kind", target_kind.to_string()),
        ("target_name", target.name.clone()),
        ("host", DEFAULT_HOST.to_string()),
    ]);
    MetricGroup {
        job,
        grouping: vec![
            ("namespace", namespace.into()),
            ("invoker_name", name.into()),
        ],
        labels,
        gauges,
    }
}

/// The Pushgateway group of a BackupConfiguration's sessions, with Stash's labels.
pub fn backup_group(
    namespace: &str,
    config: &str,
    repository: &str,
    target: &TargetRef,
    gauges: Vec<Gauge>,
) -> MetricGroup {
    let invoker = ("BackupConfiguration", config);
    invoker_group(
        "stash-backup",
        invoker,
        namespace,
        Some(repository),
        target,
        gauges,
    )
}

/// The CloudWatch EMF line of a backup: success, duration and snapshot size.
pub fn backup_emf(namespace: &str, config: &str, gauges: &[Gauge]) -> String {
    let emf: Vec<(&'static str, f64, &'static str)> = gauges
        .iter()
        .filter_map(|g| match g.name {
            "stash_backup_session_success" => Some(("BackupSuccess", g.value, "Count")),
            "stash_backup_session_duration_seconds" => Some(("BackupDuration", g.value, "Seconds")),
            "stash_backup_host_data_size_bytes" => Some(("SnapshotSize", g.value, "Bytes")),
            _ => None,
        })
        .collect();
    emf_line(
        &[("BackupConfiguration", format!("{namespace}/{config}"))],
        &emf,
    )
}

/// The Pushgateway group of one RestoreSession, with Stash's gauges and labels.
pub fn restore_group(
    namespace: &str,
    session: &str,
    target: &TargetRef,
    success: bool,
    duration: Duration,
) -> MetricGroup {
    let gauges = vec![
        Gauge {
            name: "stash_restore_session_success",
            help: "Indicates whether the restore session succeeded",
            value: flag(success),
        },
        Gauge {
            name: "stash_restore_session_duration_seconds",
            help: "Time taken to complete the restore session",
            value: duration.as_secs_f64(),
        },
        Gauge {
            name: "stash_restore_host_restore_success",
            help: "Indicates whether the restore of the host succeeded",
            value: flag(success),
        },
    ];
    let invoker = ("RestoreSession", session);
    invoker_group("stash-restore", invoker, namespace, None, target, gauges)
}

/// The CloudWatch EMF line of a restore: success and duration.
pub fn restore_emf(namespace: &str, session: &str, success: bool, duration: Duration) -> String {
    emf_line(
        &[("RestoreSession", format!("{namespace}/{session}"))],
        &[
            ("RestoreSuccess", flag(success), "Count"),
            ("RestoreDuration", duration.as_secs_f64(), "Seconds"),
        ],
    )
}

/// A CloudWatch embedded-metric-format line: namespace `stashless`, dimensions from
/// `dims`, one metric per gauge (the Prometheus name in CamelCase is not needed: the
/// gauge names are used as is).
pub fn emf_line(
    dims: &[(&'static str, String)],
    gauges: &[(&'static str, f64, &'static str)],
) -> String {
    let mut root = serde_json::Map::new();
    let metrics: Vec<serde_json::Value> = gauges
        .iter()
        .map(|(n, _, unit)| serde_json::json!({"Name": n, "Unit": unit}))
        .collect();
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": "stashless",
                "Dimensions": [dims.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": metrics,
            }]
        }),
    );
    for (k, v) in dims {
        root.insert((*k).into(), serde_json::Value::String(v.clone()));
    }
    for (n, v, _) in gauges {
        root.insert((*n).into(), serde_json::json!(v));
    }
    serde_json::Value::Object(root).to_string()
}

/// Print an EMF line where CloudWatch will pick it up: inside Lambda (stdout goes to the
/// function's log group), or when `STASHLESS_EMF=1`. Elsewhere (the CLI) it would only
/// clutter the output.
pub fn emit_emf(line: &str) {
    let wanted = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        || std::env::var("STASHLESS_EMF").is_ok_and(|v| v == "1");
    if wanted {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_escapes_labels() {
        let g = MetricGroup {
            job: "stash-backup",
            grouping: vec![("namespace", "vault".into())],
            labels: vec![("invoker_name", "a\"b".into())],
            gauges: vec![Gauge {
                name: "stash_backup_session_success",
                help: "1 if the session succeeded",
                value: 1.0,
            }],
        };
        let t = g.to_text();
        assert!(
            t.contains("stash_backup_session_success{invoker_name=\"a\\\"b\"} 1\n"),
            "{t}"
        );
        assert_eq!(g.path(), "/metrics/job/stash-backup/namespace/vault");
    }

    #[test]
    fn backup_gauges_follow_what_was_measured() {
        let names = |m: &BackupMeasure| backup_gauges(m).iter().map(|g| g.name).collect::<Vec<_>>();
        let failed = BackupMeasure {
            duration: Duration::from_secs(3),
            ..Default::default()
        };
        assert_eq!(
            names(&failed),
            [
                "stash_backup_session_success",
                "stash_backup_session_duration_seconds",
                "stash_backup_target_success",
                "stash_backup_host_backup_success"
            ]
        );
        assert!(
            backup_gauges(&failed)
                .iter()
                .all(|g| g.name.ends_with("seconds") || g.value == 0.0)
        );
        let ok = BackupMeasure {
            success: true,
            duration: Duration::from_secs(3),
            size: Some(4096),
            repository: Some((2, 8192)),
            removed: 1,
        };
        let g = backup_gauges(&ok);
        let value = |n: &str| g.iter().find(|g| g.name == n).map(|g| g.value);
        assert_eq!(value("stash_backup_session_success"), Some(1.0));
        assert_eq!(value("stash_backup_host_data_size_bytes"), Some(4096.0));
        assert_eq!(value("stash_repository_size_bytes"), Some(8192.0));
        assert_eq!(value("stash_repository_snapshot_count"), Some(2.0));
        assert_eq!(value("stash_repository_snapshot_cleaned"), Some(1.0));
        assert!(value("stash_backup_last_success_time_seconds").is_some());

        let target = TargetRef {
            name: "vault".into(),
            ..Default::default()
        };
        let group = backup_group("ns", "cfg", "repo", &target, g);
        let text = group.to_text();
        assert!(text.contains("target_kind=\"AppBinding\""), "{text}");
        assert!(text.contains("host=\"host-0\""), "{text}");
        let emf: serde_json::Value =
            serde_json::from_str(&backup_emf("ns", "cfg", &group.gauges)).unwrap();
        assert_eq!(emf["SnapshotSize"], 4096.0);
        assert_eq!(emf["BackupConfiguration"], "ns/cfg");
        let r = restore_group("ns", "rs", &target, false, Duration::from_secs(1));
        assert_eq!(
            r.path(),
            "/metrics/job/stash-restore/namespace/ns/invoker_name/rs"
        );
        assert!(
            r.gauges
                .iter()
                .any(|g| g.name == "stash_restore_session_success" && g.value == 0.0)
        );
    }

    #[tokio::test]
    async fn publish_says_nothing_without_a_gateway_and_why_a_push_failed() {
        let http = reqwest::Client::new();
        let group = restore_group("ns", "rs", &TargetRef::default(), true, Duration::ZERO);
        assert_eq!(publish(&http, None, &group).await, None);
        // Nothing listens on port 9 of loopback: refused at once.
        let c = publish(&http, Some("http://127.0.0.1:9"), &group)
            .await
            .unwrap();
        assert_eq!(c.status, "False");
        assert_eq!(c.reason.as_deref(), Some("FailedToPushMetrics"));
        let msg = c.message.unwrap();
        assert!(
            msg.starts_with("pushing metrics to http://127.0.0.1:9: "),
            "{msg}"
        );
    }

    #[test]
    fn emf_line_has_dimensions_and_values() {
        let line = emf_line(
            &[("BackupConfiguration", "vault/x".into())],
            &[("BackupSuccess", 1.0, "Count")],
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["BackupSuccess"], 1.0);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0],
            "BackupConfiguration"
        );
    }
}
