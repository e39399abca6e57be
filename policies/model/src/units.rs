//! Durations and sizes as people type them, and as Gantry prints them.
//!
//! Durations accept both the Slurm forms (`90` minutes, `MM:SS`, `HH:MM:SS`, `D-HH`,
//! `D-HH:MM`, `D-HH:MM:SS`) and humantime forms (`30s`, `90m`, `2h30m`). Sizes accept
//! `512M`, `4G`, `1.5T`, `4GiB`; a bare number is MiB, as in Slurm. Inside Gantry durations
//! are milliseconds and sizes MiB.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error(
        "invalid duration {0:?}: use e.g. 30s, 90m, 2h30m, 90 (minutes), 1:30:00 or 1-00:00:00"
    )]
    Duration(String),
    #[error("invalid duration {0:?}: name the unit, e.g. 30s, 2m or 1h")]
    NoUnit(String),
    #[error("invalid size {0:?}: use e.g. 512M, 4G, 1.5T (a bare number is MiB)")]
    Size(String),
    #[error(
        "invalid time {0:?}: use now, now+2h (or +2h), now-7d, or an ISO 8601 UTC time such \
         as 2026-12-01T09:00 or 2026-12-01T09:00:00Z"
    )]
    Time(String),
    #[error(
        "invalid time {0:?}: use now+6h (or +6h), or an ISO 8601 UTC time such as \
         2026-12-01T09:00 or 2026-12-01T09:00:00Z"
    )]
    FutureTime(String),
}

/// Parses a point in time into ms since the epoch: `now`, `now+DURATION`, `+DURATION`,
/// `now-DURATION` (any duration form above), or ISO 8601 in UTC (`2026-12-01`, `2026-12-01T09:00`,
/// `2026-12-01T09:00:00Z`, a space for the `T`). `now_ms` is what `now` means.
pub fn parse_time_ms(text: &str, now_ms: u64) -> Result<u64, UnitError> {
    let s = text.trim();
    let err = || UnitError::Time(text.to_string());
    let relative = s
        .strip_prefix("now")
        .map(str::trim_start)
        .or(Some(s).filter(|s| s.starts_with('+')));
    if let Some(rest) = relative {
        if rest.is_empty() {
            return Ok(now_ms);
        }
        if let Some(back) = rest.strip_prefix('-').filter(|_| s.starts_with("now")) {
            let ms = parse_duration_ms(back.trim()).map_err(|_| err())?;
            return now_ms.checked_sub(ms).ok_or_else(err);
        }
        let delta = rest.strip_prefix('+').ok_or_else(err)?;
        let ms = parse_duration_ms(delta.trim()).map_err(|_| err())?;
        return now_ms.checked_add(ms).ok_or_else(err);
    }
    // humantime wants seconds: complete the shorter ISO forms.
    let full = match s.len() {
        10 => format!("{s}T00:00:00"),
        16 => format!("{s}:00"),
        _ => s.to_string(),
    };
    let at = humantime::parse_rfc3339_weak(&full).map_err(|_| err())?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| err())?
        .as_millis();
    u64::try_from(ms).map_err(|_| err())
}

/// `1 GPU`, `2 GPUs`, `0 GPUs`: a count with its noun agreeing.
pub fn gpus(n: impl Into<u64>) -> String {
    match n.into() {
        1 => "1 GPU".to_string(),
        n => format!("{n} GPUs"),
    }
}

/// As [`parse_time_ms`], for a time that is to come (a deadline, a start): its error
/// suggests only such times.
pub fn parse_future_time_ms(text: &str, now_ms: u64) -> Result<u64, UnitError> {
    parse_time_ms(text, now_ms).map_err(|_| UnitError::FutureTime(text.to_string()))
}

/// Parses a duration into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, UnitError> {
    let s = text.trim();
    let err = || UnitError::Duration(text.to_string());
    if s.is_empty() {
        return Err(err());
    }
    if s.chars().any(|c| c.is_ascii_alphabetic()) {
        let d = humantime::parse_duration(s).map_err(|_| err())?;
        return u64::try_from(d.as_millis()).map_err(|_| err());
    }
    let (days, rest) = match s.split_once('-') {
        Some((d, rest)) => (Some(number(d).ok_or_else(err)?), rest),
        None => (None, s),
    };
    let parts = rest
        .split(':')
        .map(|p| number(p).ok_or_else(err))
        .collect::<Result<Vec<u64>, _>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return Err(err()),
    };
    secs.checked_mul(1000).ok_or_else(err)
}

