//! Everything a run reports: `training.jsonl` (one JSON object per event), `metrics.csv`
//! (one row per validation), TensorBoard scalars, and the progress display.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{LoggingConfig, ProgressMode};
use crate::task::Metrics;
use crate::tensorboard::EventWriter;

/// File name of the event log inside the run directory.
pub const JSONL: &str = "training.jsonl";
/// File name of the per-validation table inside the run directory.
pub const CSV: &str = "metrics.csv";
/// Directory of TensorBoard event files inside the run directory.
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// Memory in use, as reported by the best source available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReading {
    /// Bytes in use.
    pub bytes: u64,
    /// `rss` (process resident set) — device memory is reported where a backend exposes it.
    pub kind: &'static str,
}

/// Device (GPU) memory as the backend reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceMemory {
    /// The device, e.g. `cuda:0`.
    pub device: String,
    /// Bytes in live tensors (cubecl's `bytes_in_use`; PyTorch's "allocated").
    pub allocated: u64,
    /// Bytes the backend's pool holds from the driver (cubecl's `bytes_reserved`; PyTorch's
    /// "reserved").
    pub reserved: u64,
    /// Free device memory according to the driver, where it says (CUDA).
    pub free: Option<u64>,
    /// Total device memory according to the driver, where it says (CUDA).
    pub total: Option<u64>,
}

type DeviceProbe = Box<dyn Fn() -> Option<DeviceMemory> + Send + Sync>;

static DEVICE_PROBE: std::sync::RwLock<Option<DeviceProbe>> = std::sync::RwLock::new(None);

/// Installs the function that reads device memory for the backend in use (the GPU backends
/// install one in `backend::run_on`); `None` removes it.
pub fn set_device_memory_probe(probe: Option<DeviceProbe>) {
    *DEVICE_PROBE.write().unwrap_or_else(|p| p.into_inner()) = probe;
}

/// Device memory now, if a GPU backend is in use and reports it.
pub fn device_memory_now() -> Option<DeviceMemory> {
    DEVICE_PROBE.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|probe| probe())
}

/// Memory figures at one moment: the process's resident set, the machine's total and
/// available memory where the platform reports them (Linux `/proc/meminfo`), and the
/// device's allocated / reserved / free / total on GPU backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemorySnapshot {
    /// Process resident set in bytes.
    pub rss: Option<u64>,
    /// Memory available to new allocations on this machine, in bytes.
    pub free: Option<u64>,
    /// Total memory of this machine, in bytes.
    pub total: Option<u64>,
    /// Device memory, on a GPU backend.
    pub device: Option<DeviceMemory>,
}

impl MemorySnapshot {
    /// Reads the current figures.
    pub fn now() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
        };
        Self {
            rss: memory_now().map(|m| m.bytes),
            free: field("MemAvailable:"),
            total: field("MemTotal:"),
            device: device_memory_now(),
        }
    }

    /// Seed-style line: `GPU Memory (cuda:0): Allocated=4.23GB, Reserved=4.50GB, Free=1.77GB,
    /// Total=6.00GB` on a GPU backend, else `Memory (host, process RSS): RSS=0.42GB,
    /// Free=20.10GB, Total=23.40GB`.
    pub fn line(&self) -> String {
        let gb = |b: Option<u64>| b.map(|b| format!("{:.2}GB", b as f64 / 1e9)).unwrap_or_else(|| "n/a".into());
        match &self.device {
            Some(d) => format!(
                "GPU Memory ({}): Allocated={}, Reserved={}, Free={}, Total={}",
                d.device,
                gb(Some(d.allocated)),
                gb(Some(d.reserved)),
                gb(d.free),
                gb(d.total)
            ),
            None => format!(
                "Memory (host, process RSS): RSS={}, Free={}, Total={}",
                gb(self.rss),
                gb(self.free),
                gb(self.total)
            ),
        }
    }
}

/// Resident memory of this process, if the platform reports it.
pub fn memory_now() -> Option<MemoryReading> {
    memory_stats::memory_stats().map(|m| MemoryReading { bytes: m.physical_mem as u64, kind: "rss" })
}

pub use crate::policy::StepRecord;

