//! Checks of a BackupConfiguration (and a RestoreSession's own fields) that need no other
//! object: driver, schedule, retention keep counts, `timeOut`. The scheduler marks a
//! configuration that fails them Invalid; backup and restore run them before touching
//! Vault or S3. Pure: no I/O.

pub mod hooks;

use std::time::Duration;

use crate::api::{
    BackupConfiguration, BackupSession, DEFAULT_HOST, RestoreSession, TaskRef, is_set,
    parse_go_duration,
};
use crate::error::{Error, Result};
use crate::retention::KeepPolicy;
use crate::schedule::Schedule;
use crate::serve::{SERVE_ANNOTATION, VAULT_BACKUP_TASK};

/// The longest `timeOut` accepted. A session runs inside one function invocation (at most
/// 15 minutes on Lambda), so anything near this is already capped by that; far beyond it
/// ("100000h", "99999999999s") is a typo, and would put `sessionDeadline` centuries away.
pub const MAX_TIME_OUT: Duration = Duration::from_secs(24 * 3600);

/// Everything the scheduler checks before creating sessions: the schedule it parsed, or
/// why the configuration is Invalid.
pub fn validate(config: &BackupConfiguration) -> Result<Schedule> {
    check_driver(config.spec.driver.as_deref(), "streams")?;
    check_task(config.spec.task.as_ref(), VAULT_BACKUP_TASK)?;
    check_refused(config)?;
    let schedule = config
        .spec
        .schedule
        .as_deref()
        .unwrap_or("")
        .parse::<Schedule>()
        .map_err(Error::invalid_from)?;
    check_limits(config)?;
    Ok(schedule)
}

/// The checks a backup runs first: driver, retention counts and `timeOut` (any of them
/// would fail every session of the configuration).
pub fn check_config(config: &BackupConfiguration) -> Result<()> {
    check_driver(config.spec.driver.as_deref(), "streams")?;
    check_task(config.spec.task.as_ref(), VAULT_BACKUP_TASK)?;
    check_refused(config)?;
    check_limits(config)
}

/// Retention counts and `timeOut`.
fn check_limits(config: &BackupConfiguration) -> Result<()> {
    keep_policy(config)?;
    backup_time_limit(config, Duration::ZERO)?;
    Ok(())
}

/// Stash's `driver`: `Restic` (its default) is what stashless does; `VolumeSnapshotter`
/// is refused with a reason. `verb` says what stashless does with snapshots here.
pub fn check_driver(driver: Option<&str>, verb: &str) -> Result<()> {
    match driver.filter(|d| *d != "Restic") {
        None => Ok(()),
        Some(driver) => Err(Error::invalid(format!(
            "driver {driver:?} is not supported: stashless {verb} Vault raft snapshots (driver Restic, Stash's default); remove spec.driver or set it to Restic"
        ))),
    }
}

/// `spec.task.name`: absent (Stash picks the task from the AppBinding) or one of Stash's
/// Vault tasks (`vault-backup-*`, `vault-restore-*`). Another task on an object stashless
/// serves (annotated `stashless.io/serve: "true"`) is refused with what to do.
pub fn check_task(task: Option<&TaskRef>, prefix: &str) -> Result<()> {
    match task.and_then(|t| t.name.as_deref()) {
        None | Some("") => Ok(()),
        Some(name) if name.starts_with(prefix) => Ok(()),
        Some(name) => Err(Error::invalid(format!(
            "spec.task.name is {:?}: stashless runs only Stash's Vault tasks ({prefix}*); remove spec.task, name a {prefix}* task, or leave this object to Stash ({SERVE_ANNOTATION}: \"false\")",
            name.chars().take(100).collect::<String>()
        ))),
    }
}

fn refuse(reason: String) -> Result<()> {
    Err(Error::invalid(reason))
}

/// BackupConfiguration fields a Stash user sets expecting an effect that stashless does
/// not have: refused with a reason instead of ignored (`docs/stash-fields.md` lists every
/// field and what stashless does with it).
pub fn check_refused(config: &BackupConfiguration) -> Result<()> {
    let spec = &config.spec;
    hooks::backup_hooks(spec.hooks.as_ref())?;
    retry_policy(config)?;
    if let Some(t) = &spec.target {
        if t.alias.as_deref().is_some_and(|a| !a.is_empty()) {
            return refuse("spec.target.alias is set: stashless names snapshots <namespace>/<session> and does not use an alias as the snapshot's host; remove spec.target.alias".into());
        }
        if is_set(t.args.as_ref()) {
            return refuse("spec.target.args is set: stashless takes the raft snapshot through Vault's API and passes no arguments to a backup driver; remove spec.target.args".into());
        }
        if is_set(t.exclude.as_ref()) {
            return refuse("spec.target.exclude is set: a Vault raft snapshot is taken whole, nothing can be left out of it; remove spec.target.exclude".into());
        }
    }
    if spec.task.as_ref().is_some_and(|t| !t.params.is_empty()) {
        return refuse(
            "spec.task.params is set: stashless's backup takes no task parameters; remove spec.task.params".into(),
        );
    }
    if is_set(spec.retention_policy.keep_tags.as_ref()) {
        return refuse("spec.retentionPolicy.keepTags is set: stashless snapshots carry no tags; remove keepTags and keep snapshots by count (keepLast, keepDaily, ...)".into());
    }
    Ok(())
}

