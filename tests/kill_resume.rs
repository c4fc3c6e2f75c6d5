//! Fault injection: SIGKILL a training process at 20+ random instants, saves included, and
//! auto-resume every time. No torn checkpoint is ever loaded, at most one save interval of
//! work is lost per kill, and the final result equals an uninterrupted run's.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
const STEPS: u64 = 1000;
const SAVE_EVERY: u64 = 5;

fn toy(out: &Path) -> Command {
    let mut c = support::toy();
    c.args(["--max-steps", &STEPS.to_string(), "--batch-size", "16", "--grad-accum", "2", "--val-every", "20"])
        .args(["--set", &format!("checkpoint.every_n_steps={SAVE_EVERY}"), "--set", "checkpoint.keep_last_n_steps=2"])
        .args(["--set", "logging.progress=off", "--set", "logging.tensorboard=false"])
        .arg("--output-dir")
        .arg(out)
        .stdout(Stdio::null());
    c
}

fn events(dir: &Path) -> Vec<Value> {
    support::events(dir, None)
}

/// Tensors of a checkpoint (header metadata differs between runs: creation time, ids).
fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__" && !k.starts_with("__trainyard__"))
        .map(|(k, v)| {
            let (a, b) =
                (v["data_offsets"][0].as_u64().unwrap() as usize, v["data_offsets"][1].as_u64().unwrap() as usize);
            (k.clone(), bytes[8 + n + a..8 + n + b].to_vec())
        })
        .collect()
}

fn last_losses(evs: &[Value]) -> BTreeMap<u64, f64> {
    evs.iter()
        .filter(|e| e["event"] == "train_step")
        .map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap()))
        .collect()
}

/// xorshift64*: reproducible kill instants without a dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn sigkill_at_random_instants_never_loses_more_than_a_save_interval() {
    let root = tempfile::tempdir().unwrap();
    let straight = root.path().join("straight");
    let status = toy(&straight).status().unwrap();
    assert!(status.success());
    // Saves follow optimizer steps, not micro-batches (2 per step here): one per 5 steps.
    let interval_saves: Vec<u64> = events(&straight)
        .iter()
        .filter(|e| e["event"] == "checkpoint" && e["reasons"].as_array().unwrap().iter().any(|r| r == "step_interval"))
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(interval_saves, (1..=STEPS / SAVE_EVERY).map(|i| i * SAVE_EVERY).collect::<Vec<_>>());

    let out = root.path().join("killed");
    let seed = 0x5eed_u64;
    let mut rng = Rng(seed);
    let mut kills = 0;
    let mut attempts = 0;
    let mut inside_saves = 0;
    while kills < 24 {
        attempts += 1;
        assert!(attempts < 200, "too many attempts (seed {seed:#x})");
        let logged = events(&out);
        let before = last_losses(&logged).keys().max().copied().unwrap_or(0);
        let mut child = toy(&out)
            .arg("--auto-resume")
            // Widen the window between a save's write and its rename, so kills land inside saves.
            .args(["--set", "debug.save_delay_ms=4"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(5 + rng.below(100));
        let start = Instant::now();
        let mut exited = None;
        while start.elapsed() < delay {
            if let Some(s) = child.try_wait().unwrap() {
                exited = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let finished = match exited {
            Some(s) => {
                assert!(s.success(), "run exited with {s} (seed {seed:#x})");
                true
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                false
            }
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!stderr.contains("corrupt"), "a corrupt checkpoint was found: {stderr}");
        // A kill inside a save leaves its temporary file, which the next start removes.
        inside_saves += usize::from(stderr.contains("unfinished temporary"));
        assert!(!stderr.contains("error"), "{stderr}");

        // The resume of this attempt (if any) started at most one save interval before the
        // last step the previous attempt logged.
        // Only this attempt's own resume event counts (an attempt killed before it logs one
        // leaves the previous attempt's as the last in the file).
        let evs = events(&out);
        if let Some(resume) = evs.iter().skip(logged.len()).find(|e| e["event"] == "resume") {
            let at = resume["step"].as_u64().unwrap();
            if at + SAVE_EVERY < before {
                let tail: Vec<String> = evs
                    .iter()
                    .filter(|e| e["event"] != "train_step" && e["event"] != "memory")
                    .map(|e| e.to_string())
                    .collect();
                panic!(
                    "resumed at step {at} after step {before} had been reached (seed {seed:#x}); events:\n{}",
                    tail[tail.len().saturating_sub(12)..].join("\n")
                );
            }
        }
        assert!(!finished, "the run finished before 24 kills (seed {seed:#x}); lengthen it");
    }
    // Let the last attempt run to the end.
    let status = toy(&out).arg("--auto-resume").status().unwrap();
    assert!(status.success());

    let evs = events(&out);
    let resumes = evs.iter().filter(|e| e["event"] == "resume").count();
    eprintln!("{kills} kills, {resumes} resumes, {inside_saves} kills inside a save");
    assert!(inside_saves >= 1, "no kill landed inside a save");
    assert!(resumes >= 10, "only {resumes} resumes happened: kills landed too early to test much");
    assert_eq!(last_losses(&evs), last_losses(&events(&straight)), "per-step losses equal the uninterrupted run");
    let latest = |d: &Path| tensors(&d.join("checkpoints/checkpoint_latest.safetensors"));
    assert_eq!(latest(&out), latest(&straight), "final weights equal the uninterrupted run's");
    // No temporary file survives, and retention kept exactly the last two step checkpoints.
    let names: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint_step_") || n.contains(".tmp-"))
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec!["checkpoint_step_1000.safetensors", "checkpoint_step_995.safetensors"]);
}

#[test]
fn a_torn_last_line_does_not_swallow_the_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let run = |steps: &str, resume: bool| {
        let mut c = support::toy();
        c.args(["--max-steps", steps, "--set", "logging.progress=off"]).arg("-o").arg(&out);
        if resume {
            c.arg("--auto-resume");
        }
        assert!(c.status().unwrap().success());
    };
    run("12", false);
    // Simulate a kill in the middle of writing an event.
    let mut log = std::fs::OpenOptions::new().append(true).open(out.join("training.jsonl")).unwrap();
    std::io::Write::write_all(&mut log, b"{\"event\":\"train_st").unwrap();
    drop(log);
    run("14", true);
    let resume = events(&out).into_iter().find(|e| e["event"] == "resume").expect("the resume event is readable");
    assert_eq!(resume["step"], 12);
}
