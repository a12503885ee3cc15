//! Small helpers over objects as JSON values: metadata access, timestamps,
//! generated names and uids.

use rand::Rng;
use serde_json::{Map, Value};

pub use shoal_core::time::{format_time, now, parse_time};

/// A random version-4 UUID.
pub fn uid() -> String {
    let mut bytes: [u8; 16] = rand::thread_rng().gen();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Five characters from the alphabet Kubernetes uses for `generateName`
/// (no vowels, no look-alikes).
pub fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `metadata`, created if missing (or not an object).
pub fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    let meta = as_object(object)
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    as_object(meta)
}

pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

pub fn name(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or_default()
}

pub fn namespace(object: &Value) -> Option<&str> {
    meta_str(object, "namespace")
}

pub use shoal_core::json::{as_object, set_path};

/// Sets a field only when it is missing or null.
pub fn default_path(object: &mut Value, path: &[&str], value: Value) {
    let mut current = &*object;
    for part in path {
        match current.get(part) {
            Some(next) => current = next,
            None => return set_path(object, path, value),
        }
    }
    if current.is_null() {
        set_path(object, path, value);
    }
}

/// Human durations as Kubernetes prints ages: `45s`, `3m20s`, `5h`, `2d3h`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of a timestamp as `kubectl get` prints it.
pub fn age(timestamp: Option<&str>) -> String {
    match timestamp.and_then(parse_time) {
        Some(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(51 * 3600), "2d3h");
        assert_eq!(human_duration(400 * 86400), "400d");
    }

    #[test]
    fn uids_are_version_4() {
        let u = uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn defaults_fill_only_missing_fields() {
        let mut v = json!({"spec": {"replicas": 3}});
        default_path(&mut v, &["spec", "replicas"], json!(1));
        default_path(
            &mut v,
            &["spec", "strategy", "type"],
            json!("RollingUpdate"),
        );
        assert_eq!(
            v,
            json!({"spec": {"replicas": 3, "strategy": {"type": "RollingUpdate"}}})
        );
        assert_eq!(
            format_time(parse_time("2026-01-02T03:04:05Z").unwrap()),
            "2026-01-02T03:04:05Z"
        );
    }
}
