//! Trajectory timestamps: the `%Y-%m-%dT%H:%M:%SZ` strings of `time_list`, parsed by hand into seconds
//! since 1970-01-01 with the proleptic Gregorian calendar (Howard Hinnant's `days_from_civil`), no date
//! crate needed.
//!
//! The reference parses them with `datetime.strptime`, which gives naive datetimes: no time zone is
//! applied, the wall-clock fields are used as written. [`Timestamp`] does the same.

use std::fmt;
use std::str::FromStr;

/// A wall-clock instant with one-second resolution, stored as seconds since 1970-01-01T00:00:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// Calendar fields of a [`Timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    /// Year (proleptic Gregorian).
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
    /// Minute, 0–59.
    pub minute: u32,
    /// Second, 0–59.
    pub second: u32,
}

/// A timestamp string that is not `YYYY-MM-DDTHH:MM:SSZ` or names a date that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {text:?}: {reason} (expected %Y-%m-%dT%H:%M:%SZ, e.g. 2015-11-05T08:00:00Z)")]
pub struct TimestampError {
    /// The text that was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Timestamp {
    /// Builds a timestamp from calendar fields, rejecting dates and times that do not exist.
    pub fn from_civil(c: CivilTime) -> Option<Self> {
        let valid = (1..=12).contains(&c.month)
            && c.day >= 1
            && c.day <= days_in_month(c.year, c.month)
            && c.hour < 24
            && c.minute < 60
            && c.second < 60;
        valid.then(|| {
            let days = days_from_civil(c.year, c.month, c.day);
            Self(days * SECONDS_PER_DAY + i64::from(c.hour * 3600 + c.minute * 60 + c.second))
        })
    }

    /// Parses `%Y-%m-%dT%H:%M:%SZ` like `datetime.strptime`: the year has 4 digits, the other fields
    /// 1 or 2 digits; surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let err = |reason| TimestampError { text: text.to_owned(), reason };
        let s = text.trim();
        let s = s.strip_suffix('Z').ok_or_else(|| err("missing the trailing 'Z'"))?;
        let (date, clock) = s.split_once('T').ok_or_else(|| err("missing the 'T' between date and time"))?;
        let field = |part: Option<&str>, min_digits: usize, max_digits: usize| -> Result<u32, TimestampError> {
            let part = part.ok_or_else(|| err("missing a field"))?;
            if part.len() < min_digits || part.len() > max_digits || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("a field is not a number of the right width"));
            }
            part.parse().map_err(|_| err("a field is not a number"))
        };
        let mut d = date.split('-');
        let (year, month, day) = (field(d.next(), 4, 4)?, field(d.next(), 1, 2)?, field(d.next(), 1, 2)?);
        let mut t = clock.split(':');
        let (hour, minute, second) = (field(t.next(), 1, 2)?, field(t.next(), 1, 2)?, field(t.next(), 1, 2)?);
        if d.next().is_some() || t.next().is_some() {
            return Err(err("too many fields"));
        }
        Self::from_civil(CivilTime { year: i64::from(year), month, day, hour, minute, second })
            .ok_or_else(|| err("no such date or time of day"))
    }

    /// Seconds since 1970-01-01T00:00:00.
    pub fn seconds(self) -> i64 {
        self.0
    }

    /// Calendar fields.
    pub fn civil(self) -> CivilTime {
        let days = self.0.div_euclid(SECONDS_PER_DAY);
        let secs = self.0.rem_euclid(SECONDS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        CivilTime { year, month, day, hour: secs / 3600, minute: secs / 60 % 60, second: secs % 60 }
    }

    /// Seconds since midnight, 0..86400.
    pub fn seconds_of_day(self) -> u32 {
        self.0.rem_euclid(SECONDS_PER_DAY) as u32
    }

    /// Day of the week with Python's numbering: Monday = 0 … Sunday = 6.
    pub fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        ((self.0.div_euclid(SECONDS_PER_DAY) + 3).rem_euclid(7)) as u32
    }

    /// Saturday or Sunday (`weekday() >= 5`), the reference's weekend test.
    pub fn is_weekend(self) -> bool {
        self.weekday() >= 5
    }

    /// HOSER's time-of-day feature `(h·60 + m + s/60) / 1440` in `[0, 1)`, computed in `f64` as the
    /// reference does before its cast to `f32`.
    pub fn day_fraction(self) -> f64 {
        let c = self.civil();
        (f64::from(c.hour) * 60.0 + f64::from(c.minute) + f64::from(c.second) / 60.0) / 1440.0
    }
}

impl fmt::Display for Timestamp {
    /// Formats as `%Y-%m-%dT%H:%M:%SZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.civil();
        write!(f, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", c.year, c.month, c.day, c.hour, c.minute, c.second)
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
