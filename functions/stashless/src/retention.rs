//! Which snapshots to keep: restic `forget` keep-policy semantics, as Stash
//! exposes them in a `RetentionPolicy` (`keepLast`, `keepHourly`, `keepDaily`,
//! `keepWeekly`, `keepMonthly`, `keepYearly`).
//!
//! The rules are those of Stash's restic (`stashed/restic`,
//! `internal/restic/snapshot_policy.go`):
//!
//! * snapshots are sorted newest first (equal times: the greater id first, so
//!   the result does not depend on the input order);
//! * each rule with a count `n > 0` walks them newest to oldest with a bucket
//!   key: the snapshot itself for `last`, the UTC hour, day, ISO week (ISO
//!   year and week number), month or year for the others. A snapshot whose
//!   key differs from the key of the rule's previous kept snapshot is kept by
//!   that rule while the rule has count left, which it then uses up. So
//!   `keepDaily: 7` keeps the newest snapshot of each of the 7 most recent
//!   days that have snapshots, however far back those days go;
//! * a snapshot is kept when any rule keeps it;
//! * an empty policy (all counts 0) keeps everything (reason `"no policy"`),
//!   as restic refuses to forget anything without one;
//! * the newest snapshot is always kept (reason `"newest"`): a backup must
//!   never remove the newest good snapshot.
//!
//! Upstream restic (0.15 and later, not Stash's fork) also keeps the oldest
//! snapshot when a rule still has count left; that is not done here.
//! `keepTags` is not supported yet.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// The largest count accepted for any rule.
pub const MAX_KEEP: i64 = 1_000_000;

/// Why [`MAX_KEEP`]: a million is nearly two years of a snapshot every minute, more than a
/// Repository is ever listed with; a larger count is a typo, and would keep everything.
const TOO_MANY: &str = "must be at most 1000000 (nearly two years of a snapshot every minute; a larger count keeps everything, so it is likely a typo)";

/// How many snapshots each rule keeps; 0 disables the rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

/// A retention count that is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retentionPolicy.{field} is {value}: {requirement}")]
pub struct RetentionError {
    /// The CRD field, e.g. `"keepDaily"`.
    pub field: &'static str,
    pub value: i64,
    /// What the value must be, e.g. `"must be 0 or more"`.
    pub requirement: &'static str,
}

impl KeepPolicy {
    /// Builds a policy from the CRD's raw integers (`None` is 0). Negative
    /// values and values above [`MAX_KEEP`] are errors naming the field.
    pub fn from_counts(
        last: Option<i64>,
        hourly: Option<i64>,
        daily: Option<i64>,
        weekly: Option<i64>,
        monthly: Option<i64>,
        yearly: Option<i64>,
    ) -> Result<Self, RetentionError> {
        fn count(field: &'static str, value: Option<i64>) -> Result<u32, RetentionError> {
            let value = value.unwrap_or(0);
            let error = |requirement| RetentionError {
                field,
                value,
                requirement,
            };
            if value < 0 {
                return Err(error(
                    "must be 0 or more (0, or leaving it out, turns this rule off)",
                ));
            }
            if value > MAX_KEEP {
                return Err(error(TOO_MANY));
            }
            u32::try_from(value).map_err(|_| error(TOO_MANY))
        }
        Ok(KeepPolicy {
            last: count("keepLast", last)?,
            hourly: count("keepHourly", hourly)?,
            daily: count("keepDaily", daily)?,
            weekly: count("keepWeekly", weekly)?,
            monthly: count("keepMonthly", monthly)?,
            yearly: count("keepYearly", yearly)?,
        })
    }

    /// True when no rule is set: then everything is kept.
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }
}

/// A snapshot the policy is applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
}

/// What the policy decided for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Why it is kept, in this order: `"last"`, `"hourly"`, `"daily"`,
    /// `"weekly"`, `"monthly"`, `"yearly"`, then `"newest"`; or `"no policy"`
    /// (then `"newest"`). Empty when the snapshot is to be removed.
    pub reasons: Vec<&'static str>,
}

