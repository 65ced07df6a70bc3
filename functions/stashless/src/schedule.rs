//! Which cron slot is due, and the BackupSession name for it. Pure: no I/O.
//!
//! The scheduler is stateless (one Lambda tick a minute), so "due since the last tick"
//! is computed from the tick's own time: the latest slot at or before the tick is due if
//! it falls inside the starting deadline (like a CronJob's `startingDeadlineSeconds`) and
//! after the configuration was created. Only that latest slot runs; older missed ones are
//! skipped. The session name is derived from the slot, so a duplicate or retried tick
//! computes the same name and the API server's AlreadyExists makes it a no-op.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed `spec.schedule`: 5-field cron (or `@hourly`-style), optional `CRON_TZ=`/`TZ=` prefix.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
    source: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule is empty: set spec.schedule to a 5-field cron expression such as \"0 */6 * * *\""
    )]
    Empty,
    #[error(
        "unknown time zone {0:?} in schedule: use an IANA name such as \"Europe/Berlin\" or \"UTC\""
    )]
    TimeZone(String),
    #[error(
        "schedule {schedule:?} has {fields} fields: Kubernetes cron uses exactly 5 (minute hour day-of-month month day-of-week)"
    )]
    FieldCount { schedule: String, fields: usize },
    #[error("schedule {schedule:?} is not a valid cron expression: {reason}")]
    Cron { schedule: String, reason: String },
    #[error(
        "schedule {schedule:?}: the {field} field \"{value}\" is not valid ({reason}); {field} takes {range}"
    )]
    Field {
        schedule: String,
        field: &'static str,
        value: String,
        range: &'static str,
        reason: String,
    },
    #[error(
        "schedule {0:?} never comes due (no date matches it, such as February 30th): fix the day-of-month or month field"
    )]
    Never(String),
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let source = s.trim().to_string();
        if source.is_empty() {
            return Err(ScheduleError::Empty);
        }
        // Errors quote the schedule into status and Events: at most 100 characters of it.
        let shown = || shorten(&source);
        let (tz, expr) = split_timezone(&source)?;
        let expr = expr.trim();
        if expr.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if !expr.starts_with('@') {
            let fields = expr.split_whitespace().count();
            if fields != 5 {
                return Err(ScheduleError::FieldCount {
                    schedule: shown(),
                    fields,
                });
            }
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(expr).map_err(|e| {
            // croner quotes the offending characters as they are.
            let reason = escape_controls(&e.to_string(), 300);
            // croner's errors name neither the field nor its range ("Number out of
            // bounds."): find the field by parsing each alone, the others left as `*`.
            match offending_field(&parser, expr) {
                Some((i, value)) => ScheduleError::Field {
                    schedule: shown(),
                    field: FIELDS[i].0,
                    value: escape_controls(value, 40),
                    range: FIELDS[i].1,
                    reason,
                },
                None => ScheduleError::Cron {
                    schedule: shown(),
                    reason,
                },
            }
        })?;
        // "0 0 31 2 *" parses but no date ever matches: a configuration that looks valid
        // and never runs a backup.
        if cron
            .find_next_occurrence(&Utc::now().with_timezone(&tz), false)
            .is_err()
        {
            return Err(ScheduleError::Never(shown()));
        }
        Ok(Schedule { cron, tz, source })
    }
}

/// The five fields of a Kubernetes cron schedule and the values each takes.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT (0 and 7 are Sunday)"),
];

/// The first field that does not parse on its own (the others as `*`), with its text.
fn offending_field<'a>(parser: &CronParser, expr: &'a str) -> Option<(usize, &'a str)> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return None;
    }
    (0..fields.len()).find_map(|i| {
        let probe: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { fields[i] } else { "*" })
            .collect();
        parser
            .parse(&probe.join(" "))
            .is_err()
            .then_some((i, fields[i]))
    })
}

/// At most `max` characters of `s`, control characters shown escaped.
fn escape_controls(s: &str, max: usize) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .take(max)
        .collect()
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(100).collect();
    if s.chars().count() > 100 {
        out.push_str("...");
    }
    out
}

fn split_timezone(s: &str) -> Result<(Tz, &str), ScheduleError> {
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = s.strip_prefix(prefix) {
            let (name, expr) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let tz = Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(shorten(name)))?;
            return Ok((tz, expr));
        }
    }
    Ok((Tz::UTC, s))
}

