//! A study's results, for people and for the next run: a CSV summary, the best parameters as a
//! configuration file, a console table and two PNG plots, all computed from a replayed
//! [`Study`] (nothing here reads the journal itself).
//!
//! # `summary.csv` ([`summary_csv`], [`write_summary_csv`])
//!
//! One row per trial, in trial-number order, under the header
//!
//! ```text
//! trial,state,attempts,<each parameter key, in the space file's order>,value,best_intermediate,epochs_run,pruned_at,fail_reason
//! ```
//!
//! (`steps_run` instead of `epochs_run` for [`ResourceUnit::Step`]):
//!
//! - `state`: `complete`, `pruned`, `failed` or `running`; `attempts`: how many attempts the
//!   trial has had (a retried trial keeps its number, see [`crate::journal`]).
//! - one column per parameter of the search space (a parameter the trial lacks is empty;
//!   trial parameters that are not in the space are left out). Floats are written with Rust's
//!   `{}` (shortest text that reads back as the same `f64`), strings as they are (quoted by the
//!   CSV writer when they hold a comma, a quote or a newline).
//! - `value`: the final objective, for complete trials only; `best_intermediate`: the best
//!   intermediate value by the study's direction, NaN ignored (empty when there is none); both
//!   written with `{}`, so they compare exactly with the journal's.
//! - `epochs_run` / `steps_run`: see [`ResourceUnit`]; `pruned_at`: the step after which the trial
//!   was pruned; `fail_reason`: the reason of the last failure, as the journal keeps it.
//!
//! [`write_summary_csv`] writes a temporary file in the same directory and renames it over the
//! summary, so a crash leaves either the old summary or the new one, never a torn one.
//!
//! # Best parameters ([`best_trial`], [`best_params_yaml`])
//!
//! The best trial is the complete trial with the best finite value (ties go to the lowest
//! number, as Optuna's `best_trial`). Its parameters are written as a nested YAML configuration
//! (`distill.lambda` becomes `distill:` / `  lambda: …`), readable with `--config`, floats
//! written so that they read back bit for bit.
//!
//! # Console table ([`table`]) and plots ([`plot_history`], [`plot_intermediate`])
//!
//! The table has one row per trial, the best one marked `*`, then the best trial and the counts
//! by state. The plots are [`PLOT_SIZE`] PNGs: the objective per trial with the best-so-far line,
//! and each trial's intermediate values against its steps. Non-finite values are not drawn; a
//! study with nothing to draw still gives a valid image with a note saying so.

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use schedulers::plotting::{DrawError, FONT_FAMILY, PngError, draw_rgb, write_rgb_png};
use serde_json::Value as Json;
use serde_yaml::{Mapping, Value as Yaml};
use thiserror::Error;

use crate::journal::{Study, Trial};
use crate::pruners::{Direction, TrialState};
use crate::space::SearchSpace;

/// What a trial's intermediate steps count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceUnit {
    /// Steps are 0-based epoch indices (the value reported after epoch `k` is at step `k`), so
    /// the epochs a trial ran are its last reported step + 1.
    Epoch,
    /// Steps are optimizer steps, so the steps a trial ran are its last reported step.
    Step,
}

impl ResourceUnit {
    /// The resource a trial used: from its last reported step (0 when it reported nothing).
    pub fn run(self, trial: &Trial) -> u64 {
        match (self, trial.intermediate.keys().next_back()) {
            (_, None) => 0,
            (ResourceUnit::Epoch, Some(&last)) => last + 1,
            (ResourceUnit::Step, Some(&last)) => last,
        }
    }

    /// The column name of [`ResourceUnit::run`]: `epochs_run` or `steps_run`.
    pub fn column(self) -> &'static str {
        match self {
            ResourceUnit::Epoch => "epochs_run",
            ResourceUnit::Step => "steps_run",
        }
    }

    /// The x-axis label of the intermediate-values plot: `epoch` or `step`.
    pub fn axis(self) -> &'static str {
        match self {
            ResourceUnit::Epoch => "epoch",
            ResourceUnit::Step => "step",
        }
    }
}