/// A BackupSession's own fields: `spec.retryLeft` above 0 asks for retries, which only a
/// configuration with `spec.retryConfig` says how to make (the scheduler writes it so).
pub fn check_session(session: &BackupSession, config: &BackupConfiguration) -> Result<()> {
    match session.spec.retry_left {
        Some(n) if n > 0 && retry_policy(config)?.is_none() => refuse(format!(
            "spec.retryLeft is {n} but BackupConfiguration {} has no spec.retryConfig saying how to retry; remove spec.retryLeft, or set spec.retryConfig on the configuration",
            config.metadata.name.as_deref().unwrap_or_default()
        )),
        _ => Ok(()),
    }
}

/// `spec.retryConfig`: a failed backup is followed by a new BackupSession after `delay`, at
/// most `max_retry` times (Stash's default 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retry: u32,
    pub delay: Duration,
}

/// The most retries one session may ask for: each is a full backup.
pub const MAX_RETRY: i64 = 100;

/// The longest `retryConfig.delay` accepted (a retry a day later is the next day's backup).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);

/// `spec.retryConfig` checked: `None` when absent; a negative or absurd `maxRetry`, a
/// `delay` that is not a Go duration, or an unknown field is an error naming it.
pub fn retry_policy(config: &BackupConfiguration) -> Result<Option<RetryPolicy>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Raw {
        max_retry: Option<serde_json::Value>,
        delay: Option<String>,
    }
    let Some(v) = config.spec.retry_config.as_ref().filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let raw: Raw = serde_json::from_value(v.clone()).map_err(|e| {
        Error::invalid(format!(
            "spec.retryConfig is not a retry configuration: {e}"
        ))
    })?;
    let max_retry = match raw.max_retry {
        None | Some(serde_json::Value::Null) => 1,
        Some(serde_json::Value::Number(n))
            if n.as_i64().is_some_and(|n| (0..=MAX_RETRY).contains(&n)) =>
        {
            n.as_i64().unwrap_or(1) as u32
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "spec.retryConfig.maxRetry is {other}: it must be a whole number from 0 to {MAX_RETRY}"
            )));
        }
    };
    let delay = match raw
        .delay
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        None => Duration::ZERO,
        Some(d) => match parse_go_duration(d) {
            Some(delay) if delay <= MAX_RETRY_DELAY => delay,
            Some(_) => {
                return Err(Error::invalid(format!(
                    "spec.retryConfig.delay {d:?} is longer than 24h: the next scheduled backup would come first; shorten it"
                )));
            }
            None => {
                return Err(Error::invalid(format!(
                    "spec.retryConfig.delay {:?} is not a duration: write it as Go does (30s, 2m, 1h)",
                    d.chars().take(100).collect::<String>()
                )));
            }
        },
    };
    Ok(Some(RetryPolicy { max_retry, delay }))
}