/// Writes telemetry for one run.
pub struct Telemetry {
    jsonl: BufWriter<File>,
    csv: Option<(csv::Writer<File>, Vec<String>)>,
    csv_path: PathBuf,
    tb: Option<EventWriter>,
    progress: Progress,
    start: Instant,
    losses_since_val: (f64, u64),
    last_validation: Option<(u64, Metrics)>,
    /// `training.jsonl` and `curves.png`, with `logging.curves`.
    curves: Option<(PathBuf, PathBuf)>,
}

fn io_context(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Telemetry state a resumed run continues from (saved in checkpoints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetryCounters {
    /// Sum of step losses since the last validation (for `metrics.csv`'s `train_loss`).
    pub loss_sum: f64,
    /// Number of steps in that sum.
    pub loss_count: u64,
    /// Step of the last checkpoint.
    pub last_checkpoint: u64,
}

impl Telemetry {
    /// Opens the sinks in `run_dir` for a run of `total_steps` optimizer steps. With
    /// `resumed_at`, the run continues a checkpoint of that step: `training.jsonl` is appended
    /// to, `metrics.csv` keeps its columns and loses rows written after that step (they will
    /// be recomputed), and the counters continue.
    pub fn create(
        run_dir: &Path,
        logging: &LoggingConfig,
        total_steps: u64,
        resumed_at: Option<(u64, TelemetryCounters)>,
    ) -> io::Result<Self> {
        let paths = logging.paths(run_dir);
        let curves = logging.curves.then(|| (paths.jsonl.clone(), paths.curves.clone()));
        let jsonl_path = paths.jsonl;
        if let Some(dir) = jsonl_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_context(e, dir))?;
        }
        let mut jsonl =
            OpenOptions::new().create(true).append(true).open(&jsonl_path).map_err(|e| io_context(e, &jsonl_path))?;
        // A process killed mid-line leaves a torn last line; end it so the next event stays
        // on a line of its own.
        let len = jsonl.metadata().map_err(|e| io_context(e, &jsonl_path))?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8];
            let mut reader = File::open(&jsonl_path).map_err(|e| io_context(e, &jsonl_path))?;
            reader
                .seek(SeekFrom::End(-1))
                .and_then(|_| reader.read_exact(&mut last))
                .map_err(|e| io_context(e, &jsonl_path))?;
            if last[0] != b'\n' {
                jsonl.write_all(b"\n").map_err(|e| io_context(e, &jsonl_path))?;
            }
        }
        let tb = if logging.tensorboard {
            let dir = paths.tensorboard;
            Some(EventWriter::create(&dir).map_err(|e| io_context(e, &dir))?)
        } else {
            None
        };
        let csv_path = paths.csv;
        let mut progress = Progress::new(logging, total_steps);
        let mut losses_since_val = (0.0, 0);
        let mut csv = None;
        if let Some((step, counters)) = resumed_at {
            losses_since_val = (counters.loss_sum, counters.loss_count);
            progress.last_checkpoint = counters.last_checkpoint;
            progress.skip_to(step);
            csv = continue_csv(&csv_path, step).map_err(|e| io_context(e, &csv_path))?;
        }
        Ok(Self {
            jsonl: BufWriter::new(jsonl),
            csv,
            csv_path,
            tb,
            progress,
            start: Instant::now(),
            losses_since_val,
            last_validation: None,
            curves,
        })
    }

    /// Logs memory at a named point of step `step` (seed 000's `[Step N - Before Forward]`
    /// lines, and a `memory` event).
    pub fn memory(&mut self, step: u64, point: &str) -> io::Result<()> {
        let m = MemorySnapshot::now();
        self.progress.message(&format!("[Step {step} - {point}] {}", m.line()));
        self.event(
            "memory",
            json!({"step": step, "point": point, "rss_bytes": m.rss, "free_bytes": m.free, "total_bytes": m.total,
                   "device": m.device}),
        )
    }

    /// Shows a console line (above the progress bar, or as a log line).
    pub fn message(&self, line: &str) {
        self.progress.message(line);
    }

    /// The metrics of the validation at `step`, if one ran there.
    pub fn last_validation(&self, step: u64) -> Option<&Metrics> {
        self.last_validation.as_ref().filter(|(s, _)| *s == step).map(|(_, m)| m)
    }

    /// Counters to save in a checkpoint.
    pub fn counters(&self) -> TelemetryCounters {
        TelemetryCounters {
            loss_sum: self.losses_since_val.0,
            loss_count: self.losses_since_val.1,
            last_checkpoint: self.progress.last_checkpoint,
        }
    }

    /// Seconds since the sinks were opened.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Appends one event object (`{"event": kind, ...fields}`) to `training.jsonl` and flushes it,
    /// so a crash loses at most the line being written.
    pub fn event(&mut self, kind: &str, fields: Value) -> io::Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("event".into(), json!(kind));
        obj.insert("time".into(), json!(self.elapsed()));
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        serde_json::to_writer(&mut self.jsonl, &Value::Object(obj))?;
        self.jsonl.write_all(b"\n")?;
        self.jsonl.flush()
    }

    /// Reports one completed optimizer step.
    pub fn train_step(&mut self, r: &StepRecord<'_>) -> io::Result<()> {
        let memory = memory_now();
        self.losses_since_val.0 += r.loss;
        self.losses_since_val.1 += 1;
        self.event(
            "train_step",
            json!({
                "step": r.step,
                "epoch": r.epoch,
                "loss": r.loss,
                "lr": r.lr,
                "beta1": r.beta1,
                "grad_norm": r.grad_norm,
                "metrics": r.metrics,
                "elapsed": self.elapsed(),
                "step_time": r.step_time,
                "memory": memory.map(|m| json!({"kind": m.kind, "bytes": m.bytes})),
            }),
        )?;
        if let Some(tb) = &mut self.tb {
            let mut scalars: Vec<(String, f64)> =
                vec![("train/loss".into(), r.loss), ("train/lr".into(), r.lr), ("train/grad_norm".into(), r.grad_norm)];
            scalars.extend(r.metrics.iter().map(|(k, v)| (format!("train/{k}"), *v)));
            tb.scalars(r.step, scalars.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        if let Some(warning) = self.progress.on_step(r, memory) {
            self.event("memory_warning", warning)?;
        }
        Ok(())
    }

    /// Reports one validation: jsonl event, a `metrics.csv` row and TensorBoard scalars.
    pub fn validation(&mut self, step: u64, epoch: u64, lr: f64, metrics: &Metrics, is_best: bool) -> io::Result<()> {
        self.last_validation = Some((step, metrics.clone()));
        let (sum, n) = std::mem::take(&mut self.losses_since_val);
        let train_loss = if n > 0 { sum / n as f64 } else { f64::NAN };
        self.event(
            "validation",
            json!({"step": step, "epoch": epoch, "metrics": metrics, "train_loss": train_loss, "is_best": is_best}),
        )?;
        self.csv_row(step, epoch, lr, train_loss, metrics)?;
        if let Some(tb) = &mut self.tb {
            let tags: Vec<(String, f64)> = metrics.iter().map(|(k, v)| (format!("val/{k}"), *v)).collect();
            tb.scalars(step, tags.iter().map(|(k, v)| (k.as_str(), *v)))?;
            tb.flush()?;
        }
        self.progress.message(&format!(
            "validation at step {step}: {}",
            metrics.iter().map(|(k, v)| format!("{k}={v:.6}")).collect::<Vec<_>>().join(" ")
        ));
        self.draw_curves();
        Ok(())
    }

    /// Redraws `curves.png` from `training.jsonl` (with `logging.curves`). A failure, even a
    /// panic in the plotting library, is a warning: the run goes on.
    fn draw_curves(&self) {
        let Some((jsonl, png)) = &self.curves else { return };
        let drawn = std::panic::catch_unwind(|| crate::curves::write_curves(jsonl, png));
        match drawn {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(panic) => tracing::warn!(
                "cannot plot {}: the plotting library panicked: {}",
                png.display(),
                crate::oom::panic_text(panic.as_ref())
            ),
        }
    }

    fn csv_row(&mut self, step: u64, epoch: u64, lr: f64, train_loss: f64, metrics: &Metrics) -> io::Result<()> {
        if self.csv.is_none() {
            // Columns are fixed by the first validation so every row lines up.
            let columns: Vec<String> = metrics.keys().cloned().collect();
            let file = File::create(&self.csv_path).map_err(|e| io_context(e, &self.csv_path))?;
            let mut w = csv::Writer::from_writer(file);
            let mut header =
                vec!["step".to_string(), "epoch".into(), "elapsed".into(), "lr".into(), "train_loss".into()];
            header.extend(columns.iter().cloned());
            w.write_record(&header)?;
            self.csv = Some((w, columns));
        }
        let elapsed = self.elapsed();
        let (w, columns) = self.csv.as_mut().expect("created above");
        let mut row =
            vec![step.to_string(), epoch.to_string(), format!("{elapsed:.3}"), lr.to_string(), train_loss.to_string()];
        row.extend(columns.iter().map(|c| metrics.get(c).map(|v| v.to_string()).unwrap_or_default()));
        w.write_record(&row)?;
        w.flush()?;
        for extra in metrics.keys().filter(|k| !columns.contains(k)) {
            tracing::warn!(
                "metric {extra} appeared after the first validation; it is in training.jsonl but not in metrics.csv"
            );
        }
        Ok(())
    }

    /// Reports a save at `step`: the names written and the old ones retention removed.
    pub fn checkpoint(
        &mut self,
        step: u64,
        reasons: &[&str],
        written: &[PathBuf],
        removed: &[PathBuf],
    ) -> io::Result<()> {
        self.progress.last_checkpoint = step;
        self.event("checkpoint", json!({"step": step, "reasons": reasons, "written": written, "removed": removed}))
    }

    /// Flushes every sink, clears the progress display and redraws `curves.png`.
    pub fn finish(&mut self) -> io::Result<()> {
        self.progress.finish();
        if let Some(tb) = &mut self.tb {
            tb.flush()?;
        }
        self.jsonl.flush()?;
        self.draw_curves();
        Ok(())
    }
}

/// Reopens `metrics.csv` of a resumed run: keeps its header and the rows up to `step`.
fn continue_csv(path: &Path, step: u64) -> io::Result<Option<(csv::Writer<File>, Vec<String>)>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut reader = csv::Reader::from_path(path)?;
    let header: Vec<String> = reader.headers()?.iter().map(String::from).collect();
    let mut rows = Vec::new();
    for row in reader.records() {
        let row = row?;
        if row.get(0).and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s <= step) {
            rows.push(row);
        }
    }
    let tmp = path.with_extension("csv.tmp");
    let mut w = csv::Writer::from_path(&tmp)?;
    w.write_record(&header)?;
    for row in &rows {
        w.write_record(row)?;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, path)?;
    let file = OpenOptions::new().append(true).open(path)?;
    let columns = header.iter().skip(5).cloned().collect();
    Ok(Some((csv::WriterBuilder::new().has_headers(false).from_writer(file), columns)))
}

