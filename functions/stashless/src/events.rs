//! Function inputs: what a trigger may send, parsed and validated. Accepts the raw
//! payload and the EventBridge envelope (`aws_lambda_events`) for each function.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The largest event we look at; anything bigger is not ours.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Refuse a payload above [`MAX_EVENT_BYTES`] before looking inside it.
fn check_size(payload: &Value) -> Result<()> {
    let size = payload.to_string().len();
    if size > MAX_EVENT_BYTES {
        return Err(Error::BadEvent(format!(
            "event is {size} bytes, more than {MAX_EVENT_BYTES}"
        )));
    }
    Ok(())
}

/// At most 200 characters of a parse error, escaped: serde quotes the offending value,
/// which in a hostile event may be hundreds of kilobytes or hold control characters, and
/// the reason goes to logs and the Lambda response.
fn brief(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let mut out = String::new();
    for c in text.chars().take(200) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.chars().count() > 200 {
        out.push_str("...");
    }
    out
}

/// An event naming a session: `{"namespace": "...", "name": "..."}`, optionally with `kind`,
/// or the same as the `detail` of an EventBridge event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub namespace: String,
    pub name: String,
}

impl SessionRef {
    /// Parse an invocation payload naming a session of `expected_kind`.
    pub fn from_event(payload: &Value, expected_kind: &str) -> Result<SessionRef> {
        check_size(payload)?;
        let body = if payload.get("detail").is_some() && payload.get("detail-type").is_some() {
            let envelope: EventBridgeEvent<Value> = serde_json::from_value(payload.clone())
                .map_err(|e| Error::BadEvent(format!("not an EventBridge event: {}", brief(e))))?;
            envelope.detail
        } else {
            payload.clone()
        };
        let r: SessionRef = serde_json::from_value(body).map_err(|e| {
            Error::BadEvent(format!(
                "expected {{\"namespace\": ..., \"name\": ...}} naming a {expected_kind}: {}",
                brief(e)
            ))
        })?;
        if let Some(kind) = &r.kind
            && kind != expected_kind
        {
            return Err(Error::BadEvent(format!(
                "event names a {}, this function handles {expected_kind}",
                brief(kind)
            )));
        }
        validate_name("namespace", &r.namespace, 63)?;
        validate_name("name", &r.name, 253)?;
        Ok(r)
    }
}

/// Kubernetes object names: DNS-1123 subdomain (namespaces: label).
pub fn validate_name(field: &str, value: &str, max: usize) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        let shown: String = value
            .chars()
            .take(80)
            .flat_map(char::escape_default)
            .collect();
        Err(Error::BadEvent(format!(
            "{field} \"{shown}\" is not a valid Kubernetes name (lowercase letters, digits, '-', '.', at most {max})"
        )))
    }
}

/// A scheduler tick. EventBridge Scheduler sends whatever input the schedule carries
/// (often `{}`); the classic scheduled-event envelope carries `time`. Either way `time`
/// is the tick's nominal time, so a retried delivery computes the same slots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tick {
    pub time: Option<DateTime<Utc>>,
}

impl Tick {
    pub fn from_event(payload: &Value) -> Result<Tick> {
        check_size(payload)?;
        match payload {
            Value::Null => Ok(Tick::default()),
            Value::Object(map) => {
                if map.contains_key("detail-type") {
                    let envelope: EventBridgeEvent<Value> = serde_json::from_value(payload.clone())
                        .map_err(|e| {
                            Error::BadEvent(format!(
                                "not an EventBridge scheduled event: {}",
                                brief(e)
                            ))
                        })?;
                    return Ok(Tick {
                        time: envelope.time,
                    });
                }
                match map.get("time") {
                    None | Some(Value::Null) => Ok(Tick::default()),
                    Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                        .map(|t| Tick {
                            time: Some(t.with_timezone(&Utc)),
                        })
                        .map_err(|e| {
                            Error::BadEvent(format!(
                                "tick time \"{}\" is not RFC 3339: {e}",
                                brief(s)
                            ))
                        }),
                    Some(other) => Err(Error::BadEvent(format!(
                        "tick time must be an RFC 3339 string, got {}",
                        brief(other)
                    ))),
                }
            }
            other => Err(Error::BadEvent(format!(
                "a scheduler tick is a JSON object, got {}",
                brief(other)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_and_enveloped_session_events() {
        let raw = json!({"namespace": "vault", "name": "vault-backup-1700000000"});
        let r = SessionRef::from_event(&raw, "BackupSession").unwrap();
        assert_eq!(r.name, "vault-backup-1700000000");
        let env = json!({
            "version": "0", "id": "x", "detail-type": "BackupSession Added", "source": "stashless.bridge",
            "account": "1", "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"kind": "BackupSession", "namespace": "vault", "name": "b1"}
        });
        assert_eq!(
            SessionRef::from_event(&env, "BackupSession").unwrap().name,
            "b1"
        );
        assert!(SessionRef::from_event(&env, "RestoreSession").is_err());
    }

    #[test]
    fn malformed_session_events_are_refused_with_a_reason() {
        for bad in [
            json!({}),
            json!({"namespace": "vault"}),
            json!({"namespace": "Vault", "name": "x"}),
            json!({"namespace": "vault", "name": "../etc"}),
            json!({"namespace": "vault", "name": "a\u{0}b"}),
            json!([1, 2]),
            json!("hello"),
        ] {
            let e = SessionRef::from_event(&bad, "BackupSession").unwrap_err();
            assert!(matches!(e, Error::BadEvent(_)), "{bad}: {e}");
            assert!(!e.is_retryable());
        }
        let huge = json!({"namespace": "v", "name": "x".repeat(MAX_EVENT_BYTES)});
        assert!(
            SessionRef::from_event(&huge, "BackupSession")
                .unwrap_err()
                .to_string()
                .contains("bytes")
        );
    }

    #[test]
    fn ticks_raw_and_enveloped() {
        assert_eq!(Tick::from_event(&json!({})).unwrap(), Tick::default());
        let t = Tick::from_event(&json!({"time": "2026-03-01T10:00:00Z"})).unwrap();
        assert_eq!(t.time.unwrap().to_rfc3339(), "2026-03-01T10:00:00+00:00");
        let env = json!({
            "version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.scheduler",
            "account": "1", "time": "2026-03-01T10:01:00Z", "region": "us-east-1", "resources": [], "detail": {}
        });
        assert_eq!(
            Tick::from_event(&env).unwrap().time.unwrap().to_rfc3339(),
            "2026-03-01T10:01:00+00:00"
        );
        assert!(Tick::from_event(&json!({"time": "yesterday"})).is_err());
        assert!(Tick::from_event(&json!(42)).is_err());
    }
}
