//! `tune` end to end on the toy stage: trials as normal runs, pruning with checkpoints kept,
//! results on disk, a study SIGKILLed mid-trial (and mid-record) resuming to the result of an
//! uninterrupted one, two drivers sharing a study, and bad space files refused by key.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tune::{Journal, TrialState};

mod support;

const BASE: &str = "configs/tune/toy.yaml";
const SPACE: &str = "configs/tune/toy_space.yaml";

fn tune(study: &Path, extra: &[&str]) -> Command {
    let mut c = support::toy();
    c.args(["tune", "--config", BASE, "--space", SPACE, "--study"]).arg(study).args(extra);
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "tune failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// summary.csv as rows of column → value.
fn summary(study: &Path) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_path(study.join("summary.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| headers.iter().zip(r.unwrap().iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect())
        .collect()
}

fn journal_lines(study: &Path) -> Vec<Value> {
    fs::read_to_string(study.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn or bad journal line {l:?}: {e}")))
        .collect()
}

fn starts(lines: &[Value]) -> Vec<(u64, u64)> {
    lines
        .iter()
        .filter(|l| l["event"] == "trial_started")
        .map(|l| (l["number"].as_u64().unwrap(), l["attempt"].as_u64().unwrap()))
        .collect()
}

#[test]
fn a_study_runs_prunes_keeps_checkpoints_and_writes_its_results() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("study");
    let out = run(tune(&study, &["--n-trials", "6"]));
    let stdout = String::from_utf8_lossy(&out.stdout);

    let (_, replayed) = Journal::open(&study).unwrap();
    assert_eq!(replayed.trials.len(), 6);
    let rows = summary(&study);
    assert_eq!(rows.len(), 6);
    let mut pruned = 0;
    for (t, row) in replayed.trials.iter().zip(&rows) {
        let name = format!("trial_{:03}", t.number);
        // Trial N trains with the base seed (100) + N, with the trial's values.
        let dir = match t.state {
            TrialState::Complete => study.join("complete").join(&name),
            TrialState::Pruned => study.join("pruned").join(&name),
            other => panic!("trial {} ended {other:?}", t.number),
        };
        let config: serde_yaml::Value =
            serde_yaml::from_str(&fs::read_to_string(dir.join("config.yaml")).unwrap()).unwrap();
        assert_eq!(config["seed"].as_u64(), Some(100 + t.number), "{name}");
        assert_eq!(config["optimizer"]["lr"].as_f64(), t.params["optimizer.lr"].as_f64(), "{name}");
        assert_eq!(config["model"]["hidden"].as_u64(), t.params["model.hidden"].as_u64(), "{name}");
        assert!(dir.join("checkpoints/checkpoint_latest.safetensors").exists(), "{name} kept its checkpoint");
        assert!(!study.join("trials").join(&name).exists());
        // Every validation was reported at its 0-based epoch, with the run's own value.
        let validations: Vec<f64> = support::events(&dir, Some("validation"))
            .iter()
            .map(|e| e["metrics"]["val_loss"].as_f64().unwrap())
            .collect();
        let reported: Vec<f64> = t.intermediate.values().copied().collect();
        assert_eq!(reported, validations, "{name}");
        assert_eq!(
            t.intermediate.keys().copied().collect::<Vec<_>>(),
            (0..validations.len() as u64).collect::<Vec<_>>()
        );
        let best = reported.iter().copied().fold(f64::INFINITY, f64::min);
        match t.state {
            TrialState::Complete => {
                assert_eq!(validations.len(), 8, "{name} ran all epochs");
                assert_eq!(t.value, Some(best));
                assert_eq!(row["value"].parse::<f64>().unwrap(), best);
                assert_eq!(row["state"], "complete");
            }
            _ => {
                pruned += 1;
                assert!(validations.len() < 8, "{name} stopped when pruned");
                assert_eq!(t.pruned_at, Some(validations.len() as u64 - 1));
                assert_eq!(row["state"], "pruned");
                assert_eq!(row["epochs_run"], validations.len().to_string());
            }
        }
    }
    assert!(pruned >= 1, "Hyperband pruned nothing in 6 trials:\n{stdout}");
    // The best trial's values as a config: the base config with them.
    let best = tune::report::best_trial(&replayed).unwrap();
    let best_config: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(study.join("best_config.yaml")).unwrap()).unwrap();
    assert_eq!(best_config["optimizer"]["lr"].as_f64(), best.params["optimizer.lr"].as_f64());
    assert_eq!(best_config["training"]["epochs"].as_u64(), Some(8));
    let best_params: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(study.join("best_params.yaml")).unwrap()).unwrap();
    assert_eq!(best_params["model"]["hidden"].as_u64(), best.params["model.hidden"].as_u64());
    for png in ["history.png", "intermediate.png"] {
        assert_eq!(&fs::read(study.join(png)).unwrap()[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
    assert!(stdout.contains(&format!("best: trial {}", best.number)), "{stdout}");

    // The same command again: nothing to do, nothing rewritten in the journal.
    let before = fs::read(study.join("journal.jsonl")).unwrap();
    run(tune(&study, &["--n-trials", "6"]));
    assert_eq!(fs::read(study.join("journal.jsonl")).unwrap(), before);
    // Another search in the same directory is refused, naming what differs.
    let out = tune(&study, &["--n-trials", "6", "--sampler", "random"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds another study"), "{out:?}");
    assert_eq!(fs::read(study.join("journal.jsonl")).unwrap(), before);
}

/// Waits until `f` holds (polling), or panics after `secs`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`; comm may hold spaces, so read after the last `)`.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// SIGKILLs the driver and its trial processes in one `kill` call (driver first).
fn kill_study(driver: u32) {
    let mut pids = vec![driver];
    pids.extend(children_of(driver));
    assert!(pids.len() >= 2, "the driver has a trial process");
    let status = Command::new("kill").arg("-9").args(pids.iter().map(|p| p.to_string())).status().unwrap();
    assert!(status.success());
}

/// Columns of summary.csv that do not depend on how often a trial was attempted.
fn outcome(rows: &[BTreeMap<String, String>]) -> Vec<BTreeMap<String, String>> {
    rows.iter()
        .map(|r| r.iter().filter(|(k, _)| *k != "attempts").map(|(k, v)| (k.clone(), v.clone())).collect())
        .collect()
}

#[test]
fn a_study_killed_mid_trial_and_mid_record_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    // CMA-ES: every trial after the first is sampled from the finished ones, so the values of
    // the trials after the victim depend on its resumed result.
    let args = ["--n-trials", "4", "--sampler", "cmaes"];
    // Same directory name: Hyperband's brackets hash the study's name.
    let whole = tmp.path().join("a/study");
    run(tune(&whole, &args));
    // The victim: the first trial after trial 0 that is still running at epoch 2 (it has
    // samples in its history and a bracket with competitors).
    let (_, uninterrupted) = Journal::open(&whole).unwrap();
    let victim = uninterrupted
        .trials
        .iter()
        .find(|t| t.number > 0 && t.intermediate.contains_key(&3))
        .expect("a trial past epoch 3 besides trial 0")
        .number;

    let study = tmp.path().join("b/study");
    let mut c = tune(&study, &args);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    // The victim has been reported at epoch 2 (so its epoch-2 checkpoint exists): kill the
    // driver and the trial together, as a power cut or the OOM killer of a cgroup would.
    let mark = format!(r#""event":"intermediate","number":{victim},"step":2,"#);
    wait_for(120, "the victim's third report", || {
        assert!(child.try_wait().unwrap().is_none(), "the study ended before the kill");
        fs::read_to_string(study.join("journal.jsonl")).map(|t| t.contains(&mark)).unwrap_or(false)
    });
    kill_study(child.id());
    child.wait().unwrap();
    // ... and a record cut short, as a kill during a journal write leaves it.
    let mut journal = fs::OpenOptions::new().append(true).open(study.join("journal.jsonl")).unwrap();
    std::io::Write::write_all(&mut journal, format!(r#"{{"event":"intermediate","number":{victim},"st"#).as_bytes())
        .unwrap();
    drop(journal);

    let out = run(tune(&study, &args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("trial {victim} retried (attempt 1, from its checkpoint)")), "{stdout}");

    // Nothing lost, nothing duplicated: trials 0..4 once each, the victim retried under its
    // number with the same values.
    let lines = journal_lines(&study);
    let mut expected: Vec<(u64, u64)> = (0..4).map(|n| (n, 0)).collect();
    expected.insert(victim as usize + 1, (victim, 1));
    assert_eq!(starts(&lines), expected);
    let params: Vec<&Value> =
        lines.iter().filter(|l| l["event"] == "trial_started" && l["number"] == victim).map(|l| &l["params"]).collect();
    assert_eq!(params[0], params[1]);
    let failed: Vec<&Value> = lines.iter().filter(|l| l["event"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["reason"], "interrupted");

    // The retry resumed from its own checkpoint, not from scratch.
    let (_, replayed) = Journal::open(&study).unwrap();
    let name = format!("trial_{victim:03}");
    let dir = match replayed.trials[victim as usize].state {
        TrialState::Complete => study.join("complete").join(&name),
        _ => study.join("pruned").join(&name),
    };
    let resumes = support::events(&dir, Some("resume"));
    assert_eq!(resumes.len(), 1, "one resume in the victim's log");
    assert!(resumes[0]["step"].as_u64().unwrap() >= 32, "resumed from epoch 2 or later: {:?}", resumes[0]);

    // The result equals the uninterrupted study's, value for value, rungs included.
    assert_eq!(outcome(&summary(&study)), outcome(&summary(&whole)));
    assert_eq!(summary(&study)[victim as usize]["attempts"], "2");
    for (a, b) in replayed.trials.iter().zip(&uninterrupted.trials) {
        assert_eq!((&a.intermediate, &a.completed_rungs, a.state), (&b.intermediate, &b.completed_rungs, b.state));
    }
    assert_eq!(
        fs::read_to_string(study.join("best_params.yaml")).unwrap(),
        fs::read_to_string(whole.join("best_params.yaml")).unwrap()
    );
}

#[test]
fn two_drivers_share_one_study_without_reusing_a_trial_number() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("shared");
    // Create the study first so both drivers agree on its name.
    run(tune(&study, &["--n-trials", "1", "--sampler", "random", "--pruner", "none"]));
    let spawn = || {
        let mut c = tune(&study, &["--n-trials", "9", "--sampler", "random", "--pruner", "none"]);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let lines = journal_lines(&study);
    let started = starts(&lines);
    let numbers: Vec<u64> = started.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (0..9).collect::<Vec<_>>(), "each number once, in order: {started:?}");
    assert!(started.iter().all(|(_, attempt)| *attempt == 0));
    let (_, replayed) = Journal::open(&study).unwrap();
    assert!(replayed.trials.iter().all(|t| t.state == TrialState::Complete), "{:?}", replayed.trials);
    for t in &replayed.trials {
        assert!(study.join("complete").join(format!("trial_{:03}", t.number)).join("training.jsonl").exists());
    }
    assert_eq!(summary(&study).len(), 9);
}

fn refused(space_text: &str) -> (String, PathBuf) {
    let tmp = tempfile::tempdir().unwrap().keep();
    let space = tmp.join("space.yaml");
    fs::write(&space, space_text).unwrap();
    let study = tmp.join("study");
    let mut c = support::toy();
    c.args(["tune", "--config", BASE, "--n-trials", "2", "--space"]).arg(&space).arg("--study").arg(&study);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!study.exists(), "a refused study writes nothing");
    (String::from_utf8_lossy(&out.stderr).into_owned(), tmp)
}

#[test]
fn bad_space_files_are_one_clear_error_naming_the_key() {
    let (e, _) = refused("optimizer.lrr: {float: [0.001, 0.1]}\n");
    assert!(e.contains("optimizer.lrr"), "{e}");
    let (e, _) = refused("optimizer.lr: {float: [0.1, 0.001]}\n");
    assert!(e.contains("optimizer.lr") && e.contains("empty range"), "{e}");
    let (e, _) = refused("optimizer.lr: {float: [0.0, 0.1], log: true}\n");
    assert!(e.contains("optimizer.lr") && e.contains("log"), "{e}");
    // In range for the space, out of range for the config.
    // A --study that is a file.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("study.txt");
    fs::write(&file, "notes\n").unwrap();
    let out = tune(&file, &["--n-trials", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"), "{out:?}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "notes\n");
    let (e, _) = refused("model.hidden: {int: [0, 8]}\n");
    assert!(e.contains("model.hidden"), "{e}");
    let (e, _) = refused("study:\n  sampler: annealing\nspace:\n  optimizer.lr: {float: [0.001, 0.1]}\n");
    assert!(e.contains("study") && e.contains("annealing"), "{e}");
    let (e, _) = refused(
        "study:\n  pruner: {kind: hyperband, reduction_factor: 1}\nspace:\n  optimizer.lr: {float: [0.001, 0.1]}\n",
    );
    assert!(e.contains("study.pruner") && e.contains("reduction_factor"), "{e}");
}

#[test]
fn n_jobs_runs_trials_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("jobs");
    run(tune(&study, &["--n-trials", "6", "--n-jobs", "3", "--sampler", "random", "--pruner", "none"]));
    let lines = journal_lines(&study);
    // Three trials were started before the first one ended.
    let first_end = lines.iter().position(|l| l["event"] == "completed").unwrap();
    assert_eq!(lines[..first_end].iter().filter(|l| l["event"] == "trial_started").count(), 3);
    assert_eq!(starts(&lines).len(), 6);
    let (_, replayed) = Journal::open(&study).unwrap();
    assert!(replayed.trials.iter().all(|t| t.state == TrialState::Complete));
    // Random search is a function of (seed, trial number): the values do not depend on the
    // order the trials ran in.
    let sequential = tmp.path().join("seq/jobs");
    run(tune(&sequential, &["--n-trials", "6", "--sampler", "random", "--pruner", "none"]));
    let params = |dir: &Path| starts_params(&journal_lines(dir));
    assert_eq!(params(&study), params(&sequential));
    assert_eq!(outcome(&summary(&study)), outcome(&summary(&sequential)));
}

fn starts_params(lines: &[Value]) -> Vec<Value> {
    lines.iter().filter(|l| l["event"] == "trial_started").map(|l| l["params"].clone()).collect()
}

/// A study with a step budget (reports at optimizer steps) where one trial's run fails: the failure
/// is recorded with the run's own reason, the study goes on, and a re-run does not retry it.
#[test]
fn a_failing_trial_is_recorded_with_its_reason_and_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let space = tmp.path().join("space.yaml");
    // The smoke config overfits one batch and fails the run unless the loss drops by this factor.
    fs::write(&space, "debug.expected_loss_drop: {categorical: [1.0, 1.0e15]}\n").unwrap();
    let study = tmp.path().join("study");
    let command = || {
        let mut c = support::toy();
        c.args(["tune", "--config", "configs/smoke/toy.yaml", "--pruner", "none", "--sampler", "grid", "--space"])
            .arg(&space)
            .arg("--study")
            .arg(&study);
        c
    };
    let out = run(command());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (_, replayed) = Journal::open(&study).unwrap();
    assert_eq!(replayed.trials.len(), 2, "the grid's two points");
    let failed: Vec<_> = replayed.trials.iter().filter(|t| t.state == TrialState::Failed).collect();
    let complete: Vec<_> = replayed.trials.iter().filter(|t| t.state == TrialState::Complete).collect();
    assert_eq!((failed.len(), complete.len()), (1, 1));
    let reason = failed[0].fail_reason.as_deref().unwrap();
    assert!(reason.contains("overfit check failed"), "{reason}");
    assert!(stdout.contains(&format!("trial {} failed: ", failed[0].number)), "{stdout}");
    assert_eq!(failed[0].params["debug.expected_loss_drop"].as_f64(), Some(1e15));
    // Reports at optimizer steps 50, 100, 150 (val_every 50).
    assert_eq!(complete[0].intermediate.keys().copied().collect::<Vec<_>>(), vec![50, 100, 150]);
    let rows = summary(&study);
    let row = &rows[complete[0].number as usize];
    assert_eq!((row["state"].as_str(), row["steps_run"].as_str()), ("complete", "150"));
    assert_eq!(rows[failed[0].number as usize]["state"], "failed");
    // The failed trial's directory stays where it ran; a re-run leaves it failed.
    assert!(study.join("trials").join(format!("trial_{:03}", failed[0].number)).exists());
    run(command());
    assert_eq!(starts(&journal_lines(&study)).len(), 2);
}

/// Ctrl-C (SIGINT to the driver): the running trial checkpoints and is recorded interrupted, the
/// driver exits 130, and the same command resumes the trial from its checkpoint.
#[test]
fn sigint_stops_the_study_resumably() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("study");
    let args = ["--n-trials", "3", "--pruner", "none"];
    let mut c = tune(&study, &args);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_for(120, "trial 1's first report", || {
        assert!(child.try_wait().unwrap().is_none(), "the study ended before the signal");
        fs::read_to_string(study.join("journal.jsonl"))
            .map(|t| t.contains(r#""event":"intermediate","number":1,"step":0,"#))
            .unwrap_or(false)
    });
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let (_, replayed) = Journal::open(&study).unwrap();
    let t = &replayed.trials[1];
    assert_eq!((t.state, t.fail_reason.as_deref()), (TrialState::Failed, Some("interrupted")));
    assert!(study.join("trials/trial_001/checkpoints/checkpoint_latest.safetensors").exists());
    let out = run(tune(&study, &args));
    assert!(String::from_utf8_lossy(&out.stdout).contains("trial 1 retried"), "{out:?}");
    let (_, replayed) = Journal::open(&study).unwrap();
    assert!(replayed.trials.iter().all(|t| t.state == TrialState::Complete));
    assert_eq!(summary(&study)[1]["attempts"], "2");
}
