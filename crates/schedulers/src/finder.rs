//! Learning-rate range finder: Leslie Smith's LR range test, as in PyTorch Lightning's `lr_find`.
//!
//! This module is the pure part of the test. The training loop that owns the model asks
//! [`LrFinder::next_lr`] for the learning rate of each sweep step, runs one optimizer step at that
//! rate, and hands the loss back to [`LrFinder::record`], which tells it whether to go on
//! ([`Flow::Continue`]), or stop ([`Flow::Done`], [`Flow::Diverged`]). Once the sweep has stopped,
//! [`LrFinder::suggestion`] picks a learning rate, [`LrFinder::report`] renders it for the console,
//! and [`LrFinder::write_csv`] / [`LrFinder::plot_png`] save the curve.
//!
//! # Sweep
//!
//! Step `k = 0..N` (`N = num_steps`) runs at
//! `lr_k = min_lr · (max_lr / min_lr)^(k / (N − 1))` (exponential, the default) or
//! `lr_k = min_lr + k / (N − 1) · (max_lr − min_lr)` (linear): the first step runs at exactly
//! `min_lr` and the last at exactly `max_lr`. (Lightning uses `(k + 1) / N`, so it never tries
//! `min_lr` itself; that off-by-one is deliberately not reproduced.)
//!
//! # Smoothing and divergence
//!
//! Losses are smoothed with a bias-corrected exponential moving average,
//! `avg_k = β · avg_{k−1} + (1 − β) · loss_k` and `smoothed_k = avg_k / (1 − β^(k+1))`, with
//! `avg_{−1} = 0` and `β = smoothing` (`β = 0` disables smoothing). The first smoothed value is
//! therefore the first loss. The sweep stops as [`Flow::Diverged`] when, for `k > 1`, the smoothed
//! loss exceeds `divergence_factor ×` the best (lowest) smoothed loss seen before it, or at once
//! when a loss is not finite (NaN or ±∞: it cannot be smoothed, and is recorded with a NaN
//! smoothed loss). The point that triggers the stop is still recorded. For the usual non-negative
//! losses the test is exactly `smoothed > factor · best`; it is written as
//! `smoothed − best > (factor − 1) · |best|`, which is the same there and does not fire at once for
//! a negative best loss (where `factor · best` would lie *below* `best`).
//!
//! # Suggestion: steepest descent in log-LR
//!
//! The suggested learning rate is where the smoothed loss falls fastest: the first `skip_begin`
//! and last `skip_end` recorded points are dropped, then any non-finite ones, and the slope of
//! the smoothed loss is taken **with respect to `log10(lr)`** with `numpy.gradient`'s scheme
//! (second-order central differences for uneven spacing at interior points, one-sided
//! differences at the two ends); the point with the most negative slope wins.
//!
//! Lightning differentiates with respect to the learning rate itself. On an exponential grid the
//! spacing in `lr` grows geometrically, so the linear-LR derivative is dominated by the scale of
//! `lr` (a given drop in loss counts a thousand times more at `1e-5` than at `1e-2`) and the
//! answer moves when the range is widened. In `log10(lr)` the grid is uniform, the slope is
//! "loss change per decade", and the steepest point does not depend on where the range starts or
//! on how fine the grid is. It is also what the usual log-x plot of the curve shows by eye.
//!
//! The suggestion comes with two ranges: conservative `(lr / 10, lr)` and aggressive `(lr, 2·lr)`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::plotting::{DrawError, FONT_FAMILY, PngError, draw_rgb, write_rgb_png};

/// How the learning rate moves from `min_lr` to `max_lr` over the sweep.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SweepMode {
    /// Geometric steps: the same ratio between consecutive learning rates (`"exponential"`).
    #[default]
    Exponential,
    /// Arithmetic steps: the same difference between consecutive learning rates (`"linear"`).
    Linear,
}

