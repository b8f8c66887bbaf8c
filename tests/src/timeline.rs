//! What happened on each interface around a failure: server-side counters sampled during a run,
//! and the SVG picture of them next to the application's own delivery.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::netlink::Rtnl;
use crate::topology::Topology;
use crate::traffic::MSG_LEN;

/// Received-byte counters of the server side of every path at one instant.
#[derive(Debug, Clone)]
pub struct LinkSample {
    /// When the counters were read.
    pub at: Instant,
    /// `rx_bytes` per link, in the topology's link order.
    pub rx_bytes: Vec<u64>,
}

/// Reads the server's interface counters on a thread inside the server namespace.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Vec<LinkSample>>>>,
}

impl Sampler {
    /// Samples every `every` until [`Sampler::finish`], at most for `limit`.
    pub fn start(topo: &Topology, every: Duration, limit: Duration) -> Result<Self> {
        let devs: Vec<String> = topo.links().iter().map(|l| l.server_dev.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = topo.server().spawn("link-sampler", move || {
            let mut rtnl = Rtnl::open()?;
            let start = Instant::now();
            let mut out = Vec::new();
            while !st.load(Ordering::Relaxed) && start.elapsed() < limit {
                let links = rtnl.links()?;
                let rx_bytes = devs
                    .iter()
                    .map(|d| {
                        links
                            .iter()
                            .find(|l| &l.name == d)
                            .and_then(|l| l.stats)
                            .map(|s| s.rx_bytes)
                            .unwrap_or(0)
                    })
                    .collect();
                out.push(LinkSample {
                    at: Instant::now(),
                    rx_bytes,
                });
                // Sampling pace: the picture's resolution.
                std::thread::sleep(every);
            }
            Ok(out)
        })?;
        Ok(Sampler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops sampling and returns the samples (none if the sampler failed).
    pub fn finish(mut self) -> Vec<LinkSample> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(v))) => v,
            Some(Ok(Err(e))) => {
                tracing::warn!(error = %e, "link sampler failed");
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One panel of the picture: one run of one system.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title line (system, scenario, gap).
    pub title: String,
    /// Interface names, in sample order.
    pub links: Vec<String>,
    /// Server-side counters over the run.
    pub samples: Vec<LinkSample>,
    /// Arrival times of delivered messages.
    pub arrivals: Vec<Instant>,
    /// The failure: time zero of the picture.
    pub origin: Instant,
    /// Later events worth a line (the link returning), with their legend label.
    pub marks: Vec<(Instant, String)>,
}

/// Width of a bin of the throughput lines.
const BIN: Duration = Duration::from_millis(10);

fn ms_since(origin: Instant, t: Instant) -> f64 {
    if t >= origin {
        (t - origin).as_secs_f64() * 1000.0
    } else {
        -(origin - t).as_secs_f64() * 1000.0
    }
}

impl Panel {
    /// Mbit/s received on each interface, over steps of at least [`BIN`], as (ms since the
    /// failure, rate).
    fn link_series(&self) -> Vec<Vec<(f64, f64)>> {
        let mut steps: Vec<(&LinkSample, &LinkSample)> = Vec::new();
        let mut last: Option<&LinkSample> = None;
        for s in &self.samples {
            match last {
                None => last = Some(s),
                Some(l) if s.at - l.at >= BIN => {
                    steps.push((l, s));
                    last = Some(s);
                }
                Some(_) => {}
            }
        }
        (0..self.links.len())
            .map(|i| {
                steps
                    .iter()
                    .filter_map(|(a, b)| {
                        let dt = (b.at - a.at).as_secs_f64();
                        let db = b.rx_bytes.get(i)?.saturating_sub(*a.rx_bytes.get(i)?);
                        Some((ms_since(self.origin, b.at), db as f64 * 8.0 / dt / 1e6))
                    })
                    .collect()
            })
            .collect()
    }

    /// Mbit/s the application received, in [`BIN`]-wide bins.
    fn delivery_series(&self, from_ms: f64, to_ms: f64) -> Vec<(f64, f64)> {
        let bin_ms = BIN.as_secs_f64() * 1000.0;
        let n = ((to_ms - from_ms) / bin_ms).ceil().max(1.0) as usize;
        let mut bins = vec![0u64; n];
        for t in &self.arrivals {
            let x = ms_since(self.origin, *t);
            if x >= from_ms && x < to_ms {
                bins[((x - from_ms) / bin_ms) as usize % n] += 1;
            }
        }
        bins.iter()
            .enumerate()
            .map(|(i, c)| {
                let x = from_ms + (i as f64 + 0.5) * bin_ms;
                (
                    x,
                    *c as f64 * MSG_LEN as f64 * 8.0 / BIN.as_secs_f64() / 1e6,
                )
            })
            .collect()
    }
}

/// Width in pixels of the legend's column, right of each panel's plot.
const LEGEND_WIDTH: i32 = 250;

/// The legend of one panel in its own column: a short line in each series' colour and width,
/// then its label.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(RGBColor, u32, String)],
) -> Result<()> {
    // Level with the top of the plot, below the caption.
    let top = 45;
    for (i, (color, width, label)) in entries.iter().enumerate() {
        let y = top + 20 * i as i32;
        area.draw(&PathElement::new(
            vec![(5, y), (30, y)],
            color.stroke_width(*width),
        ))
        .map_err(|e| anyhow!("{e}"))?;
        area.draw(&Text::new(
            label.clone(),
            (36, y - 7),
            ("sans-serif", 13).into_font(),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

/// Draws one panel per run, stacked, into an SVG file at `path`.
pub fn write_svg(path: &Path, panels: &[Panel], from_ms: f64, to_ms: f64) -> Result<()> {
    if panels.is_empty() {
        return Err(anyhow!("nothing to draw"));
    }
    let height = 260 * panels.len() as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len(), 1));
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];
    for (panel, area) in panels.iter().zip(areas.iter()) {
        // The legend has a column of its own to the right of the plot, so it hides no data
        // whatever the lines do.
        let width = area.dim_in_pixel().0 as i32;
        let (plot, legend) = area.split_horizontally(width - LEGEND_WIDTH);
        let mut entries: Vec<(RGBColor, u32, String)> = Vec::new();
        let links = panel.link_series();
        let delivery = panel.delivery_series(from_ms, to_ms);
        // A backlog flushing after a stall spikes far above the steady rate; the scale follows
        // the steady rate and spikes are clipped, so the pause stays visible.
        let mut busy: Vec<f64> = delivery
            .iter()
            .map(|(_, y)| *y)
            .filter(|y| *y > 0.0)
            .collect();
        busy.sort_by(f64::total_cmp);
        let steady = busy.get(busy.len() / 2).copied().unwrap_or(1.0);
        let ymax = (steady * 4.0).max(1.0);
        let clip = |v: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
            v.into_iter()
                .filter(|(x, _)| *x >= from_ms && *x <= to_ms)
                .map(|(x, y)| (x, y.min(ymax)))
                .collect()
        };
        let links: Vec<_> = links.into_iter().map(clip).collect();
        let delivery = clip(delivery);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(from_ms..to_ms, 0.0..ymax)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("ms since the failure")
            .y_desc("Mbit/s (bursts clipped)")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, series) in links.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?;
            entries.push((
                color,
                2,
                format!("{} (server side, all bytes)", panel.links[i]),
            ));
        }
        chart
            .draw_series(LineSeries::new(delivery, BLACK.stroke_width(1)))
            .map_err(|e| anyhow!("{e}"))?;
        entries.push((BLACK, 1, "delivered to the app (messages)".into()));
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (0.0, ymax)],
                RED.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?;
        entries.push((RED, 2, "failure".into()));
        for (at, label) in &panel.marks {
            let x = ms_since(panel.origin, *at);
            chart
                .draw_series(LineSeries::new(
                    vec![(x, 0.0), (x, ymax)],
                    GREEN.stroke_width(2),
                ))
                .map_err(|e| anyhow!("{e}"))?;
            entries.push((GREEN, 2, label.clone()));
        }
        draw_legend(&legend, &entries)?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
