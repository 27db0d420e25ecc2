//! Human-friendly sizes (`64MiB`) and durations (`500ms`) for limits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A size in bytes, written as `65536`, `64KiB`, `64MiB`, `1GiB` (or the
/// decimal `KB`/`MB`/`GB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid size `{s}`: expected a number such as 64MiB"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            other => {
                return Err(format!(
                    "invalid size `{s}`: unknown unit `{other}` (use KiB, MiB or GiB)"
                ));
            }
        };
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size `{s}`: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (scale, unit) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
            if n >= scale && n.is_multiple_of(scale) {
                return write!(f, "{}{unit}", n / scale);
            }
        }
        if n >= 1 << 20 {
            return write!(f, "{:.1}MiB", n as f64 / (1 << 20) as f64);
        }
        write!(f, "{n}B")
    }
}

/// Reads a string such as `"64MiB"` or an integer number of bytes.
impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size `{n}`: must not be negative")))
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// A duration, written as `2s`, `500ms`, `1.5s`, `2m` or `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("invalid duration `{s}`: expected a number with a unit such as 2s or 500ms")
        })?;
        let secs = match unit {
            "ms" => value / 1_000.0,
            "s" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3_600.0,
            "" => {
                return Err(format!(
                    "invalid duration `{s}`: missing unit (ms, s, m or h)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration `{s}`: unknown unit `{other}` (use ms, s, m or h)"
                ));
            }
        };
        // Only too large a number fails here: the text has no sign.
        let duration = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
        if duration.is_zero() {
            return Err(format!("invalid duration `{s}`: must be greater than zero"));
        }
        if duration > HumanDuration::MAX.0 {
            return Err(format!(
                "invalid duration `{s}`: at most {} (a year)",
                HumanDuration::MAX
            ));
        }
        Ok(HumanDuration(duration))
    }
}

impl HumanDuration {
    /// The longest duration written anywhere: a year. Longer ones would
    /// overflow the clock arithmetic deadlines and idle times are made of.
    pub const MAX: HumanDuration = HumanDuration(Duration::from_secs(365 * 24 * 3600));
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// Reads a string such as `"30s"` or `"500ms"`.
impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// The proleptic Gregorian (year, month, day) of `days` after 1970-01-01
/// (Howard Hinnant's algorithm): for log timestamps and database dates.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        for (text, bytes, shown) in [
            ("65536", 65536, "64KiB"),
            ("64MiB", 64 << 20, "64MiB"),
            ("64M", 64 << 20, "64MiB"),
            ("1GiB", 1 << 30, "1GiB"),
            ("512kib", 512 << 10, "512KiB"),
            ("10MB", 10_000_000, "9.5MiB"),
            ("100", 100, "100B"),
        ] {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!(size.0, bytes, "{text}");
            assert_eq!(size.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn bad_sizes_name_the_problem() {
        assert!(
            "64XB"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("unknown unit `xb`")
        );
        assert!(
            "MiB"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(
            "99999999999GiB"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn durations_parse_and_print() {
        for (text, ms, shown) in [
            ("2s", 2000, "2s"),
            ("500ms", 500, "500ms"),
            ("1.5s", 1500, "1500ms"),
            ("2m", 120_000, "120s"),
        ] {
            let d: HumanDuration = text.parse().unwrap();
            assert_eq!(d.0.as_millis(), ms, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
        }
        assert!(
            "2".parse::<HumanDuration>()
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            "0s".parse::<HumanDuration>()
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!("3 days".parse::<HumanDuration>().is_err());
        // Deadlines are made by adding these to the clock: a year at most.
        assert_eq!("8760h".parse(), Ok(HumanDuration::MAX));
        for long in [
            "8761h",
            "10000000000000000000s",
            "9999999999999999999999999h",
        ] {
            assert_eq!(
                long.parse::<HumanDuration>(),
                Err(format!(
                    "invalid duration `{long}`: at most 31536000s (a year)"
                )),
            );
        }
    }
}