/// The state as written in the summary and the table.
pub fn state_name(state: TrialState) -> &'static str {
    match state {
        TrialState::Running => "running",
        TrialState::Complete => "complete",
        TrialState::Pruned => "pruned",
        TrialState::Failed => "failed",
    }
}

/// Whether `a` is strictly better than `b` for `direction`.
fn better(direction: Direction, a: f64, b: f64) -> bool {
    match direction {
        Direction::Minimize => a < b,
        Direction::Maximize => a > b,
    }
}

/// The best of `values` by `direction`, NaN ignored (the first of equal values): a trial's
/// objective from its reports, and the summary's `best_intermediate`.
pub fn best_of(direction: Direction, values: impl IntoIterator<Item = f64>) -> Option<f64> {
    values.into_iter().filter(|v| !v.is_nan()).fold(None, |best, v| match best {
        Some(b) if !better(direction, v, b) => Some(b),
        _ => Some(v),
    })
}

/// The trials sorted by number (a replayed study already has them in order).
fn by_number(study: &Study) -> Vec<&Trial> {
    let mut trials: Vec<&Trial> = study.trials.iter().collect();
    trials.sort_by_key(|t| t.number);
    trials
}

/// A parameter value as a summary cell: floats with `{}`, strings as they are.
fn json_cell(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// The summary as CSV text (see the module documentation for the columns).
pub fn summary_csv(study: &Study, space: &SearchSpace, unit: ResourceUnit) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = vec!["trial", "state", "attempts"];
    header.extend(space.order().iter().map(String::as_str));
    header.extend(["value", "best_intermediate", unit.column(), "pruned_at", "fail_reason"]);
    // Writing to a Vec cannot fail; the record lengths are all the header's.
    out.write_record(&header).expect("writing CSV to memory");
    for t in by_number(study) {
        let mut row =
            vec![t.number.to_string(), state_name(t.state).to_string(), (u64::from(t.attempt) + 1).to_string()];
        row.extend(space.order().iter().map(|key| t.params.get(key).map(json_cell).unwrap_or_default()));
        let value = t.value.filter(|_| t.state == TrialState::Complete);
        row.push(value.map(|v| v.to_string()).unwrap_or_default());
        row.push(best_of(study.direction, t.intermediate.values().copied()).map(|v| v.to_string()).unwrap_or_default());
        row.push(unit.run(t).to_string());
        row.push(t.pruned_at.map(|s| s.to_string()).unwrap_or_default());
        row.push(t.fail_reason.clone().unwrap_or_default());
        out.write_record(&row).expect("writing CSV to memory");
    }
    let bytes = out.into_inner().expect("flushing CSV to memory");
    String::from_utf8(bytes).expect("the CSV is made of UTF-8 strings")
}

/// Writes [`summary_csv`] to `path` through a temporary file in the same directory, renamed
/// over `path` once complete and synced: a crash never leaves a torn summary. Errors name the
/// path; the temporary file is removed on failure.
pub fn write_summary_csv(
    path: impl AsRef<Path>,
    study: &Study,
    space: &SearchSpace,
    unit: ResourceUnit,
) -> io::Result<()> {
    let path = path.as_ref();
    let text = summary_csv(study, space, unit);
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file name", path.display())))?;
    // Unique to this process and call, so concurrent writers never share a temporary file.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{}", std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed)));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Best effort: make the rename itself durable (not every platform can open a directory).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        with_path(e)
    })
}