#[derive(Clone, Copy)]
enum Bucket {
    Last,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    /// The bucket key of a snapshot, `nr` being its rank, newest first.
    fn key(self, time: &DateTime<Utc>, nr: usize) -> i64 {
        let (y, m, d, h) = (
            i64::from(time.year()),
            i64::from(time.month()),
            i64::from(time.day()),
            i64::from(time.hour()),
        );
        match self {
            Bucket::Last => i64::try_from(nr).unwrap_or(i64::MAX),
            Bucket::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Bucket::Day => (y * 100 + m) * 100 + d,
            Bucket::Week => {
                let week = time.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Bucket::Month => y * 100 + m,
            Bucket::Year => y,
        }
    }
}

/// Applies `policy` to `snapshots`; the decisions come newest first.
pub fn plan(policy: &KeepPolicy, snapshots: &[Candidate]) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));

    struct Rule {
        left: u32,
        bucket: Bucket,
        reason: &'static str,
        last_key: Option<i64>,
    }
    let rule = |left, bucket, reason| Rule {
        left,
        bucket,
        reason,
        last_key: None,
    };
    let mut rules = [
        rule(policy.last, Bucket::Last, "last"),
        rule(policy.hourly, Bucket::Hour, "hourly"),
        rule(policy.daily, Bucket::Day, "daily"),
        rule(policy.weekly, Bucket::Week, "weekly"),
        rule(policy.monthly, Bucket::Month, "monthly"),
        rule(policy.yearly, Bucket::Year, "yearly"),
    ];
    let no_policy = policy.is_empty();

    sorted
        .into_iter()
        .enumerate()
        .map(|(nr, snapshot)| {
            let mut reasons = Vec::new();
            if no_policy {
                reasons.push("no policy");
            }
            for rule in rules.iter_mut().filter(|r| r.left > 0) {
                let key = rule.bucket.key(&snapshot.time, nr);
                if rule.last_key != Some(key) {
                    rule.last_key = Some(key);
                    rule.left -= 1;
                    reasons.push(rule.reason);
                }
            }
            if nr == 0 {
                reasons.push("newest");
            }
            Decision {
                id: snapshot.id.clone(),
                time: snapshot.time,
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use std::collections::{BTreeSet, HashSet};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn cand(id: &str, time: DateTime<Utc>) -> Candidate {
        Candidate {
            id: id.to_string(),
            time,
        }
    }

    fn policy(
        last: u32,
        hourly: u32,
        daily: u32,
        weekly: u32,
        monthly: u32,
        yearly: u32,
    ) -> KeepPolicy {
        KeepPolicy {
            last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
        }
    }

    fn kept(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_str())
            .collect()
    }

    /// One snapshot every 3 hours for 90 days from 2023-12-01 (across a year
    /// end), plus three extra ones in hours that already have one.
    fn history() -> Vec<Candidate> {
        let start = at(2023, 12, 1, 0, 0);
        let mut out: Vec<Candidate> = (0..90 * 8)
            .map(|i| cand(&format!("s{i:04}"), start + Duration::hours(3 * i)))
            .collect();
        for (i, extra) in [5i64, 77, 400].into_iter().enumerate() {
            out.push(cand(
                &format!("x{i}"),
                start + Duration::hours(3 * extra) + Duration::minutes(20),
            ));
        }
        // Not in time order, to exercise the sort.
        out.reverse();
        out.rotate_left(100);
        out
    }

    #[test]
    fn from_counts_validates_and_names_the_field() {
        assert_eq!(
            KeepPolicy::from_counts(Some(3), None, Some(7), Some(0), None, Some(2)).unwrap(),
            policy(3, 0, 7, 0, 0, 2)
        );
        let err = KeepPolicy::from_counts(None, None, Some(-3), None, None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "retentionPolicy.keepDaily is -3: must be 0 or more (0, or leaving it out, turns this rule off)"
        );
        let err =
            KeepPolicy::from_counts(None, None, None, None, None, Some(1_000_001)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("retentionPolicy.keepYearly is 1000001: {TOO_MANY}")
        );
        let err =
            KeepPolicy::from_counts(Some(i64::MIN), None, None, None, None, None).unwrap_err();
        assert_eq!(err.field, "keepLast");
        let err =
            KeepPolicy::from_counts(None, Some(i64::MAX), None, None, None, None).unwrap_err();
        assert_eq!(err.field, "keepHourly");
        let max = KeepPolicy::from_counts(None, None, None, Some(MAX_KEEP), Some(MAX_KEEP), None)
            .unwrap();
        assert_eq!((max.weekly, max.monthly), (1_000_000, 1_000_000));
        let err = KeepPolicy::from_counts(None, None, None, None, Some(-1), None).unwrap_err();
        assert_eq!(err.field, "keepMonthly");
        assert!(
            KeepPolicy::from_counts(None, None, None, None, None, None)
                .unwrap()
                .is_empty()
        );
        assert!(KeepPolicy::default().is_empty());
        assert!(!policy(0, 0, 0, 0, 0, 1).is_empty());
    }

    #[test]
    fn empty_input() {
        assert!(plan(&policy(3, 0, 7, 0, 0, 0), &[]).is_empty());
        assert!(plan(&KeepPolicy::default(), &[]).is_empty());
    }

    #[test]
    fn single_snapshot_is_kept() {
        let one = [cand("a", at(2024, 5, 1, 12, 0))];
        // keepLast 0 and keepDaily 0 (no policy at all): kept.
        let d = plan(&KeepPolicy::default(), &one);
        assert!(d[0].keep);
        assert_eq!(d[0].reasons, ["no policy", "newest"]);
        let d = plan(&policy(0, 1, 0, 0, 0, 0), &one);
        assert_eq!(d[0].reasons, ["hourly", "newest"]);
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let h = history();
        let d = plan(&KeepPolicy::default(), &h);
        assert_eq!(d.len(), h.len());
        assert!(d.iter().all(|d| d.keep && d.reasons[0] == "no policy"));
        assert_eq!(
            d.iter().filter(|d| d.reasons.contains(&"newest")).count(),
            1
        );
    }

    #[test]
    fn small_case_by_hand() {
        let snaps = vec![
            cand("a", at(2024, 3, 1, 10, 0)),  // Fri
            cand("b", at(2024, 3, 1, 10, 30)), // same hour as a
            cand("c", at(2024, 3, 1, 14, 0)),
            cand("d", at(2024, 3, 2, 9, 0)), // Sat
            cand("e", at(2024, 3, 4, 9, 0)), // Mon, next ISO week
            cand("f", at(2024, 3, 4, 23, 59)),
            cand("g", at(2024, 4, 1, 0, 0)), // next month
        ];
        // Newest first: g f e d c b a
        let d = plan(&policy(2, 0, 0, 0, 0, 0), &snaps);
        assert_eq!(kept(&d), ["g", "f"]);
        assert_eq!(
            d.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["g", "f", "e", "d", "c", "b", "a"]
        );
        assert_eq!(d[0].reasons, ["last", "newest"]);
        assert_eq!(d[1].reasons, ["last"]);
        assert!(d[2].reasons.is_empty());

        // Days with snapshots, newest first: 04-01 (g), 03-04 (f), 03-02 (d), 03-01 (c).
        assert_eq!(
            kept(&plan(&policy(0, 0, 3, 0, 0, 0), &snaps)),
            ["g", "f", "d"]
        );
        assert_eq!(
            kept(&plan(&policy(0, 0, 10, 0, 0, 0), &snaps)),
            ["g", "f", "d", "c"]
        );
        // Hours: g, f, e, d, c, then b (a shares b's hour).
        assert_eq!(
            kept(&plan(&policy(0, 5, 0, 0, 0, 0), &snaps)),
            ["g", "f", "e", "d", "c"]
        );
        assert_eq!(
            kept(&plan(&policy(0, 9, 0, 0, 0, 0), &snaps)),
            ["g", "f", "e", "d", "c", "b"]
        );
        // ISO weeks: 2024-W14 (g), W10 (f), W09 (d).
        assert_eq!(
            kept(&plan(&policy(0, 0, 0, 3, 0, 0), &snaps)),
            ["g", "f", "d"]
        );
        // Months: April (g), March (f).
        assert_eq!(kept(&plan(&policy(0, 0, 0, 0, 5, 0), &snaps)), ["g", "f"]);
        assert_eq!(kept(&plan(&policy(0, 0, 0, 0, 0, 5), &snaps)), ["g"]);

        // Combined: last 1 keeps g; daily 2 keeps g, f; monthly 2 keeps g, f.
        let d = plan(&policy(1, 0, 2, 0, 2, 0), &snaps);
        assert_eq!(kept(&d), ["g", "f"]);
        assert_eq!(d[0].reasons, ["last", "daily", "monthly", "newest"]);
        assert_eq!(d[1].reasons, ["daily", "monthly"]);
    }

    #[test]
    fn keep_daily_7_keeps_newest_of_the_7_most_recent_days_with_snapshots() {
        // Several snapshots a day on 12 days, with gaps.
        let days = [1, 2, 3, 5, 6, 9, 10, 11, 15, 16, 20, 21];
        let mut snaps = Vec::new();
        for day in days {
            for hour in [1, 9, 17, 23] {
                snaps.push(cand(
                    &format!("{day:02}-{hour:02}"),
                    at(2024, 1, day, hour, 0),
                ));
            }
        }
        let d = plan(&policy(0, 0, 7, 0, 0, 0), &snaps);
        assert_eq!(
            kept(&d),
            [
                "21-23", "20-23", "16-23", "15-23", "11-23", "10-23", "09-23"
            ]
        );
        assert!(
            d.iter()
                .filter(|d| d.keep)
                .all(|d| d.reasons.contains(&"daily"))
        );
    }

    #[test]
    fn iso_weeks_across_year_ends() {
        let snaps = vec![
            cand("2020-12-27 sun W52", at(2020, 12, 27, 12, 0)),
            cand("2020-12-28 mon W53", at(2020, 12, 28, 12, 0)),
            cand("2021-01-03 sun W53", at(2021, 1, 3, 12, 0)), // ISO 2020-W53
            cand("2021-01-04 mon W01", at(2021, 1, 4, 12, 0)),
            cand("2024-12-29 sun W52", at(2024, 12, 29, 12, 0)),
            cand("2024-12-30 mon W01", at(2024, 12, 30, 12, 0)), // ISO 2025-W01
            cand("2025-01-05 sun W01", at(2025, 1, 5, 23, 59)),  // ISO 2025-W01
            cand("2025-01-06 mon W02", at(2025, 1, 6, 0, 0)),
        ];
        let d = plan(&policy(0, 0, 0, 100, 0, 0), &snaps);
        assert_eq!(
            kept(&d),
            [
                "2025-01-06 mon W02",
                "2025-01-05 sun W01",
                "2024-12-29 sun W52",
                "2021-01-04 mon W01",
                "2021-01-03 sun W53",
                "2020-12-27 sun W52",
            ]
        );
        // Yearly is by calendar year, not ISO year.
        let d = plan(&policy(0, 0, 0, 0, 0, 100), &snaps);
        assert_eq!(
            kept(&d),
            [
                "2025-01-06 mon W02",
                "2024-12-30 mon W01",
                "2021-01-04 mon W01",
                "2020-12-28 mon W53"
            ]
        );
    }

    #[test]
    fn ties_are_broken_by_id_and_input_order_does_not_matter() {
        let t = at(2024, 6, 1, 8, 0);
        let snaps = vec![cand("b", t), cand("c", t), cand("a", t)];
        let d = plan(&policy(1, 0, 0, 0, 0, 0), &snaps);
        assert_eq!(
            d.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["c", "b", "a"]
        );
        assert_eq!(kept(&d), ["c"]);
        let mut reversed = snaps.clone();
        reversed.reverse();
        assert_eq!(plan(&policy(1, 0, 0, 0, 0, 0), &reversed), d);

        let h = history();
        let mut shuffled = h.clone();
        shuffled.rotate_left(37);
        shuffled.swap(3, 500);
        let p = policy(2, 5, 7, 4, 3, 1);
        assert_eq!(plan(&p, &h), plan(&p, &shuffled));
    }

    /// Bucket key of a time, for the checks below (independent of the code).
    fn key_of(rule: &str, t: &DateTime<Utc>) -> String {
        match rule {
            "hourly" => t.format("%Y-%m-%d %H").to_string(),
            "daily" => t.format("%Y-%m-%d").to_string(),
            "weekly" => t.format("%G-W%V").to_string(),
            "monthly" => t.format("%Y-%m").to_string(),
            "yearly" => t.format("%Y").to_string(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn large_history_keeps_one_per_bucket_for_the_most_recent_buckets() {
        let h = history();
        let mut newest_first = h.clone();
        newest_first.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
        let rules = ["hourly", "daily", "weekly", "monthly", "yearly"];
        for (i, rule) in rules.iter().enumerate() {
            // Distinct buckets, newest first, with the newest snapshot of each.
            let mut buckets: Vec<(String, &str)> = Vec::new();
            for c in &newest_first {
                let k = key_of(rule, &c.time);
                if buckets.last().is_none_or(|(last, _)| *last != k) {
                    buckets.push((k, &c.id));
                }
            }
            for n in [1, 3, 10, 50, 200, 10_000] {
                let mut counts = [0; 6];
                counts[i + 1] = n;
                let p = policy(
                    counts[0], counts[1], counts[2], counts[3], counts[4], counts[5],
                );
                let d = plan(&p, &h);
                let want: Vec<&str> = buckets.iter().take(n as usize).map(|(_, id)| *id).collect();
                assert_eq!(kept(&d), want, "{rule} {n}");
                assert_eq!(kept(&d).len(), (n as usize).min(buckets.len()));
            }
        }
        // Sanity of the history itself: 90 days, 720 regular hours, 13 weeks or 14.
        let days: HashSet<_> = h.iter().map(|c| key_of("daily", &c.time)).collect();
        assert_eq!(days.len(), 90);
        let hours: HashSet<_> = h.iter().map(|c| key_of("hourly", &c.time)).collect();
        assert_eq!(hours.len(), 720);
        let years: HashSet<_> = h.iter().map(|c| key_of("yearly", &c.time)).collect();
        assert_eq!(years.len(), 2);

        // keepLast n keeps the n newest.
        let d = plan(&policy(25, 0, 0, 0, 0, 0), &h);
        let want: Vec<&str> = newest_first
            .iter()
            .take(25)
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(kept(&d), want);
    }

    #[test]
    fn combined_policy_is_the_union_of_its_rules() {
        let h = history();
        let combined = policy(4, 12, 10, 6, 3, 2);
        let parts = [
            policy(4, 0, 0, 0, 0, 0),
            policy(0, 12, 0, 0, 0, 0),
            policy(0, 0, 10, 0, 0, 0),
            policy(0, 0, 0, 6, 0, 0),
            policy(0, 0, 0, 0, 3, 0),
            policy(0, 0, 0, 0, 0, 2),
        ];
        let union: BTreeSet<String> = parts
            .iter()
            .flat_map(|p| plan(p, &h).into_iter().filter(|d| d.keep).map(|d| d.id))
            .collect();
        let d = plan(&combined, &h);
        let got: BTreeSet<String> = d.iter().filter(|d| d.keep).map(|d| d.id.clone()).collect();
        assert_eq!(got, union);
        // Every rule spent its whole count (there are enough buckets).
        let spent = |r: &str| d.iter().filter(|d| d.reasons.contains(&r)).count();
        assert_eq!(
            [
                spent("last"),
                spent("hourly"),
                spent("daily"),
                spent("weekly"),
                spent("monthly"),
                spent("yearly")
            ],
            [4, 12, 10, 6, 3, 2]
        );
        assert_eq!(d.len(), h.len());
        assert!(d.windows(2).all(|w| w[0].time >= w[1].time));
        assert!(d[0].keep && d[0].reasons.ends_with(&["newest"]));
        assert!(d.iter().filter(|d| !d.keep).all(|d| d.reasons.is_empty()));
        // The oldest month/year buckets reach back: yearly 2 keeps the newest
        // snapshot of 2023.
        let last_2023 = h
            .iter()
            .filter(|c| c.time.year() == 2023)
            .max_by_key(|c| c.time)
            .unwrap();
        assert!(
            d.iter()
                .any(|d| d.id == last_2023.id && d.reasons.contains(&"yearly"))
        );
    }

    #[test]
    fn same_hour_extras_win_their_bucket() {
        // x1 is 20 minutes after s0077 in the same hour: the newer one is kept.
        let h = history();
        let d = plan(&policy(0, 10_000, 0, 0, 0, 0), &h);
        let keep = |id: &str| d.iter().find(|d| d.id == id).unwrap().keep;
        assert!(keep("x1"));
        assert!(!keep("s0077"));
        assert_eq!(kept(&d).len(), 720);
    }
}
