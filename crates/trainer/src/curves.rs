//! `curves.png`: a run's training curves, redrawn from `training.jsonl` at each validation and
//! at the end of the run.
//!
//! [`series`] turns the event log into the curves the run kept ([`Curves`]): the training loss
//! per optimizer step with its trailing [`MOVING_AVERAGE_WINDOW`]-step moving average, the
//! learning rate, every validation metric, the best point of the selection metric, and the
//! events worth a marker (early stopping, spike-guard aborts, out-of-memory retries, non-finite
//! steps, signals, resumes). [`plot`] draws them as one [`CURVES_SIZE`] PNG of stacked panels;
//! [`write_curves`] does both, replacing the image atomically (a crash never leaves a torn PNG).
//!
//! A resumed run appends to `training.jsonl`, so steps run after the checkpoint it resumed from
//! appear twice: once from the process that crashed and once re-run. A `resume` event at step
//! `S` drops every step, validation and marker after `S`; among what remains, the last
//! occurrence of a step wins. A `run_start` starts the curves afresh.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use schedulers::plotting::{DrawError, FONT_FAMILY, PngError, draw_rgb, write_rgb_png};
use serde_json::Value;
use tune::report::format_significant;

use crate::telemetry::{Event, ReadEventsError, read_events};

/// File name of the curves image, next to `training.jsonl`.
pub const CURVES_FILE: &str = "curves.png";

/// Size in pixels (width, height) of `curves.png`.
pub const CURVES_SIZE: (u32, u32) = (1600, 1800);

/// Steps in the trailing moving average of the training loss.
pub const MOVING_AVERAGE_WINDOW: usize = 50;

/// Values spanning more than this factor (all positive) are drawn on a log axis.
const LOG_RATIO: f64 = 100.0;

/// Line colours of a metric panel: the metric, then its `ema_` / `swa_` variants (red is kept
/// for the best point).
const METRIC_COLOURS: [RGBColor; 4] =
    [RGBColor(10, 50, 160), RGBColor(20, 140, 60), RGBColor(130, 60, 180), RGBColor(150, 100, 20)];

/// Points of one line above which it is thinned for drawing (to a min and a max per bucket).
const MAX_DRAWN_POINTS: usize = 4000;

/// An event drawn as a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MarkerKind {
    /// The run resumed from a checkpoint of this step (`resume`).
    Resume,
    /// Early stopping asked the run to stop (`early_stop`).
    EarlyStop,
    /// The spike guard aborted the run (`spike_abort`).
    SpikeAbort,
    /// Out of memory at this step; the step was retried lower on the ladder (`oom`).
    Oom,
    /// A non-finite loss or gradient; the update was not applied (`anomaly`).
    Anomaly,
    /// SIGINT / SIGTERM stopped the run after this step (`interrupted`).
    Interrupted,
}

impl MarkerKind {
    /// The `event` name of `training.jsonl` this marker comes from.
    pub fn event(self) -> &'static str {
        match self {
            Self::Resume => "resume",
            Self::EarlyStop => "early_stop",
            Self::SpikeAbort => "spike_abort",
            Self::Oom => "oom",
            Self::Anomaly => "anomaly",
            Self::Interrupted => "interrupted",
        }
    }

    /// The marker for an event name, if it has one.
    pub fn from_event(name: &str) -> Option<Self> {
        [Self::Resume, Self::EarlyStop, Self::SpikeAbort, Self::Oom, Self::Anomaly, Self::Interrupted]
            .into_iter()
            .find(|k| k.event() == name)
    }

    /// The legend's words.
    pub fn label(self) -> &'static str {
        match self {
            Self::Resume => "resumed",
            Self::EarlyStop => "early stop",
            Self::SpikeAbort => "spike-guard abort",
            Self::Oom => "out of memory (degraded)",
            Self::Anomaly => "non-finite step",
            Self::Interrupted => "interrupted",
        }
    }

    fn colour(self) -> RGBColor {
        match self {
            Self::Resume => RGBColor(120, 120, 120),
            Self::EarlyStop => RGBColor(200, 30, 30),
            Self::SpikeAbort => RGBColor(150, 0, 150),
            Self::Oom => RGBColor(230, 130, 0),
            Self::Anomaly => RGBColor(120, 60, 0),
            Self::Interrupted => RGBColor(0, 140, 140),
        }
    }
}

