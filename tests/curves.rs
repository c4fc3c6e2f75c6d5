//! `curves.png` in the run directory: written at each validation and at the end of a run, of
//! the size `CURVES_SIZE` states, drawn from exactly what `training.jsonl` holds (the series are
//! compared with the log parsed here line by line), and still right after an interrupted run is
//! resumed and after a run is rewound to an earlier checkpoint (each step once, with the values
//! of the run that was kept).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use trainer::Trainer;
use trainer::backend::CpuBackend;
use trainer::curves::{BestPoint, CURVES_FILE, CURVES_SIZE, Curves, MOVING_AVERAGE_WINDOW, MarkerKind, series};
use trainer::toy::ToyTask;

mod support;

use support::toy;

fn run(cmd: &mut Command) -> (i32, String) {
    let Output { status, stderr, .. } = cmd.output().unwrap();
    (status.code().unwrap_or(-1), String::from_utf8(stderr).unwrap())
}

/// Width and height from the PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |r: std::ops::Range<usize>| u32::from_be_bytes(bytes[r].try_into().unwrap());
    (be(16..20), be(20..24))
}

/// `training.jsonl` parsed here, independently of the trainer's reader: every line a JSON object.
fn raw_events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("training.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// What the curves must be for a log whose steps each ran once: the train_step and validation
/// values in file order, the moving average computed here, the last `is_best` validation.
fn expected(events: &[Value]) -> Curves {
    let num = |v: &Value| v.as_f64().unwrap();
    let of = |kind: &'static str| events.iter().filter(move |e| e["event"] == kind);
    let loss: Vec<(u64, f64)> = of("train_step").map(|e| (e["step"].as_u64().unwrap(), num(&e["loss"]))).collect();
    let lr = of("train_step").map(|e| (e["step"].as_u64().unwrap(), num(&e["lr"]))).collect();
    let mut average = Vec::new();
    for i in 0..loss.len() {
        let window = &loss[i.saturating_sub(MOVING_AVERAGE_WINDOW - 1)..=i];
        average.push((loss[i].0, window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64));
    }
    let mut metrics: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for e in of("validation") {
        for (k, v) in e["metrics"].as_object().unwrap() {
            metrics.entry(k.clone()).or_default().push((e["step"].as_u64().unwrap(), num(v)));
        }
    }
    let selection = of("run_start").next_back().map(|e| e["selection"]["metric"].as_str().unwrap().to_string());
    let best = of("validation").rfind(|e| e["is_best"] == true).map(|e| BestPoint {
        step: e["step"].as_u64().unwrap(),
        metric: selection.clone().unwrap(),
        value: num(&e["metrics"][selection.as_deref().unwrap()]),
    });
    Curves { loss, loss_average: average, lr, metrics, selection, best, markers: Vec::new() }
}

/// The curves of a run directory, by the trainer's reader and `series`.
fn curves_of(dir: &Path) -> Curves {
    series(&trainer::telemetry::read_events(dir).unwrap().events)
}

#[test]
fn a_run_writes_curves_png_of_the_stated_size_drawn_from_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (code, err) =
        run(toy().args(["--max-steps", "70", "--val-every", "20", "--batch-size", "8"]).arg("-o").arg(&out));
    assert_eq!(code, 0, "{err}");
    assert_eq!(png_size(&out.join(CURVES_FILE)), CURVES_SIZE);

    let events = raw_events(&out);
    let c = curves_of(&out);
    let want = expected(&events);
    assert_eq!(c.loss.len(), 70);
    assert_eq!(c.loss, want.loss);
    assert_eq!(c.loss_average, want.loss_average);
    assert_eq!(c.lr, want.lr);
    // Validations at 20, 40, 60 and the final weights at 70.
    assert_eq!(c.metrics["val_loss"].iter().map(|p| p.0).collect::<Vec<_>>(), [20, 40, 60, 70]);
    assert_eq!(c.metrics, want.metrics);
    assert_eq!(c.selection.as_deref(), Some("val_loss"));
    assert!(c.best.is_some());
    assert_eq!(c.best, want.best);
    assert!(c.markers.is_empty(), "{:?}", c.markers);
}

