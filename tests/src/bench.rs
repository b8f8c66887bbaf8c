//! The handover benchmark's report: gap percentiles over repeats, the JSON of
//! `docs/benchmarks.md`, and a table for people.

use std::time::Duration;

use serde::Serialize;

use crate::handover::Outcome;
use crate::scenario::Scenario;
use crate::stats::{percentile, round_to};
use crate::system::{Direction, Transport};

/// p50, p99 and max of the gaps of one run, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GapMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// One row of the report: one system through one scenario, all repeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// `link-down`, `addr-remove`, `blackhole`, `link-return`, `flap`.
    pub scenario: String,
    /// `quic`, `mptcp`, `tcp-resume`.
    pub transport: String,
    /// `roam` or a baseline's name.
    pub system: String,
    /// `up` (the handset sends) or `down` (the server streams to the handset).
    pub direction: String,
    /// What served the session: `roam` (a roam Listener), `stock` (aioquic, socat under
    /// mptcpize) or `baseline` (a baseline's own plain server).
    pub peer: String,
    /// Emulated round-trip time of the paths (0: plain veth).
    pub rtt_ms: f64,
    /// Repeats measured.
    pub repeats: u32,
    /// Gap percentiles over repeats.
    pub gap_ms: GapMs,
    /// Bytes the application produced, all repeats.
    pub bytes_sent: u64,
    /// Bytes delivered in order, all repeats.
    pub bytes_delivered: u64,
    /// Messages damaged, missing or out of order, all repeats.
    pub corrupted: u64,
    /// Repeats whose session died.
    pub session_errors: u32,
}

/// The file `handover-bench --json` writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// One entry per (scenario, system).
    pub runs: Vec<RunReport>,
}

fn round2(x: f64) -> f64 {
    round_to(x, 2)
}

impl RunReport {
    /// Aggregates the repeats of one system through one scenario.
    pub fn from_outcomes(
        scenario: Scenario,
        transport: Transport,
        system: &str,
        (direction, peer): (Direction, &str),
        rtt: Duration,
        outcomes: &[Outcome],
    ) -> Self {
        let mut gaps: Vec<f64> = outcomes
            .iter()
            .map(|o| o.gap.as_secs_f64() * 1000.0)
            .collect();
        gaps.sort_by(f64::total_cmp);
        RunReport {
            scenario: scenario.as_str().to_owned(),
            transport: transport.as_str().to_owned(),
            system: system.to_owned(),
            direction: direction.as_str().to_owned(),
            peer: peer.to_owned(),
            rtt_ms: round2(rtt.as_secs_f64() * 1000.0),
            repeats: outcomes.len() as u32,
            gap_ms: GapMs {
                p50: round2(percentile(&gaps, 50.0)),
                p99: round2(percentile(&gaps, 99.0)),
                max: round2(gaps.last().copied().unwrap_or(0.0)),
            },
            bytes_sent: outcomes.iter().map(Outcome::bytes_sent).sum(),
            bytes_delivered: outcomes.iter().map(Outcome::bytes_delivered).sum(),
            corrupted: outcomes.iter().map(|o| o.corrupted).sum(),
            session_errors: outcomes
                .iter()
                .filter(|o| o.session_error.is_some())
                .count() as u32,
        }
    }
}

/// The report as an aligned text table.
pub fn table(runs: &[RunReport]) -> String {
    let header = [
        "scenario",
        "transport",
        "system",
        "dir",
        "peer",
        "rtt ms",
        "repeats",
        "gap p50",
        "gap p99",
        "gap max",
        "sent",
        "delivered",
        "corrupt",
        "errors",
    ];
    let rows: Vec<[String; 14]> = runs
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.transport.clone(),
                r.system.clone(),
                r.direction.clone(),
                r.peer.clone(),
                format!("{:.0}", r.rtt_ms),
                r.repeats.to_string(),
                format!("{:.1}", r.gap_ms.p50),
                format!("{:.1}", r.gap_ms.p99),
                format!("{:.1}", r.gap_ms.max),
                human_bytes(r.bytes_sent),
                human_bytes(r.bytes_delivered),
                r.corrupted.to_string(),
                format!("{}/{}", r.session_errors, r.repeats),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            // Text columns left, numbers right.
            if i < 5 {
                out.push_str(&format!("{c:<w$}  "));
            } else {
                out.push_str(&format!("{c:>w$}  "));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&header.map(String::from), &mut out);
    line(&width.map(|w| "-".repeat(w)), &mut out);
    for row in &rows {
        line(row, &mut out);
    }
    out.push_str("gaps in ms (p50/p99/max over repeats; a dead session counts as the run's timeout); errors = dead sessions/repeats\n");
    out
}

fn human_bytes(b: u64) -> String {
    if b >= 10_000_000 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else if b >= 10_000 {
        format!("{:.1} kB", b as f64 / 1e3)
    } else {
        format!("{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_documented_shape() {
        let r = Report {
            runs: vec![RunReport {
                scenario: "link-down".into(),
                transport: "quic".into(),
                system: "roam".into(),
                direction: "down".into(),
                peer: "stock".into(),
                rtt_ms: 0.0,
                repeats: 20,
                gap_ms: GapMs {
                    p50: 1.1,
                    p99: 3.0,
                    max: 3.2,
                },
                bytes_sent: 4_000_000,
                bytes_delivered: 4_000_000,
                corrupted: 0,
                session_errors: 0,
            }],
        };
        let got: serde_json::Value = serde_json::to_value(&r).unwrap();
        let want: serde_json::Value = serde_json::from_str(
            r#"{"runs": [{"scenario": "link-down", "transport": "quic", "system": "roam", "direction": "down",
            "peer": "stock", "rtt_ms": 0.0,
            "repeats": 20, "gap_ms": {"p50": 1.1, "p99": 3.0, "max": 3.2},
            "bytes_sent": 4000000, "bytes_delivered": 4000000, "corrupted": 0, "session_errors": 0}]}"#,
        )
        .unwrap();
        assert_eq!(got, want);
    }
}