/// Settings of an LR range test. Every field has a default, so a config file need only name the
/// fields it changes; unknown fields are rejected.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FinderConfig {
    /// Learning rate of the first sweep step (default `1e-7`).
    pub min_lr: f64,
    /// Learning rate of the last sweep step (default `10.0`).
    pub max_lr: f64,
    /// Number of sweep steps, endpoints included (default `100`).
    pub num_steps: usize,
    /// Spacing of the learning rates (default exponential).
    pub mode: SweepMode,
    /// EMA coefficient β of the loss smoothing, in `[0, 1)`; `0` disables smoothing (default `0.98`).
    pub smoothing: f64,
    /// The sweep stops once the smoothed loss exceeds this multiple of the best smoothed loss
    /// (default `4.0`).
    pub divergence_factor: f64,
    /// Points dropped from the start of the curve before the suggestion is computed (default `10`).
    pub skip_begin: usize,
    /// Points dropped from the end of the curve before the suggestion is computed (default `1`).
    pub skip_end: usize,
}

impl Default for FinderConfig {
    fn default() -> Self {
        Self {
            min_lr: 1e-7,
            max_lr: 10.0,
            num_steps: 100,
            mode: SweepMode::Exponential,
            smoothing: 0.98,
            divergence_factor: 4.0,
            skip_begin: 10,
            skip_end: 1,
        }
    }
}

impl FinderConfig {
    /// Checks the settings; returns one `(key, message)` pair per problem (empty when valid).
    ///
    /// The key is the field name (e.g. `"max_lr"`); the message names the offending value and what
    /// was expected. Besides the ranges of the individual fields, `num_steps` must exceed
    /// `skip_begin + skip_end + 2`: with fewer steps no suggestion can ever be made.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut push = |key: &str, message: String| errors.push((key.to_string(), message));

        let min_ok = self.min_lr.is_finite() && self.min_lr > 0.0;
        if !min_ok {
            push("min_lr", format!("min_lr = {}: expected a finite number > 0", self.min_lr));
        }
        if !(self.max_lr.is_finite() && self.max_lr > 0.0) {
            push("max_lr", format!("max_lr = {}: expected a finite number > 0", self.max_lr));
        } else if min_ok && self.max_lr <= self.min_lr {
            push("max_lr", format!("max_lr = {}: expected a value greater than min_lr = {}", self.max_lr, self.min_lr));
        }

        let needed = self.skip_begin.saturating_add(self.skip_end).saturating_add(2);
        if self.num_steps < 2 {
            push(
                "num_steps",
                format!(
                    "num_steps = {}: expected at least 2 (the sweep runs from min_lr to max_lr inclusive); a \
                     suggestion needs more than skip_begin + skip_end + 2 = {needed} steps",
                    self.num_steps
                ),
            );
        } else if self.num_steps <= needed {
            push(
                "num_steps",
                format!(
                    "num_steps = {}: a suggestion needs more than skip_begin + skip_end + 2 = {} + {} + 2 = {needed} \
                     steps; raise num_steps or lower skip_begin / skip_end",
                    self.num_steps, self.skip_begin, self.skip_end
                ),
            );
        }

        if !(self.smoothing.is_finite() && (0.0..1.0).contains(&self.smoothing)) {
            push(
                "smoothing",
                format!("smoothing = {}: expected 0 <= smoothing < 1 (0 disables smoothing)", self.smoothing),
            );
        }
        if !(self.divergence_factor.is_finite() && self.divergence_factor > 1.0) {
            push(
                "divergence_factor",
                format!("divergence_factor = {}: expected a finite number > 1", self.divergence_factor),
            );
        }
        errors
    }

    /// Learning rate of sweep step `k` (`k = 0..num_steps`): exactly `min_lr` at `k = 0` and
    /// exactly `max_lr` at `k = num_steps − 1`. A `k` past the end is clamped to the last step.
    pub fn lr_at(&self, k: usize) -> f64 {
        let last = self.num_steps.saturating_sub(1);
        if k == 0 || last == 0 {
            return self.min_lr;
        }
        if k >= last {
            return self.max_lr;
        }
        let t = k as f64 / last as f64;
        match self.mode {
            SweepMode::Exponential => self.min_lr * (self.max_lr / self.min_lr).powf(t),
            SweepMode::Linear => self.min_lr + t * (self.max_lr - self.min_lr),
        }
    }
}

