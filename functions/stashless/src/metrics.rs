//! Metrics out: Prometheus text pushed to a Pushgateway (as Stash does), and CloudWatch
//! embedded-metric-format lines on stdout (picked up from the function's logs).

use std::fmt::Write as _;
use std::time::Duration;

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
        .map_err(|e| Error::Invalid(format!("pushing metrics to {gateway}: {e}")))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(Error::Invalid(format!(
            "Pushgateway {gateway} refused metrics: HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        )));
    }
    Ok(())
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
