//! Quantities: numbers that carry a unit (`150ms`, `1MB`, `3%`, `-71dBm`).

use std::fmt;

/// What a quantity measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// A duration, held in milliseconds.
    Duration,
    /// A size, held in bytes.
    Size,
    /// A percentage.
    Percent,
    /// A signal strength, in dBm.
    Signal,
}

impl Dim {
    /// The noun used in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Dim::Duration => "duration",
            Dim::Size => "size",
            Dim::Percent => "percentage",
            Dim::Signal => "signal strength",
        }
    }

    /// The units of this dimension, for messages.
    pub fn units(self) -> &'static str {
        match self {
            Dim::Duration => "ms, s or m",
            Dim::Size => "B, kB, MB, GB, KiB, MiB or GiB",
            Dim::Percent => "%",
            Dim::Signal => "dBm",
        }
    }

    /// An example quantity of this dimension, for messages.
    pub fn example(self) -> &'static str {
        match self {
            Dim::Duration => "150ms",
            Dim::Size => "1MB",
            Dim::Percent => "3%",
            Dim::Signal => "-70dBm",
        }
    }
}

/// A unit a number may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Unit {
    Ms,
    S,
    M,
    B,
    KB,
    MB,
    GB,
    KiB,
    MiB,
    GiB,
    Percent,
    DBm,
}

impl Unit {
    const TABLE: [(&'static str, Unit, Dim, f64); 12] = [
        ("ms", Unit::Ms, Dim::Duration, 1.0),
        ("s", Unit::S, Dim::Duration, 1000.0),
        ("m", Unit::M, Dim::Duration, 60_000.0),
        ("B", Unit::B, Dim::Size, 1.0),
        ("kB", Unit::KB, Dim::Size, 1e3),
        ("MB", Unit::MB, Dim::Size, 1e6),
        ("GB", Unit::GB, Dim::Size, 1e9),
        ("KiB", Unit::KiB, Dim::Size, 1024.0),
        ("MiB", Unit::MiB, Dim::Size, 1024.0 * 1024.0),
        ("GiB", Unit::GiB, Dim::Size, 1024.0 * 1024.0 * 1024.0),
        ("%", Unit::Percent, Dim::Percent, 1.0),
        ("dBm", Unit::DBm, Dim::Signal, 1.0),
    ];

    /// Every spelling, for suggestions.
    pub const SPELLINGS: [&'static str; 12] = [
        "ms", "s", "m", "B", "kB", "MB", "GB", "KiB", "MiB", "GiB", "%", "dBm",
    ];

    /// Every spelling, for messages.
    pub const ALL_TEXT: &'static str =
        "ms, s, m (durations); B, kB, MB, GB, KiB, MiB, GiB (sizes); % (loss); dBm (signal)";

    /// The unit spelt `text` (case matters: `MB` is megabytes, `mb` is nothing).
    pub fn parse(text: &str) -> Option<Unit> {
        Self::TABLE
            .iter()
            .find(|(s, ..)| *s == text)
            .map(|(_, u, ..)| *u)
    }

    /// The unit a common wrong spelling means (`sec` is `s`, `mb` is `MB`), for suggestions.
    pub fn alias(text: &str) -> Option<Unit> {
        let unit = match text {
            "sec" | "secs" | "second" | "seconds" => Unit::S,
            "msec" | "msecs" | "millis" | "Ms" | "MS" => Unit::Ms,
            "min" | "mins" | "minute" | "minutes" => Unit::M,
            "b" | "byte" | "bytes" => Unit::B,
            "kb" | "KB" | "Kb" => Unit::KB,
            "mb" | "Mb" => Unit::MB,
            "gb" | "Gb" => Unit::GB,
            "kib" | "KIB" => Unit::KiB,
            "mib" | "MIB" => Unit::MiB,
            "gib" | "GIB" => Unit::GiB,
            "pct" | "percent" => Unit::Percent,
            "dbm" | "DBm" | "dB" | "db" | "DBM" => Unit::DBm,
            _ => return None,
        };
        Some(unit)
    }

    fn row(self) -> (&'static str, Unit, Dim, f64) {
        Self::TABLE
            .iter()
            .copied()
            .find(|(_, u, ..)| *u == self)
            .unwrap_or(("?", self, Dim::Size, 1.0))
    }

    /// What the unit measures.
    pub fn dim(self) -> Dim {
        self.row().2
    }

    /// How many base units (ms, bytes, %, dBm) one of this unit is.
    pub fn scale(self) -> f64 {
        self.row().3
    }

    /// The unit's spelling.
    pub fn as_str(self) -> &'static str {
        self.row().0
    }
}

/// A number with its unit, held in the base unit of its dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    /// The value in base units: milliseconds, bytes, percent or dBm.
    pub value: f64,
    /// The unit it was written in.
    pub unit: Unit,
    /// The text as written (`1MB`), for messages and formatting.
    pub text: String,
}

impl Quantity {
    /// `number` of `unit`, written as `text`.
    pub fn new(number: f64, unit: Unit, text: &str) -> Self {
        Quantity {
            value: number * unit.scale(),
            unit,
            text: text.to_owned(),
        }
    }

    /// What it measures.
    pub fn dim(&self) -> Dim {
        self.unit.dim()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Formats a figure for explanations: whole numbers without decimals, others with up to two.
pub fn figure(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        // Integer formatting: float formatting with a precision takes a slow exact path.
        (value as i64).to_string()
    } else {
        let s = format!("{value:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Formats a byte count the way people read sizes (`0B`, `512kB`, `1.5MB`).
pub fn bytes(value: f64) -> String {
    const STEPS: [(f64, &str); 3] = [(1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    for (scale, unit) in STEPS {
        if value >= scale {
            return format!("{}{unit}", figure(value / scale));
        }
    }
    format!("{}B", figure(value))
}

/// Formats a duration in milliseconds (`850ms`, `12s`, `3m`, `29999ms`): in a larger unit
/// only when it is exact, so a figure just under a threshold never reads as equal to it.
pub fn duration(ms: f64) -> String {
    if ms >= 120_000.0 && (ms / 60_000.0).fract() == 0.0 {
        format!("{}m", figure(ms / 60_000.0))
    } else if ms >= 10_000.0 && (ms / 1000.0).fract() == 0.0 {
        format!("{}s", figure(ms / 1000.0))
    } else {
        format!("{}ms", figure(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(figure(210.0), "210");
        assert_eq!(figure(0.5), "0.5");
        assert_eq!(figure(-71.0), "-71");
        assert_eq!(figure(1.234), "1.23");
        assert_eq!(bytes(0.0), "0B");
        assert_eq!(bytes(1_500_000.0), "1.5MB");
        assert_eq!(bytes(999.0), "999B");
        assert_eq!(duration(850.0), "850ms");
        assert_eq!(duration(12_000.0), "12s");
        assert_eq!(duration(180_000.0), "3m");
        assert_eq!(duration(29_999.0), "29999ms");
    }

    #[test]
    fn every_unit_has_a_row() {
        for s in Unit::SPELLINGS {
            let u = Unit::parse(s).expect(s);
            assert_eq!(u.as_str(), s);
            assert!(u.scale() > 0.0);
        }
        assert_eq!(Unit::parse("mb"), None);
    }
}
