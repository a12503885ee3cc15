//! Cron schedules as Kubernetes reads them (robfig/cron's standard parser):
//! five fields `minute hour day-of-month month day-of-week`, each a list of
//! `*`, values, ranges `a-b` and steps `*/n`, `a-b/n`, `a/n`; month names
//! `jan`..`dec` and weekday names `sun`..`sat` (any case); `?` as `*`; the
//! macros `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily`
//! (`@midnight`), `@hourly` and `@every <duration>`. Day-of-week 7 is Sunday
//! too, as in Vixie cron. When both day fields are restricted a day matches
//! if either does (Vixie cron's OR); when one is `*`, both must.
//!
//! Times are computed in a time zone with exact (absolute) hours and
//! minutes, as robfig does: a time that a DST gap skips does not happen that
//! day, and one in a repeated hour happens twice.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan, Zoned};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("empty spec string")]
    Empty,
    #[error("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")]
    TimeZoneInSchedule,
    #[error("expected exactly 5 fields, found {found}: {spec}")]
    FieldCount { found: usize, spec: String },
    #[error("failed to parse {field} value {value:?}")]
    BadValue { field: &'static str, value: String },
    #[error("{field} value {value} out of range {min}-{max}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },
    #[error("beginning of range ({start}) beyond end of range ({end}): {expr}")]
    ReversedRange { start: u32, end: u32, expr: String },
    #[error("step of range should be a positive number: {0}")]
    ZeroStep(String),
    #[error("unrecognized descriptor: {0}")]
    UnknownDescriptor(String),
    #[error("failed to parse duration {0:?}")]
    BadInterval(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Matching calendar fields.
    Fields(Fields),
    /// `@every d`: d after the previous time, whole seconds.
    Every(SignedDuration),
}

/// One bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    /// Bit 0 is Sunday.
    dow: u64,
    /// The day fields were `*` (or `?`): then the other one decides alone.
    dom_star: bool,
    dow_star: bool,
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
/// Names start at `min`: jan is 1.
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 7 is Sunday as well; folded onto bit 0 after parsing.
const DOW: Bounds = Bounds {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

fn value(text: &str, bounds: &Bounds) -> Result<u32> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = bounds.names.iter().position(|n| *n == lower) {
        return Ok(bounds.min + i as u32);
    }
    let bad = || Error::BadValue {
        field: bounds.name,
        value: text.to_string(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse::<u32>().map_err(|_| bad())
}

/// One comma-separated part: its bits, and whether it was a bare `*`.
fn range(expr: &str, bounds: &Bounds) -> Result<(u64, bool)> {
    let (span, step) = match expr.split_once('/') {
        Some((span, step)) => {
            if step.contains('/') {
                return Err(Error::BadValue {
                    field: bounds.name,
                    value: expr.to_string(),
                });
            }
            (span, Some(step))
        }
        None => (expr, None),
    };
    let (mut start, mut end, mut star) = if span == "*" || span == "?" {
        (bounds.min, bounds.max, true)
    } else {
        match span.split_once('-') {
            Some((a, b)) => (value(a, bounds)?, value(b, bounds)?, false),
            None => {
                let v = value(span, bounds)?;
                (v, v, false)
            }
        }
    };
    if span == "*" && bounds.max == 7 {
        // `*` in day-of-week means 0-6; 7 is only an alias.
        end = 6;
    }
    let step = match step {
        None => 1,
        Some(text) => {
            let step = text.parse::<u32>().map_err(|_| Error::BadValue {
                field: bounds.name,
                value: expr.to_string(),
            })?;
            // "N/step" means "N-max/step".
            if !span.contains('-') && span != "*" && span != "?" {
                end = bounds.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
    };
    for v in [start, end] {
        if v < bounds.min || v > bounds.max {
            return Err(Error::OutOfRange {
                field: bounds.name,
                value: v,
                min: bounds.min,
                max: bounds.max,
            });
        }
    }
    if start > end {
        return Err(Error::ReversedRange {
            start,
            end,
            expr: expr.to_string(),
        });
    }
    if step == 0 {
        return Err(Error::ZeroStep(expr.to_string()));
    }
    let mut bits = 0u64;
    while start <= end {
        bits |= 1 << start;
        start += step;
    }
    Ok((bits, star))
}

fn field(text: &str, bounds: &Bounds) -> Result<(u64, bool)> {
    let mut bits = 0;
    let mut star = false;
    for part in text.split(',') {
        let (b, s) = range(part, bounds)?;
        bits |= b;
        star |= s;
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses a schedule as the Kubernetes API accepts it.
    pub fn parse(spec: &str) -> Result<Schedule> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::Empty);
        }
        if spec.contains("TZ") {
            return Err(Error::TimeZoneInSchedule);
        }
        if let Some(descriptor) = spec.strip_prefix('@') {
            let fields = match descriptor {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => {
                    if let Some(every) = descriptor.strip_prefix("every ") {
                        let d = crate::duration::parse_go(every.trim())
                            .ok_or_else(|| Error::BadInterval(every.to_string()))?;
                        // robfig rounds to whole seconds, at least one.
                        let secs = d.as_secs().max(1);
                        return Ok(Schedule::Every(SignedDuration::from_secs(secs)));
                    }
                    return Err(Error::UnknownDescriptor(spec.to_string()));
                }
            };
            return Schedule::parse(fields);
        }
        let parts: Vec<&str> = spec.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(Error::FieldCount {
                found: parts.len(),
                spec: spec.to_string(),
            });
        }
        let (minute, _) = field(parts[0], &MINUTE)?;
        let (hour, _) = field(parts[1], &HOUR)?;
        let (dom, dom_star) = field(parts[2], &DOM)?;
        let (month, _) = field(parts[3], &MONTH)?;
        let (mut dow, dow_star) = field(parts[4], &DOW)?;
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        Ok(Schedule::Fields(Fields {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        }))
    }

    /// The first time strictly after `after`, as seen in `tz`; none within
    /// five years (`0 0 30 2 *`).
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => {
                let whole = Timestamp::from_second(after.as_second()).ok()?;
                whole.checked_add(*d).ok()
            }
            Schedule::Fields(f) => f.next(after, tz),
        }
    }
}