/// Whether `curves.png` existed as each validation began.
struct SeenAtValidation {
    png: PathBuf,
    seen: RefCell<Vec<bool>>,
}

impl support::ToyHooks for SeenAtValidation {
    fn before_validate(&self) -> Result<(), String> {
        self.seen.borrow_mut().push(self.png.is_file());
        Ok(())
    }
}

#[test]
fn curves_are_redrawn_at_each_validation_and_logging_curves_false_turns_them_off() {
    for enabled in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = support::toy_config(dir.path());
        c.logging.curves = enabled;
        let png = dir.path().join(CURVES_FILE);
        let task =
            support::HookedToy { inner: ToyTask::new(&c), hooks: SeenAtValidation { png, seen: Vec::new().into() } };
        Trainer::new(c.loop_config()).run::<CpuBackend, _>(&task, &Default::default()).unwrap();
        let seen = task.hooks.seen.into_inner();
        let png = dir.path().join(CURVES_FILE);
        if enabled {
            // Validations at 25, 50, 75, 100: none before the first, one from each on.
            assert_eq!(seen, [false, true, true, true]);
            assert_eq!(png_size(&png), CURVES_SIZE);
        } else {
            assert_eq!(seen, [false; 4]);
            assert!(!png.exists());
        }
    }
}

