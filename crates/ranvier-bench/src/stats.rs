//! Summaries of latency samples (percentiles, mean, max) written into a scenario's figures.

use serde_json::{Map, Value, json};

/// Nearest-rank percentile of an ascending slice; `q` in 0..=100.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of unsorted samples.
pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// `x` to four decimals (tenths of a millisecond for durations in seconds, which a sync of a
/// few milliseconds needs).
pub fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Rounds to three decimals so the JSON lines stay readable.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Adds `{prefix}p50_ms`, `p99_ms`, `mean_ms` and `max_ms` for samples in milliseconds.
pub fn add_latency(figures: &mut Map<String, Value>, prefix: &str, samples_ms: &[f64]) {
    let mut v = samples_ms.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    figures.insert(format!("{prefix}p50_ms"), json!(round3(percentile(&v, 50.0))));
    figures.insert(format!("{prefix}p99_ms"), json!(round3(percentile(&v, 99.0))));
    figures.insert(format!("{prefix}mean_ms"), json!(round3(mean)));
    figures.insert(format!("{prefix}max_ms"), json!(round3(v[v.len() - 1])));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