/// The complete trial with the best finite value by the study's direction; ties go to the
/// lowest trial number (Optuna's `best_trial`). `None` without such a trial.
pub fn best_trial(study: &Study) -> Option<&Trial> {
    let mut best: Option<(&Trial, f64)> = None;
    for t in by_number(study) {
        let Some(v) = t.value.filter(|v| t.state == TrialState::Complete && v.is_finite()) else { continue };
        if best.is_none_or(|(_, b)| better(study.direction, v, b)) {
            best = Some((t, v));
        }
    }
    best.map(|(t, _)| t)
}

/// Why [`best_params_yaml`] could not write the parameters.
#[derive(Debug, Error)]
pub enum ParamsYamlError {
    /// One key is a prefix of the other (`a` and `a.b`): `a` cannot be a value and a section.
    #[error(
        "parameters `{parent}` and `{child}` cannot both be written as nested YAML: `{parent}` would be both a value \
         and a section"
    )]
    KeyConflict { parent: String, child: String },
    /// A key with an empty part (`a..b`, `.a`, `a.`).
    #[error("parameter `{key}` cannot be written as nested YAML: it has an empty part")]
    EmptyPart { key: String },
    #[error("cannot write the parameters as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// The trial's parameters as a nested YAML configuration that `--config` reads: dotted keys
/// become nested sections (`distill.lambda: 0.0014` is written `distill:` / `  lambda: 0.0014`),
/// keys in the space's order (then any parameters the space lacks, sorted), under a first line
/// `# best trial N: value V` (`# trial N: no value (STATE)` for a trial that is not complete).
///
/// Values are normalised by the space's distribution where it takes them (an integer stored for
/// a float parameter is written `1.0`), and floats are written in shortest round-trip form, so
/// they read back bit for bit. Two keys of which one is a prefix of the other (`a`, `a.b`) are
/// an error naming both.
pub fn best_params_yaml(trial: &Trial, space: &SearchSpace) -> Result<String, ParamsYamlError> {
    let mut keys: Vec<&str> =
        space.order().iter().map(String::as_str).filter(|k| trial.params.contains_key(*k)).collect();
    keys.extend(trial.params.keys().map(String::as_str).filter(|k| space.get(k).is_none()));
    for key in &keys {
        if key.split('.').any(str::is_empty) {
            return Err(ParamsYamlError::EmptyPart { key: key.to_string() });
        }
    }
    for parent in &keys {
        let prefix = format!("{parent}.");
        if let Some(child) = keys.iter().find(|k| k.starts_with(&prefix)) {
            return Err(ParamsYamlError::KeyConflict { parent: parent.to_string(), child: child.to_string() });
        }
    }

    let mut root = Mapping::new();
    for key in keys {
        let json = &trial.params[key];
        let mut value: Yaml = serde_yaml::to_value(json)?;
        if let Some(v) = space.get(key).and_then(|d| d.value_from_yaml(&value)) {
            value = v.to_yaml();
        }
        let mut parts: Vec<&str> = key.split('.').collect();
        let leaf = parts.pop().expect("split gives at least one part");
        let mut section = &mut root;
        for part in parts {
            let entry = section.entry(Yaml::from(part)).or_insert_with(|| Yaml::Mapping(Mapping::new()));
            // The prefix check above leaves only sections on the way to a leaf.
            section = entry.as_mapping_mut().expect("a section, never a value");
        }
        section.insert(Yaml::from(leaf), value);
    }
    let header = match trial.value.filter(|_| trial.state == TrialState::Complete) {
        Some(v) => format!("# best trial {}: value {v}\n", trial.number),
        None => format!("# trial {}: no value ({})\n", trial.number, state_name(trial.state)),
    };
    Ok(header + &serde_yaml::to_string(&root)?)
}