/// RestoreSession fields stashless does not act on (as [`check_refused`]): hooks, alias,
/// args, per-path rules, another host than Stash's one `host-0`, several snapshots, and
/// task parameters other than `force`.
pub fn check_restore_refused(rs: &RestoreSession) -> Result<()> {
    let spec = &rs.spec;
    hooks::restore_hooks(spec.hooks.as_ref())?;
    if let Some(t) = &spec.target {
        if t.alias.as_deref().is_some_and(|a| !a.is_empty()) {
            return refuse("spec.target.alias is set: stashless picks a snapshot by name, not by host alias; remove it and name the snapshot in spec.target.rules[].snapshots".into());
        }
        if is_set(t.args.as_ref()) {
            return refuse("spec.target.args is set: stashless restores the raft snapshot through Vault's API and passes no arguments to a restore driver; remove spec.target.args".into());
        }
    }
    let target_rules = spec
        .target
        .as_ref()
        .map(|t| t.rules.as_slice())
        .unwrap_or(&[]);
    for (field, rules) in [
        ("spec.target.rules[]", target_rules),
        ("spec.rules[]", spec.rules.as_slice()),
    ] {
        for rule in rules {
            if let Some(h) = rule
                .source_host
                .as_deref()
                .filter(|h| !h.is_empty() && *h != DEFAULT_HOST)
            {
                return refuse(format!(
                    "{field}.sourceHost is {:?}: stashless picks a snapshot by name, not by source host; remove sourceHost and name the snapshot in {field}.snapshots",
                    h.chars().take(100).collect::<String>()
                ));
            }
            let other_host = rule.target_hosts.as_ref().and_then(|v| {
                v.as_array()?
                    .iter()
                    .filter_map(|h| h.as_str())
                    .find(|h| *h != DEFAULT_HOST)
                    .map(str::to_string)
            });
            if let Some(h) = other_host {
                return refuse(format!(
                    "{field}.targetHosts names {:?}: a Vault restore has the one host {DEFAULT_HOST}; remove targetHosts",
                    h.chars().take(100).collect::<String>()
                ));
            }
            for (name, v) in [
                ("paths", &rule.paths),
                ("include", &rule.include),
                ("exclude", &rule.exclude),
            ] {
                if is_set(v.as_ref()) {
                    return refuse(format!(
                        "{field}.{name} is set: a Vault raft snapshot is restored whole; remove {name}"
                    ));
                }
            }
        }
    }
    let effective = if target_rules.is_empty() {
        spec.rules.as_slice()
    } else {
        target_rules
    };
    let snapshots: usize = effective.iter().map(|r| r.snapshots.len()).sum();
    if snapshots > 1 {
        return refuse(format!(
            "the rules name {snapshots} snapshots: a Vault restore takes exactly one; name only the snapshot to restore"
        ));
    }
    if let Some(p) = spec.task.as_ref().and_then(|t| {
        t.params
            .iter()
            .find(|p| !["force", "keyPrefix", "oldKeyPrefix"].contains(&p.name.as_str()))
    }) {
        return refuse(format!(
            "spec.task.params names {:?}: stashless's restore reads only the parameters force, keyPrefix and oldKeyPrefix; remove the others",
            p.name.chars().take(100).collect::<String>()
        ));
    }
    Ok(())
}

/// The configuration's retentionPolicy as restic-style keep counts.
pub fn keep_policy(config: &BackupConfiguration) -> Result<KeepPolicy> {
    let rp = &config.spec.retention_policy;
    KeepPolicy::from_counts(
        rp.keep_last,
        rp.keep_hourly,
        rp.keep_daily,
        rp.keep_weekly,
        rp.keep_monthly,
        rp.keep_yearly,
    )
    .map_err(Error::invalid_from)
}

/// A backup's time limit: the configuration's `timeOut`, or `default`.
pub fn backup_time_limit(config: &BackupConfiguration, default: Duration) -> Result<Duration> {
    time_limit(
        "BackupConfiguration spec.timeOut",
        config.spec.time_out.as_deref(),
        default,
    )
}

/// A restore's time limit: the RestoreSession's `timeOut`, or `default`.
pub fn restore_time_limit(rs: &RestoreSession, default: Duration) -> Result<Duration> {
    time_limit(
        "RestoreSession spec.timeOut",
        rs.spec.time_out.as_deref(),
        default,
    )
}