/// Moving averages and the step/ETA/memory display.
struct Progress {
    display: Display,
    total: u64,
    log_every: u64,
    times: VecDeque<f64>,
    losses: VecDeque<f64>,
    last_checkpoint: u64,
    memory_baseline: Option<u64>,
    baseline_step: u64,
    warned: bool,
}

enum Display {
    Bar(ProgressBar),
    Plain,
    Off,
}

/// Window of the moving averages (ETA and loss).
const WINDOW: usize = 50;

fn push(q: &mut VecDeque<f64>, v: f64) {
    if q.len() == WINDOW {
        q.pop_front();
    }
    q.push_back(v);
}

fn mean(q: &VecDeque<f64>) -> f64 {
    q.iter().sum::<f64>() / q.len().max(1) as f64
}

/// `1h02m03s`-style duration.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

fn format_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= 1024.0 * MIB {
        format!("{:.2} GiB", b as f64 / (1024.0 * MIB))
    } else {
        format!("{:.0} MiB", b as f64 / MIB)
    }
}

impl Progress {
    fn new(logging: &LoggingConfig, total: u64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let display = match (logging.progress, terminal) {
            (ProgressMode::Off, _) => Display::Off,
            (ProgressMode::Plain, _) | (ProgressMode::Auto, false) => Display::Plain,
            (ProgressMode::Bar, _) | (ProgressMode::Auto, true) => {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg}")
                        .expect("static template")
                        .progress_chars("=> "),
                );
                Display::Bar(bar)
            }
        };
        Self {
            display,
            total,
            log_every: logging.log_every,
            times: VecDeque::with_capacity(WINDOW),
            losses: VecDeque::with_capacity(WINDOW),
            last_checkpoint: 0,
            memory_baseline: None,
            // Memory is compared with its level once allocations have settled.
            baseline_step: (total / 10).clamp(1, 50),
            warned: false,
        }
    }

    /// Updates averages and display; returns a warning event when memory has grown > 50 %.
    fn on_step(&mut self, r: &StepRecord<'_>, memory: Option<MemoryReading>) -> Option<Value> {
        push(&mut self.times, r.step_time);
        push(&mut self.losses, r.loss);
        let eta = Duration::from_secs_f64(mean(&self.times) * self.total.saturating_sub(r.step) as f64);
        let mem = memory.map(|m| format!(" {} {}", m.kind, format_bytes(m.bytes))).unwrap_or_default();
        let line = format!(
            "loss(ma{}) {:.4} lr {:.2e} eta {} since-ckpt {}{mem}",
            self.losses.len(),
            mean(&self.losses),
            r.lr,
            format_duration(eta),
            r.step - self.last_checkpoint
        );
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(r.step);
                bar.set_message(line);
            }
            Display::Plain if r.step.is_multiple_of(self.log_every) || r.step == self.total || r.step == 1 => {
                tracing::info!("step {}/{} {line}", r.step, self.total);
            }
            _ => {}
        }
        let m = memory?;
        match self.memory_baseline {
            None if r.step >= self.baseline_step => self.memory_baseline = Some(m.bytes),
            Some(base) if !self.warned && m.bytes as f64 > base as f64 * 1.5 => {
                self.warned = true;
                let msg = format!(
                    "memory ({}) grew from {} at step {} to {} at step {} (> 50 %): possible leak",
                    m.kind,
                    format_bytes(base),
                    self.baseline_step,
                    format_bytes(m.bytes),
                    r.step
                );
                self.message(&msg);
                tracing::warn!("{msg}");
                return Some(json!({"step": r.step, "baseline_bytes": base, "bytes": m.bytes, "kind": m.kind}));
            }
            _ => {}
        }
        None
    }

    /// Starts the display at `step` (a resumed run); the memory baseline is taken afresh.
    fn skip_to(&mut self, step: u64) {
        self.baseline_step += step;
        if let Display::Bar(bar) = &self.display {
            bar.set_position(step);
        }
    }

    fn message(&self, msg: &str) {
        match &self.display {
            Display::Bar(bar) => bar.println(msg),
            Display::Plain => tracing::info!("{msg}"),
            Display::Off => {}
        }
    }

    fn finish(&mut self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }
}