/// One marker: an event at an optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// The optimizer step the event names.
    pub step: u64,
    /// What happened.
    pub kind: MarkerKind,
}

/// The best value of the selection metric: the last kept validation whose `is_best` is true.
#[derive(Debug, Clone, PartialEq)]
pub struct BestPoint {
    /// Its optimizer step.
    pub step: u64,
    /// The selection metric.
    pub metric: String,
    /// Its value there.
    pub value: f64,
}

/// What `curves.png` shows, as the run kept it (see the module docs for re-run steps). Series
/// are `(optimizer step, value)` in step order, one entry per step; `null` (non-finite) values
/// are left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// Training loss of each optimizer step.
    pub loss: Vec<(u64, f64)>,
    /// Trailing moving average of [`Self::loss`] over the last [`MOVING_AVERAGE_WINDOW`] entries
    /// (fewer at the start), at the same steps.
    pub loss_average: Vec<(u64, f64)>,
    /// Learning rate of each optimizer step.
    pub lr: Vec<(u64, f64)>,
    /// Each validation metric by name.
    pub metrics: BTreeMap<String, Vec<(u64, f64)>>,
    /// The metric that selects the best model (from `run_start`), if the log names it.
    pub selection: Option<String>,
    /// The best point of the selection metric.
    pub best: Option<BestPoint>,
    /// Marker events in step order (file order within a step).
    pub markers: Vec<Marker>,
}

impl Curves {
    /// The last optimizer step anything is drawn at.
    pub fn last_step(&self) -> u64 {
        let last = |s: &[(u64, f64)]| s.last().map_or(0, |p| p.0);
        [last(&self.loss), last(&self.lr), self.markers.iter().map(|m| m.step).max().unwrap_or(0)]
            .into_iter()
            .chain(self.metrics.values().map(|s| last(s)))
            .max()
            .unwrap_or(0)
    }
}

/// Trailing moving average over the last `window` values (fewer at the start).
pub fn moving_average(values: &[(u64, f64)], window: usize) -> Vec<(u64, f64)> {
    let window = window.max(1);
    (0..values.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window);
            let part = &values[from..=i];
            (values[i].0, part.iter().map(|p| p.1).sum::<f64>() / part.len() as f64)
        })
        .collect()
}

/// The curves of an event log (in file order); see [`Curves`] and the module docs.
pub fn series(events: &[Event]) -> Curves {
    let mut loss: BTreeMap<u64, f64> = BTreeMap::new();
    let mut lr: BTreeMap<u64, f64> = BTreeMap::new();
    let mut metrics: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    // Step → is_best of each kept validation.
    let mut validations: BTreeMap<u64, bool> = BTreeMap::new();
    let mut markers: Vec<Marker> = Vec::new();
    let mut selection: Option<String> = None;

    fn put(series: &mut BTreeMap<u64, f64>, step: u64, value: &Value) {
        // The last occurrence wins, a `null` (non-finite) one included.
        match value.as_f64() {
            Some(v) => series.insert(step, v),
            None => series.remove(&step),
        };
    }

    for e in events {
        let kind = e["event"].as_str().unwrap_or_default();
        let step = e["step"].as_u64();
        match kind {
            "run_start" => {
                (loss, lr, metrics, validations, markers) = Default::default();
                selection = e["selection"]["metric"].as_str().map(str::to_string);
            }
            "resume" => {
                if let Some(s) = step {
                    loss.split_off(&(s + 1));
                    lr.split_off(&(s + 1));
                    for m in metrics.values_mut() {
                        m.split_off(&(s + 1));
                    }
                    validations.split_off(&(s + 1));
                    markers.retain(|m| m.step <= s);
                }
            }
            "train_step" => {
                if let Some(s) = step {
                    put(&mut loss, s, &e["loss"]);
                    put(&mut lr, s, &e["lr"]);
                }
            }
            "validation" => {
                if let (Some(s), Some(m)) = (step, e["metrics"].as_object()) {
                    for (name, v) in m {
                        put(metrics.entry(name.clone()).or_default(), s, v);
                    }
                    validations.insert(s, e["is_best"].as_bool().unwrap_or(false));
                }
            }
            _ => {}
        }
        if let (Some(kind), Some(step)) = (MarkerKind::from_event(kind), step) {
            markers.push(Marker { step, kind });
        }
    }
    markers.sort_by_key(|m| m.step);
    metrics.retain(|_, s| !s.is_empty());
    let best = selection.as_ref().and_then(|metric| {
        let step = validations.iter().rev().find(|(_, is_best)| **is_best).map(|(s, _)| *s)?;
        let value = *metrics.get(metric)?.get(&step)?;
        Some(BestPoint { step, metric: metric.clone(), value })
    });
    let loss: Vec<(u64, f64)> = loss.into_iter().collect();
    Curves {
        loss_average: moving_average(&loss, MOVING_AVERAGE_WINDOW),
        loss,
        lr: lr.into_iter().collect(),
        metrics: metrics.into_iter().map(|(k, s)| (k, s.into_iter().collect())).collect(),
        selection,
        best,
        markers,
    }
}