/// A session's time limit from its `timeOut` (`field` names it for the reason), or
/// `default` when unset. A value that does not parse as a Go duration, is not positive, or
/// is above [`MAX_TIME_OUT`] is an error naming the field: silently running with the
/// default instead would hide the mistake.
pub fn time_limit(field: &str, raw: Option<&str>, default: Duration) -> Result<Duration> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(default);
    };
    let shown: String = raw
        .chars()
        .take(40)
        .flat_map(char::escape_default)
        .collect();
    let fail = |why: &str| Err(Error::invalid(format!("{field} \"{shown}\" {why}")));
    if raw.trim_start().starts_with('-') {
        return fail("is negative: a session needs a positive time limit such as \"30m\"");
    }
    match parse_go_duration(raw) {
        None => fail(
            "is not a duration: write it as Go does, a number and a unit (h, m, s, ms), e.g. \"30m\" or \"1h30m\"",
        ),
        Some(d) if d.is_zero() => {
            fail("is zero: a session needs a positive time limit such as \"30m\"")
        }
        Some(d) if d > MAX_TIME_OUT => fail(
            "is longer than 24h, the most stashless accepts: a session runs within one function invocation (at most 15 minutes on Lambda); use e.g. \"30m\"",
        ),
        Some(d) => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::api::BackupConfigurationSpec;
    use crate::error::ErrorKind;

    fn config(edit: impl FnOnce(&mut BackupConfigurationSpec)) -> BackupConfiguration {
        let mut spec = BackupConfigurationSpec {
            schedule: Some("0 * * * *".into()),
            ..Default::default()
        };
        spec.retention_policy.keep_last = Some(3);
        edit(&mut spec);
        BackupConfiguration::new("vault-backup", spec)
    }

    #[test]
    fn time_limit_reads_go_durations_and_names_the_field() {
        let d = Duration::from_secs(60);
        assert_eq!(time_limit("f", None, d).unwrap(), d);
        assert_eq!(time_limit("f", Some("  "), d).unwrap(), d);
        assert_eq!(
            time_limit("f", Some("1h30m"), d).unwrap(),
            Duration::from_secs(5400)
        );
        for (raw, why) in [
            ("-5m", "is negative"),
            ("soon", "is not a duration"),
            ("0s", "is zero"),
            ("25h", "is longer than 24h"),
        ] {
            let e = time_limit("RestoreSession spec.timeOut", Some(raw), d).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("RestoreSession spec.timeOut \"{raw}\" {why}")),
                "{msg}"
            );
        }
        // Control characters are shown escaped, and long values cut.
        let e = time_limit("f", Some(&format!("\n{}", "9".repeat(100))), d).unwrap_err();
        assert!(e.to_string().starts_with("f \"\\n999"), "{e}");
        assert!(e.to_string().len() < 300);
    }

    #[test]
    fn validate_checks_driver_schedule_retention_and_timeout() {
        assert!(validate(&config(|_| {})).is_ok());
        type Edit = fn(&mut BackupConfigurationSpec);
        let cases: [(&str, Edit); 5] = [
            ("spec.task.name is \"postgres-backup-14\"", |s| {
                s.task = Some(TaskRef {
                    name: Some("postgres-backup-14".into()),
                    params: vec![],
                })
            }),
            ("driver \"VolumeSnapshotter\" is not supported", |s| {
                s.driver = Some("VolumeSnapshotter".into())
            }),
            ("schedule", |s| s.schedule = Some("every hour".into())),
            ("timeOut", |s| s.time_out = Some("forever".into())),
            ("keep", |s| s.retention_policy.keep_last = Some(-1)),
        ];
        for (want, edit) in cases {
            let e = validate(&config(edit)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{want}");
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
        // Backup's own checks do not look at the schedule (a manual session may run).
        assert!(check_config(&config(|s| s.schedule = None)).is_ok());
        assert!(check_config(&config(|s| s.driver = Some("Restic".into()))).is_ok());
    }

    #[test]
    fn fields_stashless_does_not_act_on_are_refused_with_their_name() {
        let base = serde_json::json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupConfiguration",
            "metadata": {"name": "c", "namespace": "vault"},
            "spec": {"schedule": "0 * * * *", "repository": {"name": "repo"},
                     "target": {"ref": {"kind": "AppBinding", "name": "vault"}},
                     "retentionPolicy": {"name": "k", "keepLast": 3, "prune": true}}
        });
        let with = |path: &[&str], v: Value| {
            let mut c = base.clone();
            let mut cur = &mut c["spec"];
            for p in &path[..path.len() - 1] {
                cur = &mut cur[*p];
            }
            cur[path[path.len() - 1]] = v;
            serde_json::from_value::<BackupConfiguration>(c).unwrap()
        };
        assert!(validate(&with(&["hooks"], Value::Null)).is_ok());
        assert!(validate(&with(&["hooks"], serde_json::json!({}))).is_ok());
        let http_hook = serde_json::json!({"preBackup": {"httpGet": {"port": 80}}});
        assert!(validate(&with(&["hooks"], http_hook)).is_ok());
        let retry = |v: Value| retry_policy(&with(&["retryConfig"], v)).unwrap();
        assert_eq!(retry(Value::Null), None);
        assert_eq!(
            retry(serde_json::json!({})),
            Some(RetryPolicy {
                max_retry: 1,
                delay: Duration::ZERO
            })
        );
        assert_eq!(
            retry(serde_json::json!({"maxRetry": 3, "delay": "2m"})),
            Some(RetryPolicy {
                max_retry: 3,
                delay: Duration::from_secs(120)
            })
        );
        for (path, v, want) in [
            (
                &["hooks"][..],
                serde_json::json!({"preBackup": {"exec": {"command": ["sync"]}}}),
                "spec.hooks.preBackup.exec cannot run",
            ),
            (
                &["retryConfig"],
                serde_json::json!({"maxRetry": -1}),
                "spec.retryConfig.maxRetry is -1: it must be a whole number from 0 to 100",
            ),
            (
                &["retryConfig"],
                serde_json::json!({"maxRetry": 2, "delay": "soon"}),
                "spec.retryConfig.delay \"soon\" is not a duration",
            ),
            (
                &["retryConfig"],
                serde_json::json!({"delay": "48h"}),
                "spec.retryConfig.delay \"48h\" is longer than 24h",
            ),
            (
                &["retryConfig"],
                serde_json::json!({"maxRetries": 2}),
                "spec.retryConfig is not a retry configuration: unknown field `maxRetries`",
            ),
            (
                &["target", "alias"],
                serde_json::json!("db"),
                "spec.target.alias is set",
            ),
            (
                &["target", "args"],
                serde_json::json!(["--x"]),
                "spec.target.args is set",
            ),
            (
                &["target", "exclude"],
                serde_json::json!(["/tmp"]),
                "spec.target.exclude is set",
            ),
            (
                &["task"],
                serde_json::json!({"params": [{"name": "a", "value": "b"}]}),
                "spec.task.params is set",
            ),
            (
                &["retentionPolicy", "keepTags"],
                serde_json::json!(["gold"]),
                "spec.retentionPolicy.keepTags is set",
            ),
        ] {
            let c = with(path, v);
            for e in [validate(&c).unwrap_err(), check_config(&c).unwrap_err()] {
                assert_eq!(e.kind(), ErrorKind::Invalid, "{want}");
                assert!(e.to_string().starts_with(want), "{want}: {e}");
            }
        }
        let mut session = BackupSession::new("s", Default::default());
        let plain = with(&["retryConfig"], Value::Null);
        assert!(check_session(&session, &plain).is_ok());
        session.spec.retry_left = Some(2);
        assert!(
            check_session(&session, &plain)
                .unwrap_err()
                .to_string()
                .starts_with(
                    "spec.retryLeft is 2 but BackupConfiguration c has no spec.retryConfig"
                )
        );
        let retried = with(&["retryConfig"], serde_json::json!({"maxRetry": 2}));
        assert!(check_session(&session, &retried).is_ok());

        let rs = |spec: Value| {
            serde_json::from_value::<RestoreSession>(serde_json::json!({
                "apiVersion": "stash.appscode.com/v1beta1", "kind": "RestoreSession",
                "metadata": {"name": "r", "namespace": "vault"}, "spec": spec
            }))
            .unwrap()
        };
        let ok = rs(serde_json::json!({"target": {"ref": {"name": "vault"},
            "rules": [{"sourceHost": "host-0", "targetHosts": ["host-0"], "snapshots": ["vault/cfg-1"]}]},
            "task": {"params": [{"name": "force", "value": "true"}]}}));
        assert!(check_restore_refused(&ok).is_ok());
        for (spec, want) in [
            (
                serde_json::json!({"hooks": {"postRestore": {"exec": {"command": ["x"]}}}}),
                "spec.hooks.postRestore.exec cannot run",
            ),
            (
                serde_json::json!({"target": {"alias": "db"}}),
                "spec.target.alias is set",
            ),
            (
                serde_json::json!({"target": {"args": ["x"]}}),
                "spec.target.args is set",
            ),
            (
                serde_json::json!({"target": {"rules": [{"sourceHost": "pod-1"}]}}),
                "spec.target.rules[].sourceHost is \"pod-1\"",
            ),
            (
                serde_json::json!({"rules": [{"targetHosts": ["host-0", "host-1"]}]}),
                "spec.rules[].targetHosts names \"host-1\"",
            ),
            (
                serde_json::json!({"target": {"rules": [{"paths": ["/data"]}]}}),
                "spec.target.rules[].paths is set",
            ),
            (
                serde_json::json!({"rules": [{"include": ["a"]}]}),
                "spec.rules[].include is set",
            ),
            (
                serde_json::json!({"target": {"rules": [{"exclude": ["a"]}]}}),
                "spec.target.rules[].exclude is set",
            ),
            (
                serde_json::json!({"target": {"rules": [{"snapshots": ["a", "b"]}]}}),
                "the rules name 2 snapshots",
            ),
            (
                serde_json::json!({"task": {"params": [{"name": "force", "value": "true"}, {"name": "x", "value": "y"}]}}),
                "spec.task.params names \"x\"",
            ),
        ] {
            let e = check_restore_refused(&rs(spec)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{want}");
            assert!(e.to_string().starts_with(want), "{want}: {e}");
        }
    }
}