/// One event of `training.jsonl`: a JSON object whose `event` field names its kind.
pub type Event = Value;

/// The events of one `training.jsonl`, as [`read_events`] found them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventLog {
    /// Every readable event, in file order.
    pub events: Vec<Event>,
    /// 1-based numbers of lines cut short by a killed process (the last line, or a line a
    /// restarted run closed before its `run_start`/`resume`), skipped.
    pub torn_lines: Vec<usize>,
}

impl EventLog {
    /// The events of one kind (`"train_step"`, `"validation"`, ...), in file order.
    pub fn of_kind(&self, kind: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }
}

/// Why `training.jsonl` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadEventsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A line that is not a JSON object and was not cut short by a kill.
    #[error("{path}:{line}: not a JSON event: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the JSON parser said.
        message: String,
    },
}

/// Reads a run's event log: `path` is `training.jsonl` itself or the directory holding it.
///
/// A torn line (a process killed mid-write) is tolerated and listed in
/// [`EventLog::torn_lines`] when it is the last line, or when the next event starts a new
/// process (`run_start`, `resume`), since a restarted run ends the torn line before it writes.
/// Any other line that is not a JSON object is an error naming the file and the line.
pub fn read_events(path: &Path) -> Result<EventLog, ReadEventsError> {
    let path = if path.is_dir() { path.join(JSONL) } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&path).map_err(|source| ReadEventsError::Io { path: path.clone(), source })?;
    let lines: Vec<&str> = text.lines().collect();
    let parse = |l: &str| {
        serde_json::from_str::<Value>(l)
            .map_err(|e| e.to_string())
            .and_then(|v| if v.is_object() { Ok(v) } else { Err(format!("expected an object, found {v}")) })
    };
    let mut log = EventLog::default();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse(line) {
            Ok(event) => log.events.push(event),
            Err(message) => {
                let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
                let restarted = next
                    .and_then(|l| parse(l).ok())
                    .is_some_and(|e| e["event"] == "run_start" || e["event"] == "resume");
                if next.is_none() || restarted {
                    log.torn_lines.push(i + 1);
                } else {
                    return Err(ReadEventsError::Malformed { path, line: i + 1, message });
                }
            }
        }
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_device_probe_turns_the_memory_line_into_the_seed_gpu_line() {
        use super::{DeviceMemory, MemorySnapshot, set_device_memory_probe};
        let host = MemorySnapshot::now();
        assert!(host.line().starts_with("Memory (host, process RSS): RSS="), "{}", host.line());
        set_device_memory_probe(Some(Box::new(|| {
            Some(DeviceMemory {
                device: "cuda:0".into(),
                allocated: 4_230_000_000,
                reserved: 4_500_000_000,
                free: Some(1_770_000_000),
                total: Some(6_000_000_000),
            })
        })));
        let gpu = MemorySnapshot::now();
        set_device_memory_probe(None);
        assert_eq!(gpu.line(), "GPU Memory (cuda:0): Allocated=4.23GB, Reserved=4.50GB, Free=1.77GB, Total=6.00GB");
        assert_eq!(gpu.device.as_ref().map(|d| d.reserved), Some(4_500_000_000));
        assert!(MemorySnapshot::now().device.is_none(), "removed again");
    }

    use super::*;

    #[test]
    fn durations_read_like_clocks() {
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h02m03s");
    }

    #[test]
    fn memory_growth_warns_once_past_half_again_the_baseline() {
        let logging = LoggingConfig { progress: ProgressMode::Off, ..LoggingConfig::default() };
        let mut p = Progress::new(&logging, 100);
        assert_eq!(p.baseline_step, 10);
        let metrics = Metrics::new();
        let mut warnings = Vec::new();
        for (step, mib) in [(1, 50), (10, 100), (20, 140), (30, 151), (40, 300)] {
            let r = StepRecord {
                step,
                epoch: 0,
                loss: 1.0,
                lr: 0.1,
                beta1: 0.9,
                grad_norm: 1.0,
                metrics: &metrics,
                step_time: 0.1,
            };
            if let Some(w) = p.on_step(&r, Some(MemoryReading { bytes: mib << 20, kind: "rss" })) {
                warnings.push(w["step"].as_u64().unwrap());
            }
        }
        assert_eq!(warnings, vec![30], "baseline 100 MiB at step 10; 151 MiB is the first reading over 150");
    }

    #[test]
    fn read_events_tolerates_torn_lines_and_names_a_malformed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JSONL);
        let a = r#"{"event":"run_start","step":0}"#;
        let b = r#"{"event":"train_step","step":1}"#;
        let r = r#"{"event":"resume","step":1}"#;
        std::fs::write(&path, format!("{a}\n{b}\n{{\"event\":\"train_st")).unwrap();
        let log = read_events(dir.path()).unwrap();
        assert_eq!((log.events.len(), log.torn_lines.clone()), (2, vec![3]));
        assert_eq!(log.of_kind("train_step").len(), 1);
        // A restarted run ends the torn line and goes on below it.
        std::fs::write(&path, format!("{a}\n{{\"event\":\"train_st\n{r}\n{b}\n")).unwrap();
        let log = read_events(&path).unwrap();
        assert_eq!((log.events.len(), log.torn_lines.clone()), (3, vec![2]));
        // A bad line in the middle of one run is an error naming the file and line.
        std::fs::write(&path, format!("{a}\nnot json\n{b}\n")).unwrap();
        let e = read_events(&path).unwrap_err().to_string();
        assert!(e.contains("training.jsonl:2"), "{e}");
        let e = read_events(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
