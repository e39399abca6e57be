//! The plots `--out` receives, one line per profile: utilization over time, queue length
//! over time and the JCT CDF. SVG, so they need no system fonts and diff as text.

use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::engine::{Run, Sample};
use crate::metrics::Metrics;

/// Points per line: a week of samples averaged into this many windows still shows every
/// burst a reader can see at this size, and keeps a whole-trace SVG small.
const POINTS: usize = 600;
const SIZE: (u32, u32) = (900, 500);
const HOUR_MS: f64 = 3_600_000.0;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {file}: {why}")]
pub struct PlotError {
    file: String,
    why: String,
}

/// Writes `utilization.svg`, `queue.svg` and `jct_cdf.svg` into `dir`.
pub fn write_plots(dir: &Path, runs: &[(Run, Metrics)]) -> Result<(), PlotError> {
    let series = |value: fn(&Sample) -> f64, scale: fn(&Run) -> f64| -> Vec<Line> {
        runs.iter()
            .map(|(run, m)| Line {
                name: m.profile.clone(),
                points: windowed(&run.samples, |s| value(s) / scale(run)),
            })
            .collect()
    };
    let utilization = series(
        |s| s.busy_gpus as f64,
        |run| run.capacity_gpus.max(1) as f64,
    );
    draw(
        &dir.join("utilization.svg"),
        "GPU utilization over time",
        "hours from the start of the trace",
        "busy GPUs / capacity",
        &utilization,
        Scale::Linear,
    )?;
    let queue = series(|s| s.queued as f64, |_| 1.0);
    draw(
        &dir.join("queue.svg"),
        "Jobs waiting over time",
        "hours from the start of the trace",
        "queued jobs",
        &queue,
        Scale::Linear,
    )?;
    let cdf: Vec<Line> = runs
        .iter()
        .map(|(run, m)| Line {
            name: m.profile.clone(),
            points: jct_cdf(run),
        })
        .collect();
    draw(
        &dir.join("jct_cdf.svg"),
        "Job completion time, CDF",
        "JCT (hours, log scale)",
        "share of jobs",
        &cdf,
        Scale::LogX,
    )
}

struct Line {
    name: String,
    points: Vec<(f64, f64)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    LogX,
}

/// Time-weighted means of `value` over `POINTS` equal windows (each sample holds until the
/// next), at the window's middle, in hours.
fn windowed(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Vec::new();
    };
    let span = (last.at_ms - first.at_ms).max(1) as f64;
    let width = span / POINTS as f64;
    let mut sums = vec![(0.0, 0.0); POINTS];
    for pair in samples.windows(2) {
        let (s, next) = (&pair[0], &pair[1]);
        // Split the sample's interval across the windows it covers.
        let (mut from, to) = (
            (s.at_ms - first.at_ms) as f64,
            (next.at_ms - first.at_ms) as f64,
        );
        while from < to {
            let w = ((from / width) as usize).min(POINTS - 1);
            let edge = if w == POINTS - 1 {
                to
            } else {
                ((w + 1) as f64 * width).min(to)
            };
            let dt = (edge - from).max(0.0);
            sums[w].0 += value(s) * dt;
            sums[w].1 += dt;
            if edge <= from {
                break;
            }
            from = edge;
        }
    }
    sums.iter()
        .enumerate()
        .filter(|(_, (_, dt))| *dt > 0.0)
        .map(|(w, (sum, dt))| {
            let mid = first.at_ms as f64 + (w as f64 + 0.5) * width;
            (mid / HOUR_MS, sum / dt)
        })
        .collect()
}

/// (JCT in hours, share of jobs done by then), at most `POINTS` steps.
fn jct_cdf(run: &Run) -> Vec<(f64, f64)> {
    let mut jct: Vec<u64> = run.jobs.iter().map(|j| j.end_ms - j.submit_ms).collect();
    jct.sort_unstable();
    let n = jct.len();
    let step = n.div_ceil(POINTS).max(1);
    let mut points: Vec<(f64, f64)> = (step - 1..n)
        .step_by(step)
        .map(|i| (jct[i].max(1) as f64 / HOUR_MS, (i + 1) as f64 / n as f64))
        .collect();
    if let Some(&last) = jct.last()
        && points.last().is_none_or(|p| p.1 < 1.0)
    {
        points.push((last.max(1) as f64 / HOUR_MS, 1.0));
    }
    points
}

fn draw(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
    scale: Scale,
) -> Result<(), PlotError> {
    let fail = |why: String| PlotError {
        file: path.display().to_string(),
        why,
    };
    let points = lines.iter().flat_map(|l| &l.points);
    let x_max = points.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-3);
    let x_min = points.clone().map(|p| p.0).fold(x_max, f64::min);
    let y_max = points.map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.05;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root);
    chart
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let labels = |s| Labels {
        x: x_label,
        y: y_label,
        legend: s,
    };
    match scale {
        Scale::Linear => {
            let chart = chart
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)
                .map_err(|e| fail(e.to_string()))?;
            draw_lines(chart, lines, labels(SeriesLabelPosition::UpperRight))
        }
        Scale::LogX => {
            let chart = chart
                .build_cartesian_2d((x_min.max(1e-3)..x_max).log_scale(), 0.0..y_max)
                .map_err(|e| fail(e.to_string()))?;
            draw_lines(chart, lines, labels(SeriesLabelPosition::LowerRight))
        }
    }
    .map_err(fail)?;
    root.present().map_err(|e| fail(e.to_string()))
}

struct Labels<'a> {
    x: &'a str,
    y: &'a str,
    legend: SeriesLabelPosition,
}

/// The mesh, one line per profile and the legend, for either kind of x axis.
fn draw_lines<'a, X>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    lines: &[Line],
    labels: Labels<'_>,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(labels.x)
        .y_desc(labels.y)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, line) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), &color))
            .map_err(|e| e.to_string())?
            .label(line.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(labels.legend)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, busy_gpus: u64) -> Sample {
        Sample {
            at_ms,
            busy_gpus,
            queued: 0,
            fragmented_gpus: 0,
            free_gpus: 0,
        }
    }

    #[test]
    fn windows_average_each_sample_over_the_time_it_holds() {
        // 4 busy for the first quarter, 0 after: the first quarter of the windows read 4,
        // the rest 0, and the whole mean is 1.
        let span = POINTS as u64 * 1000;
        let points = windowed(&[sample(0, 4), sample(span / 4, 0), sample(span, 0)], |s| {
            s.busy_gpus as f64
        });
        assert_eq!(points.len(), POINTS);
        assert!(points[..POINTS / 4].iter().all(|p| p.1 == 4.0));
        assert!(points[POINTS / 4..].iter().all(|p| p.1 == 0.0));
        let mean: f64 = points.iter().map(|p| p.1).sum::<f64>() / POINTS as f64;
        assert_eq!(mean, 1.0);
        // A sample straddling a window edge splits its value between the two.
        let points = windowed(&[sample(0, 0), sample(500, 2), sample(span, 2)], |s| {
            s.busy_gpus as f64
        });
        assert_eq!(points[0].1, 1.0);
        assert_eq!(points[1].1, 2.0);
    }
}