/// One recorded sweep step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct FinderPoint {
    /// Sweep step `k`, counted from 0; also the point's index in [`LrFinder::points`].
    pub step: usize,
    /// Learning rate the step ran at.
    pub lr: f64,
    /// Loss reported for the step (may be non-finite for the last point of a diverged sweep).
    pub loss: f64,
    /// Bias-corrected EMA of the losses up to this step (NaN when `loss` is not finite).
    pub smoothed: f64,
}

/// What the training loop should do after [`LrFinder::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Run the next step at [`LrFinder::next_lr`].
    Continue,
    /// Stop: the loss diverged (exploded, or was not finite).
    Diverged,
    /// Stop: all `num_steps` steps have been recorded.
    Done,
}

/// A suggested learning rate and the ranges around it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Suggestion {
    /// The learning rate at the steepest descent of the smoothed loss (in log-LR).
    pub lr: f64,
    /// Index of that point in [`LrFinder::points`].
    pub index: usize,
    /// `(lr / 10, lr)`: a safe range for a fixed or peak learning rate.
    pub conservative: (f64, f64),
    /// `(lr, 2 · lr)`: a faster range that is more likely to be unstable.
    pub aggressive: (f64, f64),
}

impl Suggestion {
    fn at(lr: f64, index: usize) -> Self {
        Self { lr, index, conservative: (lr / 10.0, lr), aggressive: (lr, 2.0 * lr) }
    }
}

/// Errors of [`LrFinder::plot_png`]; each names the file it was writing.
#[derive(Debug, Error)]
pub enum FinderError {
    /// The sweep has no finite point to draw.
    #[error("cannot plot the LR range test to {path}: no finite (lr, loss) points recorded")]
    Empty {
        /// The output file.
        path: PathBuf,
    },
    /// The embedded font could not be loaded by the plotting library.
    #[error("cannot plot the LR range test to {path}: the embedded DejaVu Sans font could not be registered")]
    Font {
        /// The output file.
        path: PathBuf,
    },
    /// Drawing the chart failed.
    #[error("cannot plot the LR range test to {path}: {message}")]
    Draw {
        /// The output file.
        path: PathBuf,
        /// What the plotting library reported.
        message: String,
    },
    /// Creating or writing the PNG file failed.
    #[error("cannot write the LR range test plot {path}: {source}")]
    Io {
        /// The output file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Encoding the PNG failed.
    #[error("cannot encode the LR range test plot {path}: {source}")]
    Encode {
        /// The output file.
        path: PathBuf,
        /// The underlying error.
        source: png::EncodingError,
    },
}

/// Why the sweep stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The smoothed loss exceeded `divergence_factor ×` the best one.
    Exploded(usize),
    /// The loss was NaN or infinite.
    NonFinite(usize),
}

/// State of one LR range test: the sweep position, the smoothing state and the recorded curve.
#[derive(Clone, Debug)]
pub struct LrFinder {
    config: FinderConfig,
    points: Vec<FinderPoint>,
    /// Uncorrected EMA of the losses so far.
    avg: f64,
    /// Lowest smoothed loss so far (`+∞` before the first point).
    best: f64,
    stop: Option<Stop>,
}

/// Size in pixels of the image written by [`LrFinder::plot_png`].
pub const PLOT_SIZE: (u32, u32) = (1024, 640);

impl LrFinder {
    /// Starts a sweep. The config is used as given: check it first with [`FinderConfig::validate`].
    pub fn new(config: FinderConfig) -> Self {
        Self {
            points: Vec::with_capacity(config.num_steps.min(1 << 16)),
            config,
            avg: 0.0,
            best: f64::INFINITY,
            stop: None,
        }
    }

    /// The settings of this sweep.
    pub fn config(&self) -> &FinderConfig {
        &self.config
    }

    /// Learning rate for the next step, or `None` once the sweep has finished (all `num_steps`
    /// recorded, or diverged).
    pub fn next_lr(&self) -> Option<f64> {
        if self.is_finished() { None } else { Some(self.config.lr_at(self.points.len())) }
    }

    /// Whether the sweep has finished (completed or diverged).
    pub fn is_finished(&self) -> bool {
        self.stop.is_some() || self.points.len() >= self.config.num_steps
    }

    /// The step at which the sweep diverged (the last recorded point), if it did.
    pub fn diverged_at(&self) -> Option<usize> {
        self.stop.map(|(Stop::Exploded(k) | Stop::NonFinite(k))| k)
    }

