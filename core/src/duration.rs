//! Durations as users write them: Go's `time.ParseDuration` grammar
//! (`1h30m`, `1.5s`, `500ms`, `-2m`), which Kubernetes' flags, CronJob's
//! `@every` and metrics windows use, and for flags a bare number meaning
//! seconds.

use std::time::Duration;

use jiff::SignedDuration;

/// A duration in Go's grammar: one or more `<number><unit>` with units
/// `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, an optional sign, and `0`.
pub fn parse_go(text: &str) -> Option<SignedDuration> {
    let text = text.trim();
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(SignedDuration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty() || number == "." {
            return None;
        }
        let number: f64 = number.parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        nanos += number * scale;
    }
    if !nanos.is_finite() || nanos > i64::MAX as f64 {
        return None;
    }
    let nanos = nanos as i64;
    Some(SignedDuration::from_nanos(if negative {
        -nanos
    } else {
        nanos
    }))
}

/// A non-negative duration as flags and annotations take it: Go's
/// grammar, or a bare number of seconds (`300`, `0.5`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration like 300s, 500ms or 1h30m");
    let signed = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds < 1e12 => {
            SignedDuration::try_from_secs_f64(seconds).map_err(|_| bad())?
        }
        Ok(_) => return Err(bad()),
        Err(_) => parse_go(text).ok_or_else(bad)?,
    };
    Duration::try_from(signed).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let secs = |t: &str| parse_go(t).map(|d| d.as_secs_f64());
        assert_eq!(secs("1h30m"), Some(5400.0));
        assert_eq!(secs("1.5h"), Some(5400.0));
        assert_eq!(secs("500ms"), Some(0.5));
        assert_eq!(secs("-2m"), Some(-120.0));
        assert_eq!(secs("0"), Some(0.0));
        assert_eq!(secs("10us"), Some(0.00001));
        for bad in ["", "5", "1x", "h", "1h-1m", ".s"] {
            assert_eq!(parse_go(bad), None, "{bad}");
        }
    }

    #[test]
    fn flag_durations() {
        assert_eq!(parse("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(" 2h "), Ok(Duration::from_secs(7200)));
        assert!(parse("-1s").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("soon").unwrap_err().contains("not a duration"));
    }
}
