//! Checks of a BackupConfiguration (and a RestoreSession's own fields) that need no other
//! object: driver, schedule, retention keep counts, `timeOut`. The scheduler marks a
//! configuration that fails them Invalid; backup and restore run them before touching
//! Vault or S3. Pure: no I/O.

use std::time::Duration;

use crate::api::{BackupConfiguration, RestoreSession, parse_go_duration};
use crate::error::{Error, Result};
use crate::retention::KeepPolicy;
use crate::schedule::Schedule;

/// The longest `timeOut` accepted. A session runs inside one function invocation (at most
/// 15 minutes on Lambda), so anything near this is already capped by that; far beyond it
/// ("100000h", "99999999999s") is a typo, and would put `sessionDeadline` centuries away.
pub const MAX_TIME_OUT: Duration = Duration::from_secs(24 * 3600);

/// Everything the scheduler checks before creating sessions: the schedule it parsed, or
/// why the configuration is Invalid.
pub fn validate(config: &BackupConfiguration) -> Result<Schedule> {
    check_driver(config.spec.driver.as_deref(), "streams")?;
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
        let cases: [(&str, Edit); 4] = [
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
}