    /// Records the loss of the step that ran at [`next_lr`](Self::next_lr) and says whether to go on.
    ///
    /// Once the sweep has finished, further calls record nothing and return the final flow again
    /// ([`Flow::Diverged`] or [`Flow::Done`]).
    pub fn record(&mut self, loss: f64) -> Flow {
        if self.is_finished() {
            return self.final_flow();
        }
        let k = self.points.len();
        let lr = self.config.lr_at(k);
        if !loss.is_finite() {
            self.points.push(FinderPoint { step: k, lr, loss, smoothed: f64::NAN });
            self.stop = Some(Stop::NonFinite(k));
            return Flow::Diverged;
        }

        let beta = self.config.smoothing;
        self.avg = beta * self.avg + (1.0 - beta) * loss;
        // At k = 0 the bias correction divides (1 − β)·loss by (1 − β): the loss itself, exactly.
        let smoothed = if k == 0 { loss } else { self.avg / (1.0 - beta.powf((k + 1) as f64)) };
        self.points.push(FinderPoint { step: k, lr, loss, smoothed });

        let factor = self.config.divergence_factor;
        if k > 1 && smoothed - self.best > (factor - 1.0) * self.best.abs() {
            self.stop = Some(Stop::Exploded(k));
            return Flow::Diverged;
        }
        if smoothed < self.best {
            self.best = smoothed;
        }
        if self.points.len() >= self.config.num_steps { Flow::Done } else { Flow::Continue }
    }

    fn final_flow(&self) -> Flow {
        if self.stop.is_some() { Flow::Diverged } else { Flow::Done }
    }

    /// The recorded curve, one point per recorded step, in sweep order.
    pub fn points(&self) -> &[FinderPoint] {
        &self.points
    }

    /// Indices (into [`points`](Self::points)) of the finite points that the suggestion considers:
    /// the first `skip_begin` and last `skip_end` points are dropped, then non-finite ones.
    fn candidates(&self) -> Vec<usize> {
        let n = self.points.len();
        let (begin, end) = (self.config.skip_begin, self.config.skip_end);
        if n <= begin.saturating_add(end) {
            return Vec::new();
        }
        (begin..n - end)
            .filter(|&i| {
                let p = &self.points[i];
                p.lr.is_finite() && p.lr > 0.0 && p.smoothed.is_finite()
            })
            .collect()
    }

    /// The learning rate at the steepest descent of the smoothed loss with respect to
    /// `log10(lr)`, or `None` when fewer than two finite points remain after skipping (see the
    /// module documentation).
    pub fn suggestion(&self) -> Option<Suggestion> {
        let idx = self.candidates();
        if idx.len() < 2 {
            return None;
        }
        let x: Vec<f64> = idx.iter().map(|&i| self.points[i].lr.log10()).collect();
        let y: Vec<f64> = idx.iter().map(|&i| self.points[i].smoothed).collect();
        let slopes = gradient(&x, &y);
        let mut best: Option<(usize, f64)> = None;
        for (j, &s) in slopes.iter().enumerate() {
            if s.is_finite() && best.is_none_or(|(_, b)| s < b) {
                best = Some((j, s));
            }
        }
        let (j, _) = best?;
        let index = idx[j];
        Some(Suggestion::at(self.points[index].lr, index))
    }

