//! Resource quantities (`250m`, `1.5`, `64Mi`, `1G`, `1e9`) exactly as
//! Kubernetes' `resource.Quantity` reads them: a decimal number with an
//! optional sign, then a binary suffix (`Ki`..`Ei`), a decimal one
//! (`n`, `u`, `m`, `k`, `M`..`E`) or an exponent (`e3`, `E-2`). Kept as
//! an exact fraction, so `Value()` and `MilliValue()` round as Kubernetes
//! does (up), and turned into a float only where arithmetic wants one.

/// A quantity as an exact fraction `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    num: i128,
    den: i128,
}

impl Amount {
    pub const ZERO: Amount = Amount { num: 0, den: 1 };
    pub const ONE: Amount = Amount { num: 1, den: 1 };

    pub fn from_units(units: u64) -> Self {
        Amount {
            num: i128::from(units),
            den: 1,
        }
    }

    pub fn from_milli(milli: u64) -> Self {
        Amount {
            num: i128::from(milli),
            den: 1000,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.num == 0
    }

    pub fn is_negative(&self) -> bool {
        self.num < 0
    }

    /// The value rounded up to a whole unit (`Quantity.Value()`).
    pub fn value(&self) -> i128 {
        ceil_div(self.num, self.den)
    }

    /// Thousandths, rounded up (`Quantity.MilliValue()`).
    pub fn milli_value(&self) -> i128 {
        ceil_div(self.num.saturating_mul(1000), self.den)
    }

    /// The value as a float, for the scheduler's and the autoscaler's
    /// arithmetic.
    pub fn as_f64(&self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

/// `a / b` rounded towards positive infinity; `a` when `b` is zero.
pub fn ceil_div(a: i128, b: i128) -> i128 {
    if b == 0 {
        return a;
    }
    let q = a / b;
    if a % b != 0 && ((a > 0) == (b > 0)) {
        q + 1
    } else {
        q
    }
}

/// Parses a quantity; `None` when it is not one (or too large to hold).
pub fn parse(text: &str) -> Option<Amount> {
    let text = text.trim();
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let split = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.len() > 18 || whole.len() > 30 {
        return None;
    }
    let digits = format!("{whole}{frac}");
    let mut num: i128 = digits.parse().ok()?;
    let mut den: i128 = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let (binary, exponent): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (1, 0),
        "Mi" => (2, 0),
        "Gi" => (3, 0),
        "Ti" => (4, 0),
        "Pi" => (5, 0),
        "Ei" => (6, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        s if s.starts_with(['e', 'E']) => (0, s[1..].parse().ok()?),
        _ => return None,
    };
    num = num.checked_mul(1024i128.checked_pow(binary)?)?;
    if exponent >= 0 {
        num = num.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?;
    } else {
        den = den.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?;
    }
    if negative {
        num = -num;
    }
    Some(Amount { num, den })
}

/// A quantity in base units (cores, bytes, pods) as a float.
pub fn parse_f64(text: &str) -> Option<f64> {
    parse(text).map(|a| a.as_f64())
}

/// A non-negative quantity times `scale` (1000 for millicores, 1 for
/// bytes), rounded up, as a count; `None` when it does not parse or is
/// negative.
pub fn parse_scaled(text: &str, scale: u64) -> Option<u64> {
    let amount = parse(text)?;
    if amount.is_negative() {
        return None;
    }
    let scaled = ceil_div(amount.num.checked_mul(i128::from(scale))?, amount.den);
    u64::try_from(scaled).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_up_as_kubernetes() {
        let milli = |s: &str| parse(s).unwrap().milli_value();
        let value = |s: &str| parse(s).unwrap().value();
        assert_eq!(milli("250m"), 250);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("100u"), 1);
        assert_eq!(value("64Mi"), 64 << 20);
        assert_eq!(value("1G"), 1_000_000_000);
        assert_eq!(value("1e3"), 1000);
        assert_eq!(value("1e9"), 1_000_000_000);
        assert_eq!(value("1E9"), 1_000_000_000);
        assert_eq!(value("1.5Ki"), 1536);
        assert_eq!(value("500m"), 1);
        assert_eq!(value("-1"), -1);
        assert_eq!(milli("5n"), 1);
    }

    #[test]
    fn not_quantities() {
        for text in ["1.2.3", "12Q", "", ".", "1e", "Mi", "1 Mi", "1e400"] {
            assert!(parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn floats_and_scaled_counts() {
        assert_eq!(parse_f64("250m"), Some(0.25));
        assert_eq!(parse_f64("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_f64("1e-3"), Some(0.001));
        assert_eq!(parse_scaled("150m", 1000), Some(150));
        assert_eq!(parse_scaled("0.5", 1000), Some(500));
        assert_eq!(parse_scaled("1e9", 1), Some(1_000_000_000));
        assert_eq!(parse_scaled("1Gi", 1), Some(1 << 30));
        assert_eq!(parse_scaled("-1", 1), None);
        assert_eq!(parse_scaled("x", 1), None);
    }
}