/// Parses a duration that must name its unit (`30s`, `2m`, `1h30m`): for daemon settings,
/// where Slurm's bare-number-is-minutes rule would turn a typo like `30` into half an hour.
pub fn parse_interval_ms(text: &str) -> Result<u64, UnitError> {
    if !text.chars().any(|c| c.is_ascii_alphabetic()) {
        return Err(UnitError::NoUnit(text.to_string()));
    }
    parse_duration_ms(text)
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Formats milliseconds the way Slurm prints time: `MM:SS`, `H:MM:SS` or `D-HH:MM:SS`.
pub fn format_duration_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Parses a size into MiB. Fractions round up to a whole MiB.
pub fn parse_size_mib(text: &str) -> Result<u64, UnitError> {
    let s = text.trim();
    let err = || UnitError::Size(text.to_string());
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.matches('.').count() > 1 {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let kib_per_unit: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "K" | "KB" | "KIB" => 1.0,
        "" | "M" | "MB" | "MIB" => 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let mib = (value * kib_per_unit / 1024.0).ceil();
    if !mib.is_finite() || mib > 1e15 {
        return Err(err());
    }
    // Safe: finite, non-negative and below 1e15 (checked above).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(mib as u64)
}

/// Formats MiB compactly: `512M`, `4G`, `1.5T`.
pub fn format_size_mib(mib: u64) -> String {
    const G: u64 = 1024;
    const T: u64 = 1024 * 1024;
    let frac = |v: u64, unit: u64, suffix: &str| {
        if v.is_multiple_of(unit) {
            format!("{}{suffix}", v / unit)
        } else {
            format!("{:.1}{suffix}", v as f64 / unit as f64)
        }
    };
    if mib >= T {
        frac(mib, T, "T")
    } else if mib >= G {
        frac(mib, G, "G")
    } else {
        format!("{mib}M")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_documented_form() {
        let cases = [
            ("30s", 30_000),
            ("90m", 5_400_000),
            ("2h30m", 9_000_000),
            ("1-00:00:00", 86_400_000),
            ("90", 5_400_000),
            ("1:30", 90_000),
            ("1:30:00", 5_400_000),
            ("2-12", 216_000_000),
            ("1-01:02", 90_120_000),
            ("0", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in [
            "", "-5", "abc", "1:2:3:4", "1-", "5x", "1.5", "-1-2", "1--2", "12:",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn intervals_need_a_unit() {
        assert_eq!(parse_interval_ms("30s"), Ok(30_000));
        assert_eq!(parse_interval_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_interval_ms("30"), Err(UnitError::NoUnit("30".into())));
        assert!(parse_interval_ms("1:00").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_mib("512M"), Ok(512));
        assert_eq!(parse_size_mib("512"), Ok(512));
        assert_eq!(parse_size_mib("4G"), Ok(4096));
        assert_eq!(parse_size_mib("4GiB"), Ok(4096));
        assert_eq!(parse_size_mib("1.5T"), Ok(1_572_864));
        assert_eq!(parse_size_mib("100K"), Ok(1));
        assert_eq!(parse_size_mib("0"), Ok(0));
        for bad in ["", "G", "-1G", "4X", "1.2.3G", ".5G", "4 G B"] {
            assert!(parse_size_mib(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn times_relative_and_absolute() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time_ms("now", now), Ok(now));
        assert_eq!(parse_time_ms("now+2h", now), Ok(now + 7_200_000));
        assert_eq!(parse_time_ms("now-2h", now), Ok(now - 7_200_000));
        assert!(parse_time_ms("-2h", now).is_err());
        assert_eq!(parse_time_ms("now + 90m", now), Ok(now + 5_400_000));
        assert_eq!(parse_time_ms("+1-00:00:00", now), Ok(now + 86_400_000));
        assert_eq!(parse_time_ms("1970-01-02", now), Ok(86_400_000));
        assert_eq!(parse_time_ms("1970-01-01T01:00", now), Ok(3_600_000));
        assert_eq!(parse_time_ms("1970-01-01 00:00:30Z", now), Ok(30_000));
        for bad in [
            "",
            "tomorrow",
            "now-",
            "now+",
            "+soon",
            "2026-13-01",
            "2026-12-01T25:00",
        ] {
            assert!(parse_time_ms(bad, now).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration_ms(59_000), "0:59");
        assert_eq!(format_duration_ms(3_723_000), "1:02:03");
        assert_eq!(format_duration_ms(90_061_000), "1-01:01:01");
        assert_eq!(format_size_mib(512), "512M");
        assert_eq!(format_size_mib(4096), "4G");
        assert_eq!(format_size_mib(1536), "1.5G");
    }
}