/// Why `curves.png` could not be written; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CurvesError {
    /// `training.jsonl` could not be read.
    #[error("cannot draw the curves: {0}")]
    Read(#[from] ReadEventsError),
    /// The embedded font could not be loaded by the plotting library.
    #[error("cannot plot {}: the embedded DejaVu Sans font could not be registered", path.display())]
    Font {
        /// The image.
        path: PathBuf,
    },
    /// Drawing failed.
    #[error("cannot plot {}: {message}", path.display())]
    Draw {
        /// The image.
        path: PathBuf,
        /// What the plotting library said.
        message: String,
    },
    /// Creating, writing, encoding or renaming the PNG failed.
    #[error("cannot write the plot {}: {source}", path.display())]
    Write {
        /// The image.
        path: PathBuf,
        /// The cause.
        source: PngError,
    },
}

/// Reads the event log `log` (`training.jsonl` or its directory) and draws its curves into
/// `png`, written to a temporary sibling first and renamed over `png`. Returns the curves drawn.
pub fn write_curves(log: &Path, png: &Path) -> Result<Curves, CurvesError> {
    let curves = series(&read_events(log)?.events);
    plot(&curves, png)?;
    Ok(curves)
}

/// Draws `curves` as a [`CURVES_SIZE`] PNG at `path` (a temporary sibling renamed over it):
/// training loss (raw and moving average), learning rate, then the validation metrics (a metric
/// and its `ema_` / `swa_` variants share a panel, the selection metric's first, its best point
/// marked); marker events as vertical lines in every panel. A panel whose values (all positive)
/// span more than two decades has a log axis.
pub fn plot(curves: &Curves, path: &Path) -> Result<(), CurvesError> {
    let (width, height) = CURVES_SIZE;
    // One pixel buffer for the process, reused by every redraw: a fresh 8 MiB allocation per
    // validation would raise the allocator's thresholds and leave the resident set a buffer
    // higher after the second plot (which the memory-growth warning would take for a leak).
    static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    let mut buffer = BUFFER.lock().unwrap_or_else(|p| p.into_inner());
    draw_rgb(&mut buffer, CURVES_SIZE, |root| draw(curves, root)).map_err(|e| match e {
        DrawError::Font => CurvesError::Font { path: path.to_path_buf() },
        DrawError::Draw(message) => CurvesError::Draw { path: path.to_path_buf(), message },
    })?;
    let tmp = checkpoints::atomic::temp_path(path);
    let written =
        write_rgb_png(&tmp, width, height, &buffer).and_then(|()| std::fs::rename(&tmp, path).map_err(PngError::Io));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(CurvesError::Write { path: path.to_path_buf(), source });
    }
    Ok(())
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// One line of a panel.
struct Line {
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
    label: String,
    /// Dots at the points too (validations: sparse points a line alone would hide).
    dots: bool,
}