/// Formats like Python's `format(v, ".{digits}g")`: `digits` significant digits, trailing zeros
/// dropped, scientific notation for exponents below -4 or from `digits` on (`0.0014`, `3e-5`,
/// `1.235e6`); `NaN`, `inf`, `-inf` for non-finite values.
pub fn format_significant(v: f64, digits: usize) -> String {
    if !v.is_finite() || v == 0.0 {
        return v.to_string();
    }
    let digits = digits.max(1);
    let sci = format!("{v:.*e}", digits - 1);
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` has an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` has an integer exponent");
    let trim = |s: &str| -> String {
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s.to_string() }
    };
    if exp < -4 || exp >= digits as i32 {
        format!("{}e{exp}", trim(mantissa))
    } else {
        let decimals = (digits as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{v:.decimals$}"))
    }
}

/// A parameter value as a table cell: floats with 4 significant digits.
fn table_cell(value: &Json) -> String {
    match value {
        Json::Number(n) if n.is_f64() => format_significant(n.as_f64().unwrap_or(f64::NAN), 4),
        other => json_cell(other),
    }
}

/// A fixed-width console table of the study: one row per trial (trial, state, each parameter
/// of the space with floats to 4 significant digits, value to 6, `epochs_run` / `steps_run`),
/// the best trial's row marked `*`, then `best: trial N, value V (params k=v, …)` (or
/// `no complete trial yet`) and `N trials: C complete, P pruned, F failed, R running`. Lines end
/// with `\n`; missing cells are `-`.
pub fn table(study: &Study, space: &SearchSpace, unit: ResourceUnit) -> String {
    let best = best_trial(study).map(|t| t.number);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec![String::new(), "trial".to_string(), "state".to_string()];
    header.extend(space.order().iter().cloned());
    header.extend(["value".to_string(), unit.column().to_string()]);
    rows.push(header);
    for t in by_number(study) {
        let mut row = vec![
            if best == Some(t.number) { "*" } else { "" }.to_string(),
            t.number.to_string(),
            state_name(t.state).to_string(),
        ];
        row.extend(space.order().iter().map(|k| t.params.get(k).map_or_else(|| "-".to_string(), table_cell)));
        let value = t.value.filter(|_| t.state == TrialState::Complete);
        row.push(value.map_or_else(|| "-".to_string(), |v| format_significant(v, 6)));
        row.push(unit.run(t).to_string());
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, &w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    match best.and_then(|n| study.trials.iter().find(|t| t.number == n)) {
        Some(t) => {
            let params: Vec<String> =
                space.order().iter().filter_map(|k| t.params.get(k).map(|v| format!("{k}={}", json_cell(v)))).collect();
            let value = t.value.unwrap_or(f64::NAN);
            out.push_str(&format!("best: trial {}, value {value} (params {})\n", t.number, params.join(", ")));
        }
        None => out.push_str("no complete trial yet\n"),
    }
    let count = |s: TrialState| study.trials.iter().filter(|t| t.state == s).count();
    let n = study.trials.len();
    out.push_str(&format!(
        "{n} trial{}: {} complete, {} pruned, {} failed, {} running\n",
        if n == 1 { "" } else { "s" },
        count(TrialState::Complete),
        count(TrialState::Pruned),
        count(TrialState::Failed),
        count(TrialState::Running),
    ));
    out
}

/// Size in pixels of the images [`plot_history`] and [`plot_intermediate`] write.
pub const PLOT_SIZE: (u32, u32) = (1024, 640);

/// Why a plot could not be written; each names the file.
#[derive(Debug, Error)]
pub enum PlotError {
    /// The embedded font could not be loaded by the plotting library.
    #[error("cannot plot {}: the embedded DejaVu Sans font could not be registered", path.display())]
    Font { path: PathBuf },
    /// Drawing the chart failed.
    #[error("cannot plot {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    /// Creating, writing or encoding the PNG failed.
    #[error("cannot write the plot {}: {source}", path.display())]
    Write { path: PathBuf, source: PngError },
}

/// The axis range over `values` with a margin (a unit-wide range around a single value, `0..1`
/// when there is none).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.06 * (hi - lo) } else { 0.5 * hi.abs().max(1.0) };
    (lo - pad, hi + pad)
}