    /// Console summary of the test, lines separated by `\n` (no trailing newline):
    ///
    /// ```text
    /// Suggested optimal LR: 5.62e-03
    /// Conservative range: 5.62e-04 to 5.62e-03
    /// Aggressive range: 5.62e-03 to 1.12e-02
    /// ```
    ///
    /// or, without a suggestion, one line saying why.
    pub fn report(&self) -> String {
        if let Some(s) = self.suggestion() {
            return format!(
                "Suggested optimal LR: {}\nConservative range: {} to {}\nAggressive range: {} to {}",
                format_sci(s.lr),
                format_sci(s.conservative.0),
                format_sci(s.conservative.1),
                format_sci(s.aggressive.0),
                format_sci(s.aggressive.1),
            );
        }
        let n = self.points.len();
        if n == 0 {
            return "No LR suggestion: the sweep recorded no points".to_string();
        }
        let (begin, end) = (self.config.skip_begin, self.config.skip_end);
        let finite = self.candidates().len();
        let (why, advice) = match self.stop {
            Some(Stop::Exploded(k)) => {
                (format!("sweep stopped at step {k} by divergence"), "widen the range or raise num_steps")
            }
            Some(Stop::NonFinite(k)) => {
                (format!("sweep stopped at step {k} by a non-finite loss"), "widen the range or raise num_steps")
            }
            None if n >= self.config.num_steps => {
                (format!("sweep completed all {n} steps"), "raise num_steps or lower skip_begin / skip_end")
            }
            None => (format!("sweep still running after {n} of {} steps", self.config.num_steps), "finish the sweep"),
        };
        let mut line = String::new();
        if finite >= 2 {
            // Enough points, but no finite slope (e.g. repeated learning rates).
            let _ = write!(line, "No LR suggestion: no finite slope among {finite} finite points ({why})");
        } else {
            let _ = write!(
                line,
                "No LR suggestion: only {finite} finite point{} after skipping the first {begin} and last {end} \
                 ({why}); {advice}",
                if finite == 1 { "" } else { "s" }
            );
        }
        line
    }