fn has(bits: u64, v: i8) -> bool {
    (0..64).contains(&v) && bits & (1 << v) != 0
}

impl Fields {
    fn day_matches(&self, t: &Zoned) -> bool {
        let dom = has(self.dom, t.day());
        let dow = has(self.dow, t.weekday().to_sunday_zero_offset());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// robfig's search: walk month, day, hour, minute forward, resetting
    /// the smaller fields when a larger one moves, and start over when a
    /// larger field rolls over. Hours and minutes are exact time.
    fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let minute = after.as_second().div_euclid(60) + 1;
        let mut t = Timestamp::from_second(minute.checked_mul(60)?)
            .ok()?
            .to_zoned(tz.clone());
        let year_limit = t.year() + 5;
        let mut added = false;
        'wrap: loop {
            if t.year() > year_limit {
                return None;
            }
            while !has(self.month, t.month()) {
                if !added {
                    added = true;
                    t = t.date().first_of_month().to_zoned(tz.clone()).ok()?;
                }
                t = t
                    .date()
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .to_zoned(tz.clone())
                    .ok()?;
                if t.month() == 1 {
                    continue 'wrap;
                }
            }
            while !self.day_matches(&t) {
                let month = t.month();
                added = true;
                t = t.date().tomorrow().ok()?.to_zoned(tz.clone()).ok()?;
                if t.month() != month {
                    continue 'wrap;
                }
                if t.year() > year_limit {
                    return None;
                }
            }
            while !has(self.hour, t.hour()) {
                let day = t.date();
                if !added {
                    added = true;
                    t = t.checked_sub(i64::from(t.minute()).minutes()).ok()?;
                }
                t = t.checked_add(1.hour()).ok()?;
                if t.date() != day {
                    continue 'wrap;
                }
            }
            while !has(self.minute, t.minute()) {
                let hour = t.hour();
                added = true;
                t = t.checked_add(1.minute()).ok()?;
                if t.hour() != hour {
                    continue 'wrap;
                }
            }
            return Some(t.timestamp());
        }
    }
}

