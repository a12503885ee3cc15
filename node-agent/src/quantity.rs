//! Kubernetes quantities (`150m`, `0.5`, `64Mi`, `1G`) as numbers.

/// A quantity (`150m`, `0.5`, `64Mi`, `1G`) times `scale` (1000 for
/// millicores, 1 for bytes), rounded; `None` when it does not parse.
pub fn parse_quantity(text: &str, scale: f64) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split].parse().ok()?;
    let factor = match &text[split..] {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        _ => return None,
    };
    let value = (number * factor * scale).round();
    (value.is_finite() && (0.0..1e18).contains(&value)).then_some(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_scales() {
        assert_eq!(parse_quantity("150m", 1000.0), Some(150));
        assert_eq!(parse_quantity("0.5", 1000.0), Some(500));
        assert_eq!(parse_quantity("64Mi", 1.0), Some(64 << 20));
        assert_eq!(parse_quantity("1G", 1.0), Some(1_000_000_000));
        assert_eq!(parse_quantity("1x", 1.0), None);
    }
}
