//! The study journal: every record kind round-trips (NaN and infinities included), a replayed
//! study prunes as the live one, torn and malformed lines, concurrent handles, a writer killed
//! with SIGKILL, interrupted trials and their retries.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;

use serde_json::{Map, Value, json};
use tune::journal::{INTERRUPTED, JOURNAL_FILE};
use tune::{Direction, HyperbandPruner, Journal, JournalError, Pruner, Record, Resource, StudyView, TrialState};

fn params(x: f64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("lr".into(), json!(x));
    m.insert("layers".into(), json!(3));
    m
}

fn new_study(dir: &Path) -> Journal {
    Journal::create(dir, "study", Direction::Minimize, json!({"pruner": "hyperband"})).unwrap().0
}

fn lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn every_record_kind_round_trips_with_non_finite_floats() {
    let records = [
        Record::Study { name: "s".into(), direction: Direction::Maximize, config: json!({"a": [1, 2]}), format: 1 },
        Record::TrialStarted { number: 3, params: params(0.1), attempt: 2 },
        Record::Intermediate { number: 3, step: 7, value: f64::NAN },
        Record::Intermediate { number: 3, step: 8, value: f64::INFINITY },
        Record::Intermediate { number: 3, step: 9, value: f64::NEG_INFINITY },
        Record::Intermediate { number: 3, step: 10, value: 0.1 + 0.2 },
        Record::Intermediate { number: 3, step: 11, value: -0.0 },
        Record::Rung { number: 3, rung: 1, value: f64::NAN },
        Record::Pruned { number: 3, step: 11 },
        Record::Completed { number: 3, value: f64::NEG_INFINITY },
        Record::Completed { number: 3, value: 1e-300 },
        Record::Failed { number: 3, reason: "interrupted".into() },
    ];
    for r in &records {
        let text = serde_json::to_string(r).unwrap();
        assert!(!text.contains("null"), "{text}");
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, r, "{text}");
        if let (Record::Intermediate { value: a, .. }, Record::Intermediate { value: b, .. }) = (&back, r) {
            assert!(a.is_nan() || a.to_bits() == b.to_bits(), "{text}: bit for bit (-0.0, 0.1 + 0.2)");
        }
    }
    assert_eq!(
        serde_json::to_string(&records[2]).unwrap(),
        r#"{"event":"intermediate","number":3,"step":7,"value":"NaN"}"#
    );
    assert!(serde_json::to_string(&records[3]).unwrap().contains(r#""value":"inf""#));
    assert!(serde_json::to_string(&records[4]).unwrap().contains(r#""value":"-inf""#));
    assert!(serde_json::from_str::<Record>(r#"{"event":"completed","number":1,"value":"nan"}"#).is_err());

    // Through the file: the replayed trial has the non-finite values.
    let dir = tempfile::tempdir().unwrap();
    let mut j = new_study(dir.path());
    let t = j.start_trial(params(0.5)).unwrap();
    j.report(t.number, 0, f64::NAN).unwrap();
    j.report(t.number, 1, f64::INFINITY).unwrap();
    j.report(t.number, 2, -0.0).unwrap();
    j.rung(t.number, 0, f64::NEG_INFINITY).unwrap();
    j.completed(t.number, f64::NAN).unwrap();
    let (_, study) = Journal::open(dir.path()).unwrap();
    let trial = &study.trials[0];
    assert!(trial.intermediate[&0].is_nan());
    assert_eq!(trial.intermediate[&1], f64::INFINITY);
    assert_eq!(trial.intermediate[&2].to_bits(), (-0.0f64).to_bits());
    assert_eq!(trial.completed_rungs, vec![f64::NEG_INFINITY]);
    assert!(trial.value.unwrap().is_nan());
    assert_eq!(trial.state, TrialState::Complete);
    assert_eq!(trial.params, params(0.5));
    assert_eq!(study.config, json!({"pruner": "hyperband"}));
    assert!(study.torn_tail.is_none());
}

/// Reports `value` for `trial` on both the live study and the journal, asks the pruner, and
/// journals the rungs the pruner wrote and its decision.
fn report_and_prune(
    live: &mut StudyView,
    pruner: &mut HyperbandPruner,
    journal: &mut Journal,
    trial: usize,
    step: u64,
    value: f64,
) -> bool {
    let number = trial as u64;
    if live.report(trial, step, value).unwrap() {
        journal.report(number, step, value).unwrap();
    }
    let before = live.trials[trial].completed_rungs.len();
    let prune = pruner.prune(live, trial).unwrap();
    for (k, &v) in live.trials[trial].completed_rungs.iter().enumerate().skip(before) {
        journal.rung(number, k, v).unwrap();
    }
    if prune {
        live.finish(trial, TrialState::Pruned).unwrap();
        journal.pruned(number, step).unwrap();
    }
    prune
}

#[test]
fn replayed_study_prunes_like_the_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = new_study(dir.path());
    let mut live = StudyView::new("study", Direction::Minimize);
    let new_pruner = || HyperbandPruner::new(1, Resource::Steps(27), 3, 0).unwrap();
    let mut pruner = new_pruner();
    let curve = |i: u64, step: u64| ((i * 7919) % 13) as f64 + 10.0 / (step as f64 + 1.0);
    let mut n_pruned = 0;
    for i in 0..14u64 {
        let started = journal.start_trial(params(i as f64)).unwrap();
        assert_eq!(started.number, i);
        let t = live.ask();
        let mut pruned = false;
        for step in 0..27 {
            if report_and_prune(&mut live, &mut pruner, &mut journal, t, step, curve(i, step)) {
                pruned = true;
                n_pruned += 1;
                break;
            }
        }
        if !pruned {
            live.finish(t, TrialState::Complete).unwrap();
            journal.completed(i, curve(i, 26)).unwrap();
        }
    }
    assert!(n_pruned > 0 && n_pruned < 14, "the study should prune some trials, not all: {n_pruned}");

    let (mut reopened, study) = Journal::open(dir.path()).unwrap();
    let mut replayed = study.view();
    assert_eq!(replayed, live, "the replayed view equals the live one");
    // A further trial, on both: same decisions step by step, same rungs.
    let mut fresh = new_pruner();
    let t = live.ask();
    let number = reopened.start_trial(params(99.0)).unwrap().number;
    assert_eq!(number as usize, t);
    let u = replayed.ask();
    let mut decisions = Vec::new();
    for step in 0..27 {
        let value = 5.0 + 10.0 / (step as f64 + 1.0);
        let a = report_and_prune(&mut live, &mut pruner, &mut journal, t, step, value);
        replayed.report(u, step, value).unwrap();
        let b = fresh.prune(&mut replayed, u).unwrap();
        assert_eq!(a, b, "step {step}");
        decisions.push(a);
        if a {
            break;
        }
    }
    assert_eq!(live.trials[t].completed_rungs, replayed.trials[u].completed_rungs);
    assert!(!live.trials[t].completed_rungs.is_empty(), "the further trial reached a rung: {decisions:?}");
    // The first handle wrote the further trial's records after the reopened handle's
    // `trial_started`: a refresh reads them, and a third replay equals the live study again.
    assert_eq!(reopened.refresh().unwrap().view(), live);
}

#[test]
fn torn_last_line_is_reported_then_repaired_by_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = new_study(dir.path());
    let t = j.start_trial(params(1.0)).unwrap().number;
    j.report(t, 0, 3.0).unwrap();
    j.report(t, 1, 2.0).unwrap();
    drop(j);
    let path = dir.path().join(JOURNAL_FILE);
    let good = fs::read(&path).unwrap();
    // Half a record, as a crash in the middle of a write leaves it.
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(br#"{"event":"intermediate","number":0,"st"#)
        .unwrap();

    let (mut j, study) = Journal::open(dir.path()).unwrap();
    let torn = study.torn_tail.clone().expect("the torn line is reported");
    assert_eq!(torn.line, 5);
    assert_eq!(torn.offset, good.len() as u64);
    assert!(torn.to_string().contains("journal.jsonl:5"), "{torn}");
    assert_eq!(study.trials[0].intermediate.len(), 2, "nothing before the torn line is lost");
    assert_eq!(fs::read(&path).unwrap().len(), good.len() + 38, "opening does not write");

    j.report(t, 2, 1.0).unwrap();
    assert!(j.study().torn_tail.is_none());
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(std::str::from_utf8(&good).unwrap()));
    assert!(text.ends_with("\n"));
    for line in text.lines() {
        serde_json::from_str::<Record>(line).unwrap();
    }
    let (_, study) = Journal::open(dir.path()).unwrap();
    assert!(study.torn_tail.is_none());
    assert_eq!(study.trials[0].intermediate.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);

    // A last line with its newline but garbage (zeros after a crash) is torn too.
    fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"\0\0\0\0\n").unwrap();
    let (mut j, study) = Journal::open(dir.path()).unwrap();
    assert_eq!(study.torn_tail.as_ref().map(|t| t.line), Some(6));
    j.completed(t, 1.0).unwrap();
    assert_eq!(lines(dir.path()).len(), 6);
    assert_eq!(Journal::open(dir.path()).unwrap().1.trials[0].state, TrialState::Complete);
}

#[test]
fn malformed_middle_line_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = new_study(dir.path());
    let t = j.start_trial(params(1.0)).unwrap().number;
    j.report(t, 0, 3.0).unwrap();
    j.report(t, 1, 2.0).unwrap();
    drop(j);
    let path = dir.path().join(JOURNAL_FILE);
    let mut text = lines(dir.path());
    text[2] = text[2].replace("\"step\"", "\"stp\"");
    fs::write(&path, text.join("\n") + "\n").unwrap();
    match Journal::open(dir.path()) {
        Err(e @ JournalError::Malformed { line: 3, .. }) => {
            let message = e.to_string();
            assert!(message.contains(&format!("{}:3:", path.display())), "{message}");
        }
        other => panic!("expected a malformed line 3, got {other:?}"),
    }

    // Well-formed but impossible: a trial number used twice.
    let mut text = lines(dir.path());
    text[2] = text[1].clone();
    fs::write(&path, text.join("\n") + "\n").unwrap();
    match Journal::open(dir.path()) {
        Err(e @ JournalError::Invalid { line: 3, .. }) => assert!(e.to_string().contains("journal.jsonl:3"), "{e}"),
        other => panic!("expected an invalid line 3, got {other:?}"),
    }
}

#[test]
fn appends_the_study_refuses_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = new_study(dir.path());
    let t = j.start_trial(params(1.0)).unwrap().number;
    let before = lines(dir.path());
    assert!(matches!(j.report(7, 0, 1.0), Err(JournalError::Refused { .. })));
    assert!(matches!(j.rung(t, 1, 1.0), Err(JournalError::Refused { .. })), "rung 1 before rung 0");
    assert!(matches!(j.retry_trial(t), Err(JournalError::Refused { .. })), "trial {t} has not failed");
    j.completed(t, 1.0).unwrap();
    assert!(matches!(j.report(t, 0, 1.0), Err(JournalError::Refused { .. })), "trial is finished");
    assert_eq!(lines(dir.path()).len(), before.len() + 1);
    // Reopening with another configuration is refused, the same one resumes.
    let other = Journal::create(dir.path(), "study", Direction::Minimize, json!({"pruner": "median"}));
    assert!(matches!(other, Err(JournalError::StudyMismatch { .. })));
    let (_, study) = Journal::create(dir.path(), "study", Direction::Minimize, json!({"pruner": "hyperband"})).unwrap();
    assert_eq!(study.trials.len(), 1);
}