/// How many start times were missed, roughly (as Kubernetes counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    /// More than 100: a clock or a controller was wrong for long.
    Many,
}

/// The latest schedule time in (`earliest`, `now`], Kubernetes'
/// `mostRecentScheduleTime`: it estimates the number missed from the
/// interval between two runs, so as not to walk decades of minutes.
pub fn most_recent(
    schedule: &Schedule,
    earliest: Timestamp,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<(Option<Timestamp>, Missed), NoInterval> {
    let Some(t1) = schedule.next(earliest, tz) else {
        return Ok((None, Missed::None));
    };
    if now < t1 {
        return Ok((None, Missed::None));
    }
    let Some(t2) = schedule.next(t1, tz) else {
        return Ok((Some(t1), Missed::None));
    };
    if now < t2 {
        return Ok((Some(t1), Missed::None));
    }
    let between = t2.duration_since(t1).as_secs();
    if between < 1 {
        return Err(NoInterval);
    }
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / between + 1;
    let potential = t1
        .checked_add(SignedDuration::from_secs((missed - 2) * between))
        .unwrap_or(t1);
    let mut latest = None;
    let mut t = schedule.next(potential, tz);
    while let Some(at) = t.filter(|at| *at <= now) {
        latest = Some(at);
        t = schedule.next(at, tz);
    }
    let kind = if missed > 100 {
        Missed::Many
    } else if missed > 1 {
        Missed::Few
    } else {
        Missed::None
    };
    Ok((latest, kind))
}

/// Two consecutive runs less than a second apart: the schedule is broken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("time difference between two schedules is less than 1 second")]
pub struct NoInterval;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next_utc(spec: &str, after: &str) -> String {
        Schedule::parse(spec)
            .unwrap()
            .next(at(after), &TimeZone::UTC)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    fn nexts(spec: &str, after: &str, tz: &str, n: usize) -> Vec<String> {
        let tz = TimeZone::get(tz).unwrap();
        let s = Schedule::parse(spec).unwrap();
        let mut t = at(after);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next(t, &tz).unwrap();
            out.push(t.to_zoned(tz.clone()).strftime("%F %T %:z").to_string());
        }
        out
    }

    #[test]
    fn the_guides_examples() {
        assert_eq!(
            next_utc("0 2 * * *", "2026-03-10T05:00:00Z"),
            "2026-03-11T02:00:00Z"
        );
        assert_eq!(
            next_utc("*/15 * * * *", "2026-03-10T05:00:00Z"),
            "2026-03-10T05:15:00Z"
        );
        assert_eq!(
            next_utc("0 */6 * * *", "2026-03-10T05:00:00Z"),
            "2026-03-10T06:00:00Z"
        );
        // 2026-03-10 is a Tuesday; the next Sunday is the 15th.
        assert_eq!(
            next_utc("0 0 * * 0", "2026-03-10T05:00:00Z"),
            "2026-03-15T00:00:00Z"
        );
        assert_eq!(
            next_utc("0 0 1 * *", "2026-03-10T05:00:00Z"),
            "2026-04-01T00:00:00Z"
        );
        // Friday evening: the next weekday 9:00 is Monday.
        assert_eq!(
            next_utc("0 9 * * 1-5", "2026-03-13T18:00:00Z"),
            "2026-03-16T09:00:00Z"
        );
    }

    #[test]
    fn next_is_strictly_after_and_minute_aligned() {
        assert_eq!(
            next_utc("* * * * *", "2026-03-10T05:00:00Z"),
            "2026-03-10T05:01:00Z"
        );
        assert_eq!(
            next_utc("* * * * *", "2026-03-10T05:00:59.9Z"),
            "2026-03-10T05:01:00Z"
        );
        assert_eq!(
            next_utc("30 * * * *", "2026-03-10T05:30:00Z"),
            "2026-03-10T06:30:00Z"
        );
    }

    #[test]
    fn lists_ranges_steps_and_names() {
        assert_eq!(
            nexts("1-5/2 * * * *", "2026-01-01T00:00:00Z", "UTC", 4),
            [
                "2026-01-01 00:01:00 +00:00",
                "2026-01-01 00:03:00 +00:00",
                "2026-01-01 00:05:00 +00:00",
                "2026-01-01 01:01:00 +00:00"
            ]
        );
        // "N/step" runs from N to the end of the range.
        assert_eq!(
            nexts("50/5 * * * *", "2026-01-01T00:00:00Z", "UTC", 3),
            [
                "2026-01-01 00:50:00 +00:00",
                "2026-01-01 00:55:00 +00:00",
                "2026-01-01 01:50:00 +00:00"
            ]
        );
        assert_eq!(
            nexts("0 12 1 JAN,jul *", "2026-02-01T00:00:00Z", "UTC", 2),
            ["2026-07-01 12:00:00 +00:00", "2027-01-01 12:00:00 +00:00"]
        );
        assert_eq!(
            nexts("0 8 * * mon-wed", "2026-03-10T12:00:00Z", "UTC", 3),
            [
                "2026-03-11 08:00:00 +00:00",
                "2026-03-16 08:00:00 +00:00",
                "2026-03-17 08:00:00 +00:00"
            ]
        );
        // 7 is Sunday too.
        assert_eq!(Schedule::parse("0 0 * * 7"), Schedule::parse("0 0 * * 0"));
        assert_eq!(
            next_utc("0 0 * * 5-7", "2026-03-10T00:00:00Z"),
            "2026-03-13T00:00:00Z"
        );
    }

    #[test]
    fn restricted_day_fields_are_ored() {
        // The 13th, or any Friday: Friday the 6th comes first.
        assert_eq!(
            nexts("0 0 13 * fri", "2026-03-01T00:00:00Z", "UTC", 3),
            [
                "2026-03-06 00:00:00 +00:00",
                "2026-03-13 00:00:00 +00:00",
                "2026-03-20 00:00:00 +00:00"
            ]
        );
        // A `*` in one day field leaves the other alone.
        assert_eq!(
            next_utc("0 0 * * fri", "2026-03-01T00:00:00Z"),
            "2026-03-06T00:00:00Z"
        );
        // A step is not a star: */2 days OR Mondays.
        assert_eq!(
            nexts("0 0 */10 * mon", "2026-03-01T00:00:00Z", "UTC", 3),
            [
                "2026-03-02 00:00:00 +00:00",
                "2026-03-09 00:00:00 +00:00",
                "2026-03-11 00:00:00 +00:00"
            ]
        );
    }

    #[test]
    fn macros() {
        assert_eq!(Schedule::parse("@daily"), Schedule::parse("0 0 * * *"));
        assert_eq!(Schedule::parse("@midnight"), Schedule::parse("0 0 * * *"));
        assert_eq!(Schedule::parse("@hourly"), Schedule::parse("0 * * * *"));
        assert_eq!(Schedule::parse("@weekly"), Schedule::parse("0 0 * * 0"));
        assert_eq!(Schedule::parse("@monthly"), Schedule::parse("0 0 1 * *"));
        assert_eq!(Schedule::parse("@yearly"), Schedule::parse("0 0 1 1 *"));
        assert_eq!(Schedule::parse("@annually"), Schedule::parse("0 0 1 1 *"));
        assert_eq!(
            next_utc("@every 1h30m", "2026-03-10T05:00:10.5Z"),
            "2026-03-10T06:30:10Z"
        );
        assert!(matches!(
            Schedule::parse("@fortnightly"),
            Err(Error::UnknownDescriptor(_))
        ));
    }

    #[test]
    fn bad_schedules_are_rejected() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "5-1 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "1/2/3 * * * *",
            "-1 * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            Schedule::parse("TZ=UTC 0 2 * * *"),
            Err(Error::TimeZoneInSchedule)
        );
        assert_eq!(
            Schedule::parse("CRON_TZ=Europe/Paris 0 2 * * *"),
            Err(Error::TimeZoneInSchedule)
        );
    }

    #[test]
    fn impossible_dates_have_no_next_time() {
        assert_eq!(next_utc("0 0 30 2 *", "2026-01-01T00:00:00Z"), "");
        // Leap days come every four years.
        assert_eq!(
            next_utc("0 0 29 2 *", "2026-01-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
    }

    #[test]
    fn time_zones() {
        // 02:00 in Tokyo is 17:00 UTC the day before.
        let tz = TimeZone::get("Asia/Tokyo").unwrap();
        let s = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(
            s.next(at("2026-03-10T00:00:00Z"), &tz).unwrap().to_string(),
            "2026-03-10T17:00:00Z"
        );
    }

    #[test]
    fn dst_gaps_skip_and_repeats_run_twice() {
        // New York springs forward on 2026-03-08 at 02:00: 02:30 does not
        // exist that day.
        assert_eq!(
            nexts("30 2 * * *", "2026-03-07T12:00:00Z", "America/New_York", 2),
            ["2026-03-09 02:30:00 -04:00", "2026-03-10 02:30:00 -04:00"]
        );
        // It falls back on 2026-11-01 at 02:00: 01:30 happens twice.
        assert_eq!(
            nexts("30 1 * * *", "2026-11-01T04:00:00Z", "America/New_York", 3),
            [
                "2026-11-01 01:30:00 -04:00",
                "2026-11-01 01:30:00 -05:00",
                "2026-11-02 01:30:00 -05:00"
            ]
        );
    }

    #[test]
    fn the_most_recent_missed_time() {
        let s = Schedule::parse("*/1 * * * *").unwrap();
        let tz = TimeZone::UTC;
        // Nothing due yet.
        assert_eq!(
            most_recent(
                &s,
                at("2026-01-01T00:00:10Z"),
                at("2026-01-01T00:00:50Z"),
                &tz
            ),
            Ok((None, Missed::None))
        );
        assert_eq!(
            most_recent(
                &s,
                at("2026-01-01T00:00:10Z"),
                at("2026-01-01T00:01:05Z"),
                &tz
            ),
            Ok((Some(at("2026-01-01T00:01:00Z")), Missed::None))
        );
        assert_eq!(
            most_recent(
                &s,
                at("2026-01-01T00:00:10Z"),
                at("2026-01-01T00:10:30Z"),
                &tz
            ),
            Ok((Some(at("2026-01-01T00:10:00Z")), Missed::Few))
        );
        assert_eq!(
            most_recent(
                &s,
                at("2026-01-01T00:00:10Z"),
                at("2026-01-02T00:00:30Z"),
                &tz
            ),
            Ok((Some(at("2026-01-02T00:00:00Z")), Missed::Many))
        );
        // An irregular schedule: the estimate must not skip the latest.
        let s = Schedule::parse("30 6-16/4 * * 1-5").unwrap();
        assert_eq!(
            most_recent(
                &s,
                at("2026-03-02T00:00:00Z"),
                at("2026-03-06T15:00:00Z"),
                &tz
            )
            .unwrap()
            .0,
            Some(at("2026-03-06T14:30:00Z"))
        );
    }
}