/// Axis labels for whole-number coordinates (trials, steps): other ticks stay unlabelled.
fn whole_label(v: &f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { String::new() }
}

/// How many x labels to ask for over `lo..hi` so that small ranges get one per whole number.
fn whole_labels(lo: f64, hi: f64) -> usize {
    ((hi - lo).floor() as usize + 1).clamp(2, 12)
}

/// Draws a chart with `draw` into a [`PLOT_SIZE`] RGB buffer and writes it as a PNG.
fn render(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    let (width, height) = PLOT_SIZE;
    let mut buffer = Vec::new();
    draw_rgb(&mut buffer, PLOT_SIZE, draw).map_err(|e| match e {
        DrawError::Font => PlotError::Font { path: path.to_path_buf() },
        DrawError::Draw(message) => PlotError::Draw { path: path.to_path_buf(), message },
    })?;
    write_rgb_png(path, width, height, &buffer).map_err(|source| PlotError::Write { path: path.to_path_buf(), source })
}

/// A note in the middle of the image (nothing to draw).
fn note(root: &DrawingArea<BitMapBackend, plotters::coord::Shift>, text: &str) -> Result<(), String> {
    let (w, h) = root.dim_in_pixel();
    let style = TextStyle::from((FONT_FAMILY, 22).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(text.to_string(), (w as i32 / 2, h as i32 / 2), style)).map_err(|e| e.to_string())
}

fn err(e: impl Display) -> String {
    e.to_string()
}

/// The optimisation history as a [`PLOT_SIZE`] PNG: the objective value per trial number
/// (complete trials as filled points, pruned trials at their last finite intermediate value as
/// hollow points of another colour, failed and running trials left out) and the best value so
/// far over the complete trials, by the study's direction. Non-finite values are not drawn; with
/// nothing to draw the image still has its axes and a note. The file is PNG whatever its name.
pub fn plot_history(study: &Study, path: impl AsRef<Path>) -> Result<(), PlotError> {
    let path = path.as_ref();
    let trials = by_number(study);
    let complete: Vec<(f64, f64)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| t.value.filter(|v| v.is_finite()).map(|v| (t.number as f64, v)))
        .collect();
    let pruned: Vec<(f64, f64)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Pruned)
        .filter_map(|t| t.intermediate.values().rev().find(|v| v.is_finite()).map(|&v| (t.number as f64, v)))
        .collect();
    // The best so far as a step line: flat until a complete trial improves on it.
    let mut best_line: Vec<(f64, f64)> = Vec::new();
    for &(x, v) in &complete {
        match best_line.last().map(|p| p.1) {
            None => best_line.push((x, v)),
            Some(b) if better(study.direction, v, b) => best_line.extend([(x, b), (x, v)]),
            Some(b) => best_line.push((x, b)),
        }
    }
    let last = trials.last().map_or(1.0, |t| (t.number as f64).max(1.0));
    let (x_lo, x_hi) = (-0.5, last + 0.5);
    let (y_lo, y_hi) = padded_range(complete.iter().chain(&pruned).map(|p| p.1));

    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("optimisation history", (FONT_FAMILY, 26))
            .margin(16)
            .margin_right(32)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("trial")
            .x_labels(whole_labels(x_lo, x_hi))
            .y_desc("objective")
            .x_label_formatter(&whole_label)
            .y_label_formatter(&|v| format_significant(*v, 4))
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 16))
            .draw()
            .map_err(err)?;
        if complete.is_empty() && pruned.is_empty() {
            return note(root, "no finite objective values yet");
        }
        let pruned_colour = RGBColor(230, 130, 20);
        if !best_line.is_empty() {
            chart
                .draw_series(LineSeries::new(best_line.iter().copied(), RED.stroke_width(2)))
                .map_err(err)?
                .label("best so far")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
        }
        if !complete.is_empty() {
            chart
                .draw_series(complete.iter().map(|&p| Circle::new(p, 5, BLUE.filled())))
                .map_err(err)?
                .label("complete")
                .legend(|(x, y)| Circle::new((x + 10, y), 5, BLUE.filled()));
        }
        if !pruned.is_empty() {
            chart
                .draw_series(pruned.iter().map(|&p| Circle::new(p, 5, pruned_colour.stroke_width(2))))
                .map_err(err)?
                .label("pruned (last intermediate value)")
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, pruned_colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT_FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(err)
    })
}