fn wait_for_steps(out: &Path, n: usize) {
    let start = Instant::now();
    while support::events(out, Some("train_step")).len() < n {
        assert!(start.elapsed() < Duration::from_secs(60), "the run did not start training");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn after_an_interrupt_a_resume_and_a_rewind_each_step_is_drawn_once_with_the_kept_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let common = ["--val-every", "10", "--batch-size", "8", "--set", "checkpoint.every_n_steps=10"];
    let mut child = toy()
        .args(common)
        .args(["--max-steps", "100000000", "--set", "logging.progress=off"])
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_steps(&out, 25);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(143));
    let stopped = support::events(&out, Some("interrupted"))[0]["step"].as_u64().unwrap();
    assert_eq!(png_size(&out.join(CURVES_FILE)), CURVES_SIZE, "drawn at the end of the interrupted run");
    let c = curves_of(&out);
    assert_eq!(c.loss.last().map(|p| p.0), Some(stopped));
    assert_eq!(c.markers.iter().map(|m| (m.step, m.kind)).collect::<Vec<_>>(), [(stopped, MarkerKind::Interrupted)]);

    // --auto-resume continues from the interrupt's checkpoint to 15 steps further.
    let end = stopped + 15;
    std::fs::remove_file(out.join(CURVES_FILE)).unwrap();
    let (code, err) =
        run(toy().args(common).args(["--max-steps", &end.to_string(), "--auto-resume"]).arg("-o").arg(&out));
    assert_eq!(code, 0, "{err}");
    assert_eq!(png_size(&out.join(CURVES_FILE)), CURVES_SIZE, "drawn again by the resumed run");
    let events = raw_events(&out);
    let c = curves_of(&out);
    let steps: Vec<u64> = c.loss.iter().map(|p| p.0).collect();
    assert_eq!(steps, (1..=end).collect::<Vec<_>>(), "each step once");
    // Nothing ran twice: the log read line by line gives the same series.
    let want = expected(&events);
    assert_eq!(
        (&c.loss, &c.loss_average, &c.lr, &c.metrics, &c.best),
        (&want.loss, &want.loss_average, &want.lr, &want.metrics, &want.best)
    );
    let kinds: Vec<(u64, MarkerKind)> = c.markers.iter().map(|m| (m.step, m.kind)).collect();
    assert_eq!(kinds, [(stopped, MarkerKind::Interrupted), (stopped, MarkerKind::Resume)]);

    // Rewound to the step-10 checkpoint with another learning rate: steps 11.. run again, and
    // the curves are the rewound run's, not the first values of those steps.
    let first_pass: BTreeMap<u64, f64> = c.loss.iter().copied().collect();
    let step_10 = out.join("checkpoints/checkpoint_step_10.safetensors");
    let (code, err) = run(toy()
        .args(common)
        .args(["--max-steps", &end.to_string(), "--lr", "0.003", "--resume"])
        .arg(&step_10)
        .arg("-o")
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    assert_eq!(png_size(&out.join(CURVES_FILE)), CURVES_SIZE);
    let events = raw_events(&out);
    let c = curves_of(&out);
    assert_eq!(c.loss.iter().map(|p| p.0).collect::<Vec<_>>(), (1..=end).collect::<Vec<_>>(), "each step once");
    // The kept values: the first process's up to step 10, then everything the rewound process
    // logged (after the last `resume` event).
    let rewound_at = events.iter().rposition(|e| e["event"] == "resume").unwrap();
    let first_resume = events.iter().position(|e| e["event"] == "resume").unwrap();
    let step = |e: &Value| e["step"].as_u64().unwrap();
    let kept: Vec<&Value> = events[..first_resume]
        .iter()
        .filter(|e| e["step"].as_u64().is_some_and(|s| s <= 10))
        .chain(&events[rewound_at..])
        .collect();
    let of = |kind: &'static str| kept.iter().filter(move |e| e["event"] == kind);
    let loss: Vec<(u64, f64)> = of("train_step").map(|e| (step(e), e["loss"].as_f64().unwrap())).collect();
    let lr: Vec<(u64, f64)> = of("train_step").map(|e| (step(e), e["lr"].as_f64().unwrap())).collect();
    let val: Vec<(u64, f64)> =
        of("validation").map(|e| (step(e), e["metrics"]["val_loss"].as_f64().unwrap())).collect();
    assert_eq!(loss.len() as u64, end);
    assert_eq!(c.loss, loss);
    assert_eq!(c.lr, lr);
    assert_eq!(c.metrics["val_loss"], val);
    assert_eq!(val.first().map(|v| v.0), Some(10));
    // Step 11's loss is that of the step-10 weights either way; from step 12 on it differs.
    assert_eq!(c.loss[10].1, first_pass[&11]);
    assert_ne!(c.loss[11].1, first_pass[&12], "the rewound run trained with another learning rate");
    let best = of("validation").rfind(|e| e["is_best"] == true).unwrap();
    let best =
        BestPoint { step: step(best), metric: "val_loss".into(), value: best["metrics"]["val_loss"].as_f64().unwrap() };
    assert_eq!(c.best, Some(best));
    // The markers after step 10 went with the steps they belonged to.
    assert_eq!(c.markers.iter().map(|m| (m.step, m.kind)).collect::<Vec<_>>(), [(10, MarkerKind::Resume)]);
}

#[test]
fn drawing_a_thousand_step_log_is_cheap_enough_for_every_validation() {
    // A synthetic 1000-step log (a validation every 20 steps) as the loop writes it.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(r#"{"event":"run_start","selection":{"metric":"val_loss","mode":"min"}}"#);
    text.push('\n');
    for s in 1..=1000u64 {
        let loss = 2.0 / (s as f64).sqrt();
        text.push_str(&format!(
            r#"{{"event":"train_step","step":{s},"loss":{loss},"lr":{},"grad_norm":1.0,"metrics":{{"mae":{}}}}}"#,
            1e-3 * (1.0 - s as f64 / 1001.0),
            loss / 2.0
        ));
        text.push('\n');
        if s % 20 == 0 {
            text.push_str(&format!(
                r#"{{"event":"validation","step":{s},"metrics":{{"val_loss":{loss},"mae":{}}},"is_best":true}}"#,
                loss / 3.0
            ));
            text.push('\n');
        }
    }
    std::fs::write(dir.path().join("training.jsonl"), text).unwrap();
    let png = dir.path().join(CURVES_FILE);
    let start = Instant::now();
    let c = trainer::curves::write_curves(dir.path(), &png).unwrap();
    let total = start.elapsed();
    let start = Instant::now();
    let again = curves_of(dir.path());
    let read = start.elapsed();
    assert_eq!(again, c);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!("curves.png of a 1000-step log: {:.1} ms ({:.1} ms reading the log)", ms(total), ms(read));
    assert_eq!((c.loss.len(), c.metrics["val_loss"].len()), (1000, 50));
    assert_eq!(c.best.map(|b| b.step), Some(1000));
    assert_eq!(png_size(&png), CURVES_SIZE);
}