/// One panel: its lines, the best point (if it shows the selection metric) and what to say when
/// there is nothing to draw.
struct Panel<'c> {
    title: String,
    y_desc: String,
    lines: Vec<Line>,
    best: Option<&'c BestPoint>,
    markers: &'c [Marker],
    empty: &'static str,
}

fn points(series: &[(u64, f64)]) -> Vec<(f64, f64)> {
    thin(series.iter().filter(|p| p.1.is_finite()).map(|&(s, v)| (s as f64, v)).collect())
}

/// Thins a long line for drawing: the lowest and the highest point of each of
/// `MAX_DRAWN_POINTS / 2` buckets, in step order, so spikes stay visible.
fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_DRAWN_POINTS {
        return points;
    }
    let bucket = points.len().div_ceil(MAX_DRAWN_POINTS / 2);
    let mut out = Vec::with_capacity(MAX_DRAWN_POINTS);
    for chunk in points.chunks(bucket) {
        let lo = chunk.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("chunks are not empty");
        let hi = chunk.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("chunks are not empty");
        if lo.0 <= hi.0 {
            out.extend([*lo, *hi]);
        } else {
            out.extend([*hi, *lo]);
        }
    }
    out.dedup();
    out
}

/// The metric a panel is named by: `ema_` / `swa_` variants join their metric's panel.
fn base_metric(name: &str) -> &str {
    name.strip_prefix("ema_").or_else(|| name.strip_prefix("swa_")).unwrap_or(name)
}

fn draw(curves: &Curves, root: &Area<'_>) -> Result<(), String> {
    let steps = curves.last_step().max(1) as f64;
    let pad = (0.01 * steps).max(0.5);
    let x = -pad..steps + pad;

    // Metric panels: grouped by base name, the selection metric's group first.
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for name in curves.metrics.keys() {
        groups.entry(base_metric(name)).or_default().push(name);
    }
    for (group, names) in &mut groups {
        // The metric itself first, then its averages.
        names.sort_by_key(|n| *n != *group);
    }
    let selection_group = curves.selection.as_deref().map(base_metric);
    let mut order: Vec<&str> = groups.keys().copied().collect();
    order.sort_by_key(|g| Some(*g) != selection_group);

    let metric_panels = order.len().max(1);
    let cols = if metric_panels == 1 { 1 } else { 2 };
    let rows = metric_panels.div_ceil(cols);
    // Loss 1.3 units, learning rate 0.9, each metric row 1.
    let unit = root.dim_in_pixel().1 as f64 / (2.2 + rows as f64);
    let (loss_area, rest) = root.split_vertically((1.3 * unit) as u32);
    let (lr_area, metrics_area) = rest.split_vertically((0.9 * unit) as u32);

    let markers = &curves.markers[..];
    draw_panel(
        &loss_area,
        &Panel {
            title: "training loss".into(),
            y_desc: "loss".into(),
            lines: vec![
                Line {
                    points: points(&curves.loss),
                    style: RGBColor(140, 175, 230).stroke_width(1),
                    label: "loss (each step)".into(),
                    dots: false,
                },
                Line {
                    points: points(&curves.loss_average),
                    style: RGBColor(10, 50, 160).stroke_width(3),
                    label: format!("loss ({MOVING_AVERAGE_WINDOW}-step moving average)"),
                    dots: false,
                },
            ],
            best: None,
            markers,
            empty: "no optimizer step yet",
        },
        x.clone(),
        true,
    )?;
    draw_panel(
        &lr_area,
        &Panel {
            title: "learning rate".into(),
            y_desc: "learning rate".into(),
            lines: vec![Line {
                points: points(&curves.lr),
                style: RGBColor(20, 130, 60).stroke_width(2),
                label: "learning rate".into(),
                dots: false,
            }],
            best: None,
            markers,
            empty: "no optimizer step yet",
        },
        x.clone(),
        false,
    )?;
    let areas = metrics_area.split_evenly((rows, cols));
    if order.is_empty() {
        return draw_panel(
            &areas[0],
            &Panel {
                title: "validation".into(),
                y_desc: "metric".into(),
                lines: Vec::new(),
                best: None,
                markers,
                empty: "no validation yet",
            },
            x,
            false,
        );
    }
    for (area, group) in areas.iter().zip(&order) {
        let names = &groups[group];
        let is_selection = Some(*group) == selection_group;
        let lines = names
            .iter()
            .enumerate()
            .map(|(i, name)| Line {
                points: points(&curves.metrics[*name]),
                style: METRIC_COLOURS[i % METRIC_COLOURS.len()].stroke_width(if *name == *group { 2 } else { 1 }),
                label: (*name).to_string(),
                dots: true,
            })
            .collect();
        let best = curves.best.as_ref().filter(|b| names.contains(&b.metric.as_str()));
        let title = if is_selection {
            format!("validation: {group} (selects the best model)")
        } else {
            format!("validation: {group}")
        };
        draw_panel(
            area,
            &Panel { title, y_desc: (*group).to_string(), lines, best, markers, empty: "no finite values" },
            x.clone(),
            false,
        )?;
    }
    Ok(())
}

