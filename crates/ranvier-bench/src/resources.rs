//! Server resource probes read from `/proc/PID`: CPU seconds (utime + stime), peak resident
//! memory (`VmHWM`, reset through `clear_refs` before each measured phase) and the resident
//! memory the phase started from (`VmRSS`).

use std::fs;

use serde_json::{Map, Value, json};

use crate::stats::round3;

/// Clock ticks per second used by `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// CPU seconds used so far by the process (all threads), user plus system.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces or parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14 and stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

/// One `Vm*` line of `/proc/PID/status`, in kB.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Resets the peak RSS (`VmHWM`) to the current RSS.
fn reset_peak(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Measures what the server process spends between `start` and `finish`.
pub struct Probe {
    pid: Option<u32>,
    cpu_start: Option<f64>,
    rss_start: Option<u64>,
    peak_reset: bool,
}

impl Probe {
    pub fn start(pid: Option<u32>) -> Self {
        let peak_reset = pid.is_some_and(reset_peak);
        let cpu_start = pid.and_then(cpu_secs);
        let rss_start = pid.and_then(|pid| status_kb(pid, "VmRSS"));
        Self { pid, cpu_start, rss_start, peak_reset }
    }

    /// Adds `server_cpu_secs`, `server_peak_rss_kb` and `server_start_rss_kb` (what the phase
    /// started from: memory that earlier phases left, such as caches) to the figures when known.
    pub fn finish(self, figures: &mut Map<String, Value>) {
        let Some(pid) = self.pid else { return };
        if let (Some(start), Some(end)) = (self.cpu_start, cpu_secs(pid)) {
            figures.insert("server_cpu_secs".into(), json!(round3(end - start)));
        }
        if let Some(peak) = status_kb(pid, "VmHWM") {
            figures.insert("server_peak_rss_kb".into(), json!(peak));
            if !self.peak_reset {
                figures.insert("server_peak_rss_since_start".into(), json!(true));
            }
        }
        if let Some(start) = self.rss_start {
            figures.insert("server_start_rss_kb".into(), json!(start));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_secs(pid).is_some());
        assert!(status_kb(pid, "VmRSS").unwrap() > 0);
    }
}