    /// Writes the curve as CSV with header `step,lr,loss,smoothed_loss` and one row per point.
    ///
    /// Learning rates are written in shortest round-trip scientific notation (`1e-7`), losses in
    /// shortest round-trip decimal notation; non-finite values as `NaN`, `inf`, `-inf`. Errors
    /// name the path.
    pub fn write_csv(&self, path: &Path) -> io::Result<()> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut out = BufWriter::new(File::create(path).map_err(with_path)?);
        let mut write = || -> io::Result<()> {
            writeln!(out, "step,lr,loss,smoothed_loss")?;
            for p in &self.points {
                writeln!(out, "{},{:e},{},{}", p.step, p.lr, p.loss, p.smoothed)?;
            }
            out.flush()
        };
        write().map_err(with_path)
    }

    /// Draws the curve as a [`PLOT_SIZE`] PNG: smoothed loss against the learning rate on a log
    /// x axis, the raw loss as a faint line (clipped at the top of the smoothed loss's range), and
    /// a marker and label at the suggested learning rate. The file is PNG whatever its extension.
    pub fn plot_png(&self, path: &Path) -> Result<(), FinderError> {
        self.plot_png_sized(path, PLOT_SIZE)
    }

    /// [`plot_png`](Self::plot_png) with an explicit `(width, height)` in pixels.
    pub fn plot_png_sized(&self, path: &Path, (width, height): (u32, u32)) -> Result<(), FinderError> {
        let finite: Vec<&FinderPoint> =
            self.points.iter().filter(|p| p.lr.is_finite() && p.lr > 0.0 && p.smoothed.is_finite()).collect();
        if finite.is_empty() {
            return Err(FinderError::Empty { path: path.to_path_buf() });
        }

        let (mut x_lo, mut x_hi) = min_max(finite.iter().map(|p| p.lr));
        if x_hi <= x_lo {
            (x_lo, x_hi) = (x_lo / 2.0, x_hi * 2.0);
        }
        // The y range covers the smoothed curve and the raw losses below it; raw losses above it
        // (the explosion that ends a sweep) would squash the curve, so they are clipped to the top.
        let (s_min, y_max) = min_max(finite.iter().map(|p| p.smoothed));
        let (raw_min, _) = min_max(self.points.iter().map(|p| p.loss).filter(|l| l.is_finite()));
        let y_min = s_min.min(raw_min);
        let pad = if y_max > y_min { 0.06 * (y_max - y_min) } else { 0.5 * y_max.abs().max(1.0) };
        let (y_lo, y_hi) = (y_min - pad, y_max + pad);
        let clip = |v: f64| v.clamp(y_lo, y_hi);
        // Enough decimals on the y labels to tell ten ticks apart.
        let y_decimals = (1.0 - (y_hi - y_lo).log10().floor()).clamp(0.0, 8.0) as usize;
        let y_label = move |v: &f64| format!("{v:.y_decimals$}");
        let suggestion = self.suggestion();

        let mut buffer = Vec::new();
        let drawn = draw_rgb(&mut buffer, (width, height), |root| {
            let mut chart = ChartBuilder::on(root)
                .caption("LR range test", (FONT_FAMILY, 26))
                .margin(16)
                .margin_right(48)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("learning rate (log scale)")
                .y_desc("loss")
                .x_label_formatter(&|v| format_sci(*v))
                .y_label_formatter(&y_label)
                .label_style((FONT_FAMILY, 14))
                .axis_desc_style((FONT_FAMILY, 16))
                .draw()
                .map_err(|e| e.to_string())?;

            let raw = RGBColor(120, 160, 220).mix(0.6);
            chart
                .draw_series(LineSeries::new(
                    self.points
                        .iter()
                        .filter(|p| p.lr.is_finite() && p.lr > 0.0 && p.loss.is_finite())
                        .map(|p| (p.lr, clip(p.loss))),
                    raw.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?
                .label("raw loss")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], raw.stroke_width(1)));
            chart
                .draw_series(LineSeries::new(finite.iter().map(|p| (p.lr, p.smoothed)), BLUE.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label("smoothed loss")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));

            if let Some(s) = suggestion {
                let y = self.points[s.index].smoothed;
                chart
                    .draw_series(std::iter::once(PathElement::new([(s.lr, y_lo), (s.lr, y_hi)], RED.mix(0.35))))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(std::iter::once(Circle::new((s.lr, y), 6, RED.filled())))
                    .map_err(|e| e.to_string())?
                    .label(format!("suggested lr {}", format_sci(s.lr)))
                    .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((s.lr, y))
                            + Text::new(format!("lr = {}", format_sci(s.lr)), (10, -22), (FONT_FAMILY, 16).into_font()),
                    ))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font((FONT_FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(|e| e.to_string())
        });
        drawn.map_err(|e| match e {
            DrawError::Font => FinderError::Font { path: path.to_path_buf() },
            DrawError::Draw(message) => FinderError::Draw { path: path.to_path_buf(), message },
        })?;

        write_rgb_png(path, width, height, &buffer).map_err(|e| match e {
            PngError::Io(source) => FinderError::Io { path: path.to_path_buf(), source },
            PngError::Encode(source) => FinderError::Encode { path: path.to_path_buf(), source },
        })
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// `numpy.gradient(y, x)` with `edge_order=1`: second-order central differences for uneven
/// spacing at interior points, one-sided first differences at the two ends. Needs `x.len() >= 2`.
fn gradient(x: &[f64], y: &[f64]) -> Vec<f64> {
    let n = x.len().min(y.len());
    if n < 2 {
        return vec![f64::NAN; n];
    }
    let mut g = Vec::with_capacity(n);
    g.push((y[1] - y[0]) / (x[1] - x[0]));
    for i in 1..n - 1 {
        let hs = x[i] - x[i - 1];
        let hd = x[i + 1] - x[i];
        g.push((hs * hs * y[i + 1] + (hd * hd - hs * hs) * y[i] - hd * hd * y[i - 1]) / (hs * hd * (hd + hs)));
    }
    g.push((y[n - 1] - y[n - 2]) / (x[n - 1] - x[n - 2]));
    g
}

/// Formats like Python's `f"{v:.2e}"`: two decimals, a signed exponent of at least two digits
/// (`5.62e-03`, `1.00e+01`); `nan`, `inf`, `-inf` for non-finite values.
pub fn format_sci(v: f64) -> String {
    if v.is_nan() {
        return "nan".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let s = format!("{v:.2e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_documented_values() {
        let c = FinderConfig::default();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!((c.min_lr, c.max_lr, c.num_steps, c.mode), (1e-7, 10.0, 100, SweepMode::Exponential));
        assert_eq!((c.smoothing, c.divergence_factor, c.skip_begin, c.skip_end), (0.98, 4.0, 10, 1));
    }

    #[test]
    fn serde_uses_lowercase_modes_defaults_and_rejects_unknown_fields() {
        let c: FinderConfig = serde_json::from_str(r#"{"mode": "linear", "max_lr": 1.0}"#).unwrap();
        assert_eq!(c, FinderConfig { mode: SweepMode::Linear, max_lr: 1.0, ..FinderConfig::default() });
        assert_eq!(serde_json::to_value(SweepMode::Exponential).unwrap(), "exponential");
        let err = serde_json::from_str::<FinderConfig>(r#"{"max_lrr": 1.0}"#).unwrap_err();
        assert!(err.to_string().contains("max_lrr"), "{err}");
    }

    #[test]
    fn validate_names_each_bad_key_and_value() {
        let c = FinderConfig {
            min_lr: 1.0,
            max_lr: 0.5,
            num_steps: 1,
            smoothing: 1.0,
            divergence_factor: 1.0,
            ..FinderConfig::default()
        };
        let errors = c.validate();
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["max_lr", "num_steps", "smoothing", "divergence_factor"]);
        assert!(errors[0].1.contains("0.5") && errors[0].1.contains("min_lr = 1"), "{}", errors[0].1);
        assert!(errors[1].1.contains("at least 2") && errors[1].1.contains("= 13"), "{}", errors[1].1);

        let c = FinderConfig { min_lr: f64::NAN, max_lr: f64::INFINITY, ..FinderConfig::default() };
        let keys: Vec<String> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["min_lr", "max_lr"]);

        let c = FinderConfig { num_steps: 13, ..FinderConfig::default() };
        let errors = c.validate();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].1.contains("num_steps = 13") && errors[0].1.contains("more than"), "{}", errors[0].1);
        assert!(FinderConfig { num_steps: 14, ..FinderConfig::default() }.validate().is_empty());
        assert!(FinderConfig { smoothing: 0.0, ..FinderConfig::default() }.validate().is_empty());
    }

    #[test]
    fn gradient_matches_numpy() {
        // numpy's interior coefficients with d1 = x[i] − x[i−1], d2 = x[i+1] − x[i]:
        // a = −d2 / (d1 (d1 + d2)), b = (d2 − d1) / (d1 d2), c = d1 / (d2 (d1 + d2)).
        // x = [0, 1, 3, 4], y = [1, 4, 9, 25]:
        //   i = 1 (d1 = 1, d2 = 2): −2/3 · 1 + 1/2 · 4 + 1/6 · 9 = 17/6
        //   i = 2 (d1 = 2, d2 = 1): −1/6 · 4 − 1/2 · 9 + 2/3 · 25 = 23/2
        // and one-sided differences (4 − 1) / 1 = 3, (25 − 9) / 1 = 16 at the ends.
        let g = gradient(&[0.0, 1.0, 3.0, 4.0], &[1.0, 4.0, 9.0, 25.0]);
        let expected = [3.0, 17.0 / 6.0, 23.0 / 2.0, 16.0];
        for (a, b) in g.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{g:?}");
        }
        // Exact for a quadratic at interior points, whatever the spacing.
        let x = [0.0, 0.3, 1.0, 1.2, 2.5];
        let y: Vec<f64> = x.iter().map(|v| v * v).collect();
        let g = gradient(&x, &y);
        for i in 1..4 {
            assert!((g[i] - 2.0 * x[i]).abs() < 1e-12, "{g:?}");
        }
    }

    #[test]
    fn record_after_finish_is_ignored() {
        let mut f = LrFinder::new(FinderConfig { num_steps: 2, skip_begin: 0, skip_end: 0, ..FinderConfig::default() });
        assert_eq!(f.record(1.0), Flow::Continue);
        assert_eq!(f.record(1.0), Flow::Done);
        assert_eq!(f.next_lr(), None);
        assert_eq!(f.record(5.0), Flow::Done);
        assert_eq!(f.points().len(), 2);
    }

    #[test]
    fn negative_losses_do_not_trigger_divergence() {
        let mut f = LrFinder::new(FinderConfig { smoothing: 0.0, ..FinderConfig::default() });
        for loss in [-1.0, -2.0, -3.0, -2.5, -2.0] {
            assert_eq!(f.record(loss), Flow::Continue);
        }
        // best −3, factor 4: diverged once the loss rises by more than 3 · |−3| = 9.
        assert_eq!(f.record(5.9), Flow::Continue);
        assert_eq!(f.record(6.1), Flow::Diverged);
    }
}
