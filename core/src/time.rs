//! Timestamps as Kubernetes writes them: RFC 3339 in UTC, whole seconds
//! (`metav1.Time`), or microseconds (`metav1.MicroTime`, leases and
//! events).

use jiff::Timestamp;

/// The current time as a `metav1.Time` (`2026-01-02T03:04:05Z`).
pub fn now() -> String {
    format_time(Timestamp::now())
}

/// The current time, truncated to whole seconds as `metav1.Time` keeps
/// it, for comparisons with stored times.
pub fn now_seconds() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

/// The current time as a `metav1.MicroTime`.
pub fn now_micro() -> String {
    Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A time as a `metav1.Time`.
pub fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An RFC 3339 time; `None` when it is not one.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_in_utc() {
        let t: Timestamp = "2026-03-10T12:00:00.75+01:00".parse().unwrap();
        assert_eq!(format_time(t), "2026-03-10T11:00:00Z");
        assert_eq!(
            parse_time(&format_time(t)).map(|t| t.as_second()),
            Some(t.as_second())
        );
        assert!(now().ends_with('Z') && now().len() == 20);
        assert_eq!(now_micro().len(), 27);
        assert_eq!(now_seconds().subsec_nanosecond(), 0);
    }
}