/// Draws one panel on a linear or (values all positive and spanning more than [`LOG_RATIO`]) a
/// log y axis; marker legend entries only where `marker_legend`.
fn draw_panel(area: &Area<'_>, panel: &Panel<'_>, x: Range<f64>, marker_legend: bool) -> Result<(), String> {
    let values = panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return draw_in(area, panel, x, 0.0..1.0, (0.0, 1.0), marker_legend);
    }
    if lo > 0.0 && hi / lo > LOG_RATIO {
        let (y_lo, y_hi) = (lo / 1.25, hi * 1.25);
        return draw_in(area, panel, x, (y_lo..y_hi).log_scale(), (y_lo, y_hi), marker_legend);
    }
    let pad = if hi > lo { 0.06 * (hi - lo) } else { 0.5 * hi.abs().max(1e-12) };
    let (y_lo, y_hi) = (lo - pad, hi + pad);
    draw_in(area, panel, x, y_lo..y_hi, (y_lo, y_hi), marker_legend)
}

fn draw_in<Y>(
    area: &Area<'_>,
    panel: &Panel<'_>,
    x: Range<f64>,
    y: Y,
    (y_lo, y_hi): (f64, f64),
    marker_legend: bool,
) -> Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT_FAMILY, 20))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(40)
        .y_label_area_size(84)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc(panel.y_desc.as_str())
        .x_labels(10)
        .y_labels(6)
        .x_label_formatter(&|v| if v.fract() == 0.0 { format!("{v:.0}") } else { format_significant(*v, 4) })
        .y_label_formatter(&|v| format_significant(*v, 3))
        .label_style((FONT_FAMILY, 13))
        .axis_desc_style((FONT_FAMILY, 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;

    let mut legend = false;
    for line in panel.lines.iter().filter(|l| !l.points.is_empty()) {
        let style = line.style;
        let series = if line.points.len() == 1 {
            // A single point is no line: a dot shows it.
            chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 3, style.color.filled()))).map_err(err)?
        } else {
            chart.draw_series(LineSeries::new(line.points.iter().copied(), style)).map_err(err)?
        };
        series.label(&line.label).legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        if line.dots && line.points.len() > 1 && line.points.len() <= 100 {
            chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 3, style.color.filled()))).map_err(err)?;
        }
        legend = true;
    }
    let mut kinds: Vec<MarkerKind> = panel.markers.iter().map(|m| m.kind).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let style = kind.colour().mix(0.8).stroke_width(if kind == MarkerKind::Resume { 1 } else { 2 });
        let lines = panel.markers.iter().filter(|m| m.kind == kind).map(move |m| {
            let x = m.step as f64;
            PathElement::new([(x, y_lo), (x, y_hi)], style)
        });
        let series = chart.draw_series(lines).map_err(err)?;
        if marker_legend {
            series
                .label(kind.label())
                .legend(move |(x, y)| PathElement::new([(x + 10, y - 7), (x + 10, y + 7)], style));
            legend = true;
        }
    }
    if let Some(best) = panel.best {
        let p = (best.step as f64, best.value);
        let colour = RGBColor(220, 20, 60);
        chart
            .draw_series([
                EmptyElement::at(p) + Circle::new((0, 0), 8, colour.stroke_width(2)),
                EmptyElement::at(p) + Circle::new((0, 0), 3, colour.filled()),
            ])
            .map_err(err)?
            .label(format!("best {} = {} at step {}", best.metric, format_significant(best.value, 5), best.step))
            .legend(move |(x, y)| Circle::new((x + 10, y), 6, colour.stroke_width(2)));
        legend = true;
    }
    if panel.lines.iter().all(|l| l.points.is_empty()) {
        let (w, h) = area.dim_in_pixel();
        let style = TextStyle::from((FONT_FAMILY, 18).into_font())
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ))
            .color(&RGBColor(110, 110, 110));
        area.draw(&Text::new(panel.empty, (w as i32 / 2, h as i32 / 2), style)).map_err(err)?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT_FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn step(step: u64, loss: f64, lr: f64) -> Value {
        json!({"event": "train_step", "step": step, "loss": loss, "lr": lr})
    }

    fn validation(step: u64, val_loss: f64, is_best: bool) -> Value {
        json!({"event": "validation", "step": step, "metrics": {"val_loss": val_loss, "mae": val_loss / 2.0},
               "is_best": is_best})
    }

    fn start() -> Value {
        json!({"event": "run_start", "selection": {"metric": "val_loss", "mode": "min"}})
    }

    #[test]
    fn the_moving_average_trails_over_the_window_and_fewer_at_the_start() {
        let values: Vec<(u64, f64)> = (1..=6).map(|s| (s, s as f64)).collect();
        let avg = moving_average(&values, 3);
        assert_eq!(avg, vec![(1, 1.0), (2, 1.5), (3, 2.0), (4, 3.0), (5, 4.0), (6, 5.0)]);
        // The curves use the 50-step window: step 60 averages steps 11..=60.
        let events: Vec<Value> = std::iter::once(start()).chain((1..=60).map(|s| step(s, s as f64, 0.1))).collect();
        let c = series(&events);
        assert_eq!(c.loss_average.len(), 60);
        assert_eq!(c.loss_average[49], (50, 25.5));
        assert_eq!(c.loss_average[59], (60, (11..=60).sum::<u64>() as f64 / 50.0));
    }

    #[test]
    fn a_resume_drops_what_came_after_its_checkpoint_and_the_last_occurrence_wins() {
        let events = vec![
            start(),
            step(1, 4.0, 0.1),
            step(2, 3.0, 0.1),
            validation(2, 2.0, true),
            step(3, 2.5, 0.1),
            step(4, 9.0, 0.1),
            validation(4, 1.0, true),
            json!({"event": "oom", "step": 4}),
            // Killed; resumed from the checkpoint of step 2: steps 3 and 4 run again.
            json!({"event": "resume", "step": 2}),
            step(3, 2.4, 0.05),
            // A step logged twice without a resume between (the last wins).
            step(4, 8.0, 0.05),
            step(4, 2.2, 0.05),
            validation(4, 1.5, false),
            step(5, 2.0, 0.05),
        ];
        let c = series(&events);
        assert_eq!(c.loss, vec![(1, 4.0), (2, 3.0), (3, 2.4), (4, 2.2), (5, 2.0)]);
        assert_eq!(c.lr, vec![(1, 0.1), (2, 0.1), (3, 0.05), (4, 0.05), (5, 0.05)]);
        assert_eq!(c.metrics["val_loss"], vec![(2, 2.0), (4, 1.5)]);
        assert_eq!(c.metrics["mae"], vec![(2, 1.0), (4, 0.75)]);
        // The dropped step-4 validation was the best; what the run kept has its best at step 2.
        assert_eq!(c.best, Some(BestPoint { step: 2, metric: "val_loss".into(), value: 2.0 }));
        // The crashed process's OOM marker went with its steps; the resume is marked.
        assert_eq!(c.markers, vec![Marker { step: 2, kind: MarkerKind::Resume }]);
        assert_eq!(c.loss_average[2], (3, (4.0 + 3.0 + 2.4) / 3.0));
    }

    #[test]
    fn the_best_point_is_the_last_validation_marked_best_and_needs_the_selection_metric() {
        let mut events = vec![
            start(),
            validation(0, 5.0, false),
            validation(10, 3.0, true),
            validation(20, 2.0, true),
            validation(30, 2.5, false),
        ];
        let c = series(&events);
        assert_eq!(c.selection.as_deref(), Some("val_loss"));
        assert_eq!(c.best, Some(BestPoint { step: 20, metric: "val_loss".into(), value: 2.0 }));
        // Selected by another metric: the best is that metric's value at that validation.
        events[0] = json!({"event": "run_start", "selection": {"metric": "mae", "mode": "min"}});
        assert_eq!(series(&events).best, Some(BestPoint { step: 20, metric: "mae".into(), value: 1.0 }));
        // A log that never names its selection metric has no best point.
        assert_eq!(series(&events[1..]).best, None);
        // A later run_start begins afresh.
        events.push(start());
        events.push(step(1, 1.0, 0.1));
        let c = series(&events);
        assert_eq!((c.best, c.metrics.len(), c.loss.len()), (None, 0, 1));
    }

    #[test]
    fn markers_come_from_their_events_in_step_order_and_null_values_are_left_out() {
        let events = vec![
            start(),
            step(1, 1.0, 0.1),
            json!({"event": "oom", "step": 3, "action": "split"}),
            step(2, 0.9, 0.1),
            json!({"event": "train_step", "step": 3, "loss": null, "lr": 0.1}),
            json!({"event": "validation", "step": 3, "metrics": {"val_loss": 0.5, "swa_val_loss": null},
                   "is_best": true}),
            json!({"event": "early_stop", "step": 3, "reason": "no improvement"}),
            json!({"event": "spike_abort", "step": 2, "guard": "loss"}),
            json!({"event": "lr_reduced", "step": 3}),
            json!({"event": "interrupted", "step": 3, "signal": "SIGTERM"}),
            json!({"event": "anomaly", "step": 4, "what": "loss"}),
        ];
        let c = series(&events);
        let got: Vec<(u64, MarkerKind)> = c.markers.iter().map(|m| (m.step, m.kind)).collect();
        assert_eq!(
            got,
            vec![
                (2, MarkerKind::SpikeAbort),
                (3, MarkerKind::Oom),
                (3, MarkerKind::EarlyStop),
                (3, MarkerKind::Interrupted),
                (4, MarkerKind::Anomaly)
            ]
        );
        assert_eq!(c.loss, vec![(1, 1.0), (2, 0.9)], "a null loss is not drawn");
        assert_eq!(c.lr.len(), 3);
        assert!(!c.metrics.contains_key("swa_val_loss"), "a metric with no finite value has no series");
        assert_eq!(c.last_step(), 4);
    }

    #[test]
    fn plot_writes_a_png_of_the_stated_size_even_with_nothing_to_draw() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join(CURVES_FILE);
        for curves in [Curves::default(), series(&[start(), step(1, 1.0, 0.1), validation(1, 1.0, true)])] {
            plot(&curves, &png).unwrap();
            let bytes = std::fs::read(&png).unwrap();
            assert_eq!(&bytes[12..16], b"IHDR");
            let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
            let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
            assert_eq!((w, h), CURVES_SIZE);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CURVES_FILE)], "no temporary file is left behind");
        let missing = plot(&Curves::default(), &dir.path().join("no/such/dir/curves.png")).unwrap_err();
        assert!(matches!(missing, CurvesError::Write { .. }), "{missing:?}");
    }

    #[test]
    fn long_lines_are_thinned_keeping_each_buckets_extremes() {
        let mut pts: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, 1.0)).collect();
        pts[5_000].1 = 50.0;
        let thinned = thin(pts);
        assert!(thinned.len() <= MAX_DRAWN_POINTS);
        assert!(thinned.contains(&(5_000.0, 50.0)), "the spike survives thinning");
        assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0), "still in step order");
    }
}