impl Schedule {
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The latest slot at or before `now`, in UTC.
    pub fn latest_slot(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next slot strictly after `now`.
    pub fn next_slot(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The slot to run at tick `now`, if any: the latest slot, when it is no older than
    /// `starting_deadline` and not before `not_before` (the configuration's creation).
    pub fn due_slot(
        &self,
        now: DateTime<Utc>,
        starting_deadline: chrono::Duration,
        not_before: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        let slot = self.latest_slot(now)?;
        if now - slot > starting_deadline {
            return None;
        }
        if let Some(created) = not_before
            && slot < created
        {
            return None;
        }
        Some(slot)
    }
}

/// Deterministic BackupSession name for a configuration's slot: `<config>-<unix seconds>`,
/// the shape Stash's CronJob uses. Kept within the 63 characters a label value allows
/// (the name is also written into labels), shortening the config part with a hash.
pub fn session_name(config: &str, slot: DateTime<Utc>) -> String {
    let suffix = slot.timestamp().to_string();
    let max_prefix = 63 - 1 - suffix.len();
    if config.len() <= max_prefix {
        return format!("{config}-{suffix}");
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(config.as_bytes())[..4]);
    let keep = max_prefix - hash.len() - 1;
    let head = config[..keep].trim_end_matches(['-', '.']);
    format!("{head}-{hash}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn latest_slot_is_at_or_before_now() {
        let s: Schedule = "*/15 * * * *".parse().unwrap();
        assert_eq!(
            s.latest_slot(at("2026-03-01T10:44:59Z")),
            Some(at("2026-03-01T10:30:00Z"))
        );
        assert_eq!(
            s.latest_slot(at("2026-03-01T10:45:00Z")),
            Some(at("2026-03-01T10:45:00Z"))
        );
        assert_eq!(
            s.next_slot(at("2026-03-01T10:45:00Z")),
            Some(at("2026-03-01T11:00:00Z"))
        );
    }

    #[test]
    fn due_only_within_starting_deadline_and_after_creation() {
        let s: Schedule = "0 2 * * *".parse().unwrap();
        let d = chrono::Duration::minutes(5);
        assert_eq!(
            s.due_slot(at("2026-03-01T02:03:00Z"), d, None),
            Some(at("2026-03-01T02:00:00Z"))
        );
        // Missed by more than the deadline: nothing runs until the next slot.
        assert_eq!(s.due_slot(at("2026-03-01T05:00:00Z"), d, None), None);
        // Created after the slot: does not fire for it.
        assert_eq!(
            s.due_slot(
                at("2026-03-01T02:03:00Z"),
                d,
                Some(at("2026-03-01T02:01:00Z"))
            ),
            None
        );
    }

    #[test]
    fn missed_slots_collapse_to_the_latest() {
        let s: Schedule = "* * * * *".parse().unwrap();
        let d = chrono::Duration::hours(1);
        // Three missed minutes: one slot, the latest.
        assert_eq!(
            s.due_slot(at("2026-03-01T10:03:30Z"), d, None),
            Some(at("2026-03-01T10:03:00Z"))
        );
    }

    #[test]
    fn cron_tz_prefix_is_honoured() {
        let s: Schedule = "CRON_TZ=Europe/Berlin 0 3 * * *".parse().unwrap();
        // 03:00 in Berlin on 2026-07-01 (CEST, UTC+2) is 01:00 UTC.
        assert_eq!(
            s.latest_slot(at("2026-07-01T01:30:00Z")),
            Some(at("2026-07-01T01:00:00Z"))
        );
        // In winter (CET, UTC+1) it is 02:00 UTC.
        assert_eq!(
            s.latest_slot(at("2026-01-10T02:30:00Z")),
            Some(at("2026-01-10T02:00:00Z"))
        );
        let t: Schedule = "TZ=America/New_York 30 6 * * 1-5".parse().unwrap();
        // Monday 2026-03-02 06:30 EST = 11:30 UTC.
        assert_eq!(
            t.latest_slot(at("2026-03-02T12:00:00Z")),
            Some(at("2026-03-02T11:30:00Z"))
        );
    }

    #[test]
    fn descriptors_work() {
        let s: Schedule = "@hourly".parse().unwrap();
        assert_eq!(
            s.latest_slot(at("2026-03-01T10:44:59Z")),
            Some(at("2026-03-01T10:00:00Z"))
        );
    }

    #[test]
    fn invalid_schedules_say_what_is_wrong() {
        let e = "".parse::<Schedule>().unwrap_err();
        assert_eq!(e, ScheduleError::Empty);
        let e = "* * * *".parse::<Schedule>().unwrap_err();
        assert!(e.to_string().contains("has 4 fields"), "{e}");
        let e = "0 0 * * * *".parse::<Schedule>().unwrap_err();
        assert!(e.to_string().contains("has 6 fields"), "{e}");
        // Out of range or malformed: the field is named, with what it takes.
        for (schedule, field, range) in [
            ("61 * * * *", "minute", "0-59"),
            ("0 24 * * *", "hour", "0-23"),
            ("0 0 0 * *", "day-of-month", "1-31"),
            ("0 0 1 13 *", "month", "1-12"),
            ("0 0 * * 8", "day-of-week", "0-7"),
            ("0 0 * * MONDAY", "day-of-week", "SUN-SAT"),
            ("*/x * * * *", "minute", "0-59"),
        ] {
            let e = schedule.parse::<Schedule>().unwrap_err();
            assert!(matches!(e, ScheduleError::Field { .. }), "{schedule}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("the {field} field")) && msg.contains(range),
                "{schedule}: {msg}"
            );
        }
        let e = "61 * * * *".parse::<Schedule>().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("schedule \"61 * * * *\": the minute field \"61\" is not valid ("),
            "{e}"
        );
        let e = "CRON_TZ=Mars/Olympus 0 * * * *"
            .parse::<Schedule>()
            .unwrap_err();
        assert_eq!(e, ScheduleError::TimeZone("Mars/Olympus".into()));
        let e = "0 0 31 2 *".parse::<Schedule>().unwrap_err();
        assert!(e.to_string().contains("never comes due"), "{e}");
        let long = format!("0 0 * * * {}", "x".repeat(10_000));
        let e = long.parse::<Schedule>().unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
    }

    #[test]
    fn session_names_are_deterministic_and_bounded() {
        let slot = Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap();
        assert_eq!(
            session_name("vault-backup", slot),
            format!("vault-backup-{}", slot.timestamp())
        );
        assert_eq!(
            session_name("vault-backup", slot),
            session_name("vault-backup", slot)
        );
        let long = "a".repeat(200);
        let n = session_name(&long, slot);
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with(&slot.timestamp().to_string()));
        assert_ne!(session_name(&format!("{long}x"), slot), n);
    }
}
