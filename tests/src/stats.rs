//! The statistics every bench and timing test reports: nearest-rank percentiles, the median,
//! rounding for reports, milliseconds.

use std::time::Duration;

/// Nearest-rank percentile `p` (0-100) of sorted values; 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match rank(sorted.len(), p) {
        Some(i) => sorted[i],
        None => 0.0,
    }
}

/// Nearest-rank percentile `p` (0-100) of sorted durations; zero for none.
pub fn percentile_duration(sorted: &[Duration], p: f64) -> Duration {
    match rank(sorted.len(), p) {
        Some(i) => sorted[i],
        None => Duration::ZERO,
    }
}

/// The index of the nearest-rank percentile `p` among `n` sorted values.
fn rank(n: usize, p: f64) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let r = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
    Some(r.min(n) - 1)
}

/// The median of sorted values (the mean of the middle two for an even count); 0 for none.
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `v` sorted (total order: NaN last).
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// `x` rounded to `decimals` places, for reports.
pub fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 99.0), 20.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        let d: Vec<Duration> = (1..=4).map(Duration::from_millis).collect();
        assert_eq!(percentile_duration(&d, 50.0), Duration::from_millis(2));
        assert_eq!(percentile_duration(&d, 99.0), Duration::from_millis(4));
        assert_eq!(percentile_duration(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn rounds_and_sorts() {
        assert_eq!(round_to(1.23456, 3), 1.235);
        assert_eq!(round_to(1.25, 1), 1.3);
        assert_eq!(sorted(vec![3.0, 1.0, 2.0]), [1.0, 2.0, 3.0]);
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