#[test]
fn concurrent_handles_never_share_a_trial_number() {
    let dir = tempfile::tempdir().unwrap();
    new_study(dir.path());
    const THREADS: usize = 4;
    const EACH: usize = 50;
    let handles: Vec<_> = (0..THREADS)
        .map(|k| {
            let dir = dir.path().to_path_buf();
            thread::spawn(move || {
                // Each thread its own handle: its own open file description.
                let (mut j, _) = Journal::open(&dir).unwrap();
                let mut numbers = Vec::new();
                for i in 0..EACH {
                    let started = j.start_trial(params((k * 1000 + i) as f64)).unwrap();
                    j.report(started.number, 0, k as f64).unwrap();
                    numbers.push(started.number);
                }
                numbers
            })
        })
        .collect();
    let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..(THREADS * EACH) as u64).collect::<Vec<_>>(), "unique and contiguous");
    let text = lines(dir.path());
    assert_eq!(text.len(), 1 + 2 * THREADS * EACH);
    for line in &text {
        serde_json::from_str::<Record>(line).unwrap();
    }
    let (_, study) = Journal::open(dir.path()).unwrap();
    assert_eq!(study.trials.len(), THREADS * EACH);
    for t in &study.trials {
        // Each trial's report came from the thread that started it.
        let k = t.params["lr"].as_f64().unwrap() as usize / 1000;
        assert_eq!(t.intermediate[&0], k as f64);
    }
}