/// The intermediate values as a [`PLOT_SIZE`] PNG: one line per trial, value against step (x
/// axis `epoch` or `step`, as `unit`). Complete and running trials are drawn in colour (running
/// ones thinner, with dots at the points of short lines), pruned trials dashed in grey with a × at their last
/// point, failed ones in light grey; with at most 12 trials drawn, a legend gives each line's trial number. Non-finite
/// values are left out; with nothing to draw the image still has its axes and a note.
pub fn plot_intermediate(study: &Study, path: impl AsRef<Path>, unit: ResourceUnit) -> Result<(), PlotError> {
    let path = path.as_ref();
    let lines: Vec<(&Trial, Vec<(f64, f64)>)> = by_number(study)
        .into_iter()
        .map(|t| {
            let points = t.intermediate.iter().filter(|(_, v)| v.is_finite()).map(|(&s, &v)| (s as f64, v)).collect();
            (t, points)
        })
        .filter(|(_, points): &(_, Vec<_>)| !points.is_empty())
        .collect();
    let (x_lo, x_hi) = {
        let (lo, hi) = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.0))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        // Half a step of margin (more for long runs), so the first and last steps are labelled.
        let pad = 0.5f64.max(0.02 * (hi - lo));
        if lo > hi { (-0.5, 1.5) } else { (lo - pad, hi + pad) }
    };
    let (y_lo, y_hi) = padded_range(lines.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
    let legend = !lines.is_empty() && lines.len() <= 12;

    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("intermediate values", (FONT_FAMILY, 26))
            .margin(16)
            .margin_right(32)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(unit.axis())
            .x_labels(whole_labels(x_lo, x_hi))
            .y_desc("intermediate value")
            .x_label_formatter(&whole_label)
            .y_label_formatter(&|v| format_significant(*v, 4))
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 16))
            .draw()
            .map_err(err)?;
        if lines.is_empty() {
            return note(root, "no finite intermediate values yet");
        }
        let grey = RGBColor(140, 140, 140);
        for (i, (t, points)) in lines.iter().enumerate() {
            let label = format!("trial {} ({})", t.number, state_name(t.state));
            let pruned = t.state == TrialState::Pruned;
            let style = match t.state {
                TrialState::Pruned => grey.stroke_width(2),
                TrialState::Failed => RGBColor(170, 170, 170).stroke_width(1),
                TrialState::Running => Palette99::pick(i).stroke_width(1),
                TrialState::Complete => Palette99::pick(i).stroke_width(2),
            };
            let line = points.iter().copied();
            let annotation = if pruned {
                chart.draw_series(DashedLineSeries::new(line, 8, 5, style)).map_err(err)?
            } else {
                chart.draw_series(LineSeries::new(line, style)).map_err(err)?
            };
            if legend {
                annotation.label(label).legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
            }
            if pruned {
                let end = *points.last().expect("lines have points");
                chart.draw_series(std::iter::once(Cross::new(end, 6, style))).map_err(err)?;
            } else {
                // Dots at the points of a short line (so a trial with one report shows too), at the
                // last point only of a long one.
                let dots = if points.len() <= 30 { &points[..] } else { &points[points.len() - 1..] };
                chart.draw_series(dots.iter().map(|&p| Circle::new(p, 3, style.color.filled()))).map_err(err)?;
            }
        }
        if legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT_FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(err)?;
        }
        Ok(())
    })
}
