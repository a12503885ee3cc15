//! The query parameters of the agent's requests, read as the kubelet
//! reads them (Go's booleans; 400 for what does not parse, 422 for values
//! out of range).

use super::*;

pub(super) fn parse_query(raw: Option<&str>) -> Result<Vec<(String, String)>, Refusal> {
    serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|_| Refusal::bad_request("Unable to decode query."))
}

/// A boolean query value as Kubernetes reads one (Go's `ParseBool`).
pub(super) fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Some(false),
        _ => None,
    }
}

pub(super) fn last<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(super) fn flag(query: &[(String, String)], key: &str) -> Result<bool, Refusal> {
    match last(query, key) {
        None => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| Refusal::bad_request("Unable to decode query.")),
    }
}

pub(super) fn integer(query: &[(String, String)], key: &str) -> Result<Option<i64>, Refusal> {
    last(query, key)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| Refusal::bad_request("Unable to decode query."))
        })
        .transpose()
}

/// `PodLogOptions`, as far as the agent uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<u64>,
    pub timestamps: bool,
    /// From `sinceSeconds` (before `now`) or `sinceTime`.
    pub since: Option<jiff::Timestamp>,
    pub limit_bytes: Option<u64>,
}

/// Reads and validates the log query as the kubelet does
/// (`ValidatePodLogOptions`: 422 for values out of range).
pub fn log_options(
    query: &[(String, String)],
    now: jiff::Timestamp,
) -> Result<LogOptions, Refusal> {
    let invalid = |field: &str, value: i64, why: &str| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: Invalid value: {value}: {why}"),
        )
    };
    let tail_lines = match integer(query, "tailLines")? {
        Some(n) if n < 0 => {
            return Err(invalid(
                "tailLines",
                n,
                "must be greater than or equal to 0",
            ))
        }
        n => n.map(|n| n as u64),
    };
    let limit_bytes = match integer(query, "limitBytes")? {
        Some(n) if n < 1 => return Err(invalid("limitBytes", n, "must be greater than 0")),
        n => n.map(|n| n as u64),
    };
    let since_seconds = match integer(query, "sinceSeconds")? {
        Some(n) if n < 1 => return Err(invalid("sinceSeconds", n, "must be greater than 0")),
        n => n,
    };
    let since_time = last(query, "sinceTime")
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map_err(|_| Refusal::bad_request("Unable to decode query."))
        })
        .transpose()?;
    let since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            ))
        }
        (Some(seconds), None) => Some(
            now.checked_sub(jiff::SignedDuration::from_secs(seconds))
                .unwrap_or(jiff::Timestamp::MIN),
        ),
        (None, time) => time,
    };
    Ok(LogOptions {
        follow: flag(query, "follow")?,
        previous: flag(query, "previous")?,
        tail_lines,
        timestamps: flag(query, "timestamps")?,
        since,
        limit_bytes,
    })
}