const CHILD_DIR: &str = "TUNE_JOURNAL_TEST_WRITER_DIR";

/// Not a test by itself: with `CHILD_DIR` set, the writer loop the SIGKILL test kills.
#[test]
fn writer_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let (mut j, _) = Journal::open(&dir).unwrap();
    let mut out = std::io::stdout();
    let mut acknowledged = 0u64;
    let mut ack = |out: &mut std::io::Stdout| {
        acknowledged += 1;
        writeln!(out, "ack {acknowledged}").unwrap();
        out.flush().unwrap();
    };
    for i in 0.. {
        let started = j.start_trial(params(i as f64)).unwrap();
        ack(&mut out);
        for step in 0..5 {
            j.report(started.number, step, if step == 3 { f64::NAN } else { step as f64 }).unwrap();
            ack(&mut out);
        }
        j.completed(started.number, i as f64).unwrap();
        ack(&mut out);
        drop(started.lease);
    }
}

#[test]
fn writer_killed_with_sigkill_leaves_a_valid_study() {
    let dir = tempfile::tempdir().unwrap();
    new_study(dir.path());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut acknowledged = 0u64;
    let mut line = String::new();
    while acknowledged < 300 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the writer stopped early");
        if let Some(n) = line.trim().strip_prefix("ack ") {
            acknowledged = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    for line in reader.lines() {
        if let Some(n) = line.unwrap().trim().strip_prefix("ack ") {
            acknowledged = n.parse().unwrap();
        }
    }

    let (mut j, study) = Journal::open(dir.path()).unwrap();
    let text = fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
    let complete_lines = text.matches('\n').count() as u64;
    let records: usize =
        study.trials.iter().map(|t| 2 + t.intermediate.len() - usize::from(t.state == TrialState::Running)).sum();
    assert_eq!(records as u64 + 1, complete_lines, "every fully written line is in the study");
    assert!(complete_lines > acknowledged, "every acknowledged append is there ({acknowledged} + the study record)");
    for t in &study.trials {
        assert!(t.intermediate.get(&3).is_none_or(|v| v.is_nan()));
    }
    // The killed writer's lease is free: its running trial (if any) is interrupted.
    let running = study.interrupted();
    assert!(running.len() <= 1);
    assert_eq!(j.mark_interrupted().unwrap(), running);
    let started = j.start_trial(params(-1.0)).unwrap();
    assert_eq!(started.number as usize, study.trials.len());
}

#[test]
fn interrupted_trials_are_told_from_live_ones_and_retried_under_their_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = new_study(dir.path());
    let (mut b, _) = Journal::open(dir.path()).unwrap();
    let live = a.start_trial(params(1.0)).unwrap();
    let dead = a.start_trial(params(2.0)).unwrap();
    a.report(dead.number, 0, 5.0).unwrap();
    a.rung(dead.number, 0, 5.0).unwrap();
    a.report(dead.number, 1, 4.0).unwrap();
    drop(dead.lease); // its process "died"
    assert_eq!(b.refresh().unwrap().interrupted(), vec![0, 1], "both are RUNNING in the journal");
    assert_eq!(b.mark_interrupted().unwrap(), vec![1], "trial 0's lease is held by a live handle");
    let study = b.study().clone();
    assert_eq!(study.trials[1].state, TrialState::Failed);
    assert_eq!(study.trials[1].fail_reason.as_deref(), Some(INTERRUPTED));
    assert_eq!(study.trials[0].state, TrialState::Running);

    let retry = b.retry_trial(1).unwrap();
    assert_eq!((retry.number, retry.attempt), (1, 1));
    assert!(matches!(a.retry_trial(1), Err(JournalError::Refused { .. })), "already retried by b");
    // The retry resumes after the checkpoint: the old values and the rung stay.
    b.report(1, 1, 99.0).unwrap();
    b.report(1, 2, 3.0).unwrap();
    b.completed(1, 3.0).unwrap();
    a.completed(live.number, 1.0).unwrap();
    let (_, study) = Journal::open(dir.path()).unwrap();
    let t = &study.trials[1];
    assert_eq!((t.attempt, t.state, t.params.clone()), (1, TrialState::Complete, params(2.0)));
    assert_eq!(t.intermediate.values().copied().collect::<Vec<_>>(), vec![5.0, 4.0, 3.0]);
    assert_eq!(t.completed_rungs, vec![5.0]);
    assert_eq!(study.trials.len(), 2);
    assert!(study.interrupted().is_empty());
    // The journal says it: a failed line, then a second trial_started for number 1.
    let text = lines(dir.path());
    assert!(text.iter().any(|l| l.contains(r#""event":"trial_started","number":1"#) && l.contains(r#""attempt":1"#)));
}
