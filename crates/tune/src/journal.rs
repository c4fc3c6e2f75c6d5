//! The study's append-only journal, `DIR/journal.jsonl`: crash-safe across processes.
//!
//! One JSON record per line ([`Record`], tagged `event`). Each line is written with a single
//! `write_all` of the whole line, newline included, then `sync_data`, before the call returns:
//! a record counts once its line, newline included, is in the file.
//!
//! # Locking
//!
//! Every append, and every allocation of a trial number, runs under an exclusive advisory lock
//! on the journal file (`File::lock`, `flock` on Linux); reads take a shared lock. Under the
//! lock the handle first reads what other handles appended since its last look, so two
//! processes (or two handles in one process: `flock` locks belong to the open file description)
//! sharing a study directory never use a trial number twice and never append a record the
//! replayed study refuses. (Advisory locks need a local file system: `flock` over NFS is not
//! to be relied on.)
//!
//! # Replay and crashes
//!
//! [`Journal::open`] replays every record into a [`Study`] (trial parameters, attempts, state,
//! intermediate values, Successive Halving rungs, final value), which converts into the
//! pruners' [`StudyView`] (`Study::view`). A torn last line (no trailing newline, or not valid
//! JSON at the very end: a crash during a write) is left out and reported in
//! [`Study::torn_tail`]; the next append first truncates it away. A malformed line that is not
//! the last is an error naming the file and line. A well-formed record the study cannot take
//! (a trial number used twice, a record for a trial that was never started, a rung out of
//! order) is an error too: appends are checked the same way before they are written, so such a
//! line only comes from editing the file by hand.
//!
//! # Interrupted trials and retries
//!
//! A trial whose last record is `trial_started`, `intermediate` or `rung` is RUNNING. The
//! process running it holds a lease ([`TrialLease`], an exclusive lock on
//! `DIR/locks/trial-{number}.lock`) from before its `trial_started` is written until the lease
//! is dropped; the kernel releases it when the process dies, however it dies. So
//! [`Journal::mark_interrupted`] can tell a trial whose process died (lease free) from one that
//! another live process is running (lease held), and marks only the former `failed` with reason
//! `"interrupted"`.
//!
//! A failed trial is retried with [`Journal::retry_trial`]: a new `trial_started` with the
//! **same number** and the same parameters, `attempt + 1`. Optuna's `RetryFailedTrialCallback`
//! gives the retry a new number instead; here the retry is meant to resume from the trial's own
//! checkpoint (its directory is named after its number), and a trial keeps its number so that
//! Hyperband keeps it in the same bracket (the bracket is a hash of the number). The values a
//! trial reported before the crash stay (a step reported again keeps its first value, as
//! Optuna's `trial.report`), and so do its completed rungs, so the pruner picks up where it was.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::pruners::{Direction, StudyView, TrialRecord, TrialState};

/// The journal's file name inside the study directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// The directory, inside the study directory, of the trial leases.
pub const LOCKS_DIR: &str = "locks";
/// The format version written in the `study` record; a journal with another one is refused.
pub const FORMAT_VERSION: u32 = 1;
/// The reason [`Journal::mark_interrupted`] records.
pub const INTERRUPTED: &str = "interrupted";

/// One line of the journal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// The first record: what the study is.
    Study {
        name: String,
        direction: Direction,
        /// Free-form settings (search space, sampler, pruner...), for the driver.
        config: Value,
        format: u32,
    },
    /// An attempt of trial `number` starts (attempt 0 is the first).
    TrialStarted { number: u64, params: Map<String, Value>, attempt: u32 },
    /// A reported intermediate value.
    Intermediate {
        number: u64,
        step: u64,
        #[serde(with = "float")]
        value: f64,
    },
    /// Successive Halving's `completed_rung_{rung}` of the trial.
    Rung {
        number: u64,
        rung: usize,
        #[serde(with = "float")]
        value: f64,
    },
    /// The trial was pruned after its report at `step`.
    Pruned { number: u64, step: u64 },
    /// The trial finished with `value`.
    Completed {
        number: u64,
        #[serde(with = "float")]
        value: f64,
    },
    /// The attempt failed (`reason` [`INTERRUPTED`] for a process that died).
    Failed { number: u64, reason: String },
}

impl PartialEq for Record {
    /// Equality with floats compared bit for bit (so NaN equals NaN).
    fn eq(&self, other: &Self) -> bool {
        use Record::*;
        let f = |a: &f64, b: &f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        match (self, other) {
            (
                Study { name: a, direction: b, config: c, format: d },
                Study { name: e, direction: g, config: h, format: i },
            ) => a == e && b == g && c == h && d == i,
            (TrialStarted { number: a, params: b, attempt: c }, TrialStarted { number: d, params: e, attempt: g }) => {
                a == d && b == e && c == g
            }
            (Intermediate { number: a, step: b, value: c }, Intermediate { number: d, step: e, value: g }) => {
                a == d && b == e && f(c, g)
            }
            (Rung { number: a, rung: b, value: c }, Rung { number: d, rung: e, value: g }) => {
                a == d && b == e && f(c, g)
            }
            (Pruned { number: a, step: b }, Pruned { number: c, step: d }) => a == c && b == d,
            (Completed { number: a, value: b }, Completed { number: c, value: d }) => a == c && f(b, d),
            (Failed { number: a, reason: b }, Failed { number: c, reason: d }) => a == c && b == d,
            _ => false,
        }
    }
}

/// Floats as JSON numbers when finite, else the strings `"NaN"`, `"inf"`, `"-inf"` (JSON has
/// no NaN; `serde_json` would write `null`). NaN's sign and payload are not kept.
mod float {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    struct F;

    impl Visitor<'_> for F {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number or one of \"NaN\", \"inf\", \"-inf\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(F)
    }
}

/// A journal that could not be read or written.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A line that is not a valid record and is not the last line.
    #[error("{}:{line}: malformed record: {message}", path.display())]
    Malformed { path: PathBuf, line: u64, message: String },
    /// A well-formed record the study cannot take.
    #[error("{}:{line}: invalid record: {message}", path.display())]
    Invalid { path: PathBuf, line: u64, message: String },
    /// An append the study refuses (nothing was written).
    #[error("{}: refused to append: {message}", path.display())]
    Refused { path: PathBuf, message: String },
    /// No complete `study` record.
    #[error("{}: no study record (not a study journal, or created by a process that died first)", path.display())]
    NoStudy { path: PathBuf },
    #[error("{}: journal format {found}, this build reads format {FORMAT_VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    /// `Journal::create` on an existing study with another name, direction or configuration.
    #[error("{}: the study there is {found}, not {expected}", path.display())]
    StudyMismatch { path: PathBuf, found: String, expected: String },
    /// The file is shorter than the part already read: something other than a journal handle
    /// truncated it.
    #[error("{}: the file shrank to {len} bytes below the {read} already read", path.display())]
    Shrunk { path: PathBuf, len: u64, read: u64 },
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// A torn last line left out of the replay (a crash during a write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// The line's number (from 1).
    pub line: u64,
    /// Its byte offset: the next append truncates the file there.
    pub offset: u64,
    pub len: u64,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}:{}: ignoring a torn last record ({} bytes at offset {}, a crash during a write); the next append \
             removes it",
            self.path.display(),
            self.line,
            self.len,
            self.offset
        )
    }
}

/// One trial, as the journal has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    pub number: u64,
    pub params: Map<String, Value>,
    /// The current attempt (0 for the first).
    pub attempt: u32,
    pub state: TrialState,
    /// Intermediate values by step, over all attempts (a step reported again keeps its first
    /// value).
    pub intermediate: BTreeMap<u64, f64>,
    /// Successive Halving's rungs (entry `k` is `completed_rung_{k}`), over all attempts.
    pub completed_rungs: Vec<f64>,
    /// The final value, once `Complete`.
    pub value: Option<f64>,
    /// The step after which it was pruned, once `Pruned`.
    pub pruned_at: Option<u64>,
    /// The reason of the last failure (kept when a retry starts, cleared when the retry
    /// completes or is pruned).
    pub fail_reason: Option<String>,
}

/// A study replayed from its journal.
#[derive(Clone, Debug, PartialEq)]
pub struct Study {
    pub name: String,
    pub direction: Direction,
    pub config: Value,
    pub format: u32,
    /// All trials, `trials[i].number == i`.
    pub trials: Vec<Trial>,
    /// A torn last line that was left out, if any.
    pub torn_tail: Option<TornTail>,
}

impl Study {
    /// Trials left RUNNING (last record `trial_started`, `intermediate` or `rung`): interrupted
    /// if their process died, or still running in another process (see
    /// [`Journal::mark_interrupted`], which tells the two apart).
    pub fn interrupted(&self) -> Vec<u64> {
        self.trials.iter().filter(|t| t.state == TrialState::Running).map(|t| t.number).collect()
    }

    /// The pruners' view of the study: a pruner asked about it decides as it would on the live
    /// study. Only a pruner's own cache is not in it ("auto" resources: see [`crate::pruners`]).
    pub fn view(&self) -> StudyView {
        StudyView {
            name: self.name.clone(),
            direction: self.direction,
            trials: self
                .trials
                .iter()
                .map(|t| TrialRecord {
                    number: t.number,
                    state: t.state,
                    intermediate: t.intermediate.clone(),
                    completed_rungs: t.completed_rungs.clone(),
                })
                .collect(),
        }
    }

    fn from_header(record: &Record) -> std::result::Result<Self, String> {
        match record {
            Record::Study { name, direction, config, format } => Ok(Self {
                name: name.clone(),
                direction: *direction,
                config: config.clone(),
                format: *format,
                trials: Vec::new(),
                torn_tail: None,
            }),
            _ => Err("the first record must be the `study` record".into()),
        }
    }

    /// Checks that `record` can follow the records so far; changes nothing.
    fn check(&self, record: &Record) -> std::result::Result<(), String> {
        let trial =
            |number: u64| self.trials.get(number as usize).ok_or_else(|| format!("trial {number} was never started"));
        let running = |number: u64| {
            let t = trial(number)?;
            if t.state == TrialState::Running {
                Ok(t)
            } else {
                Err(format!("trial {number} is not running (it is {:?})", t.state))
            }
        };
        match record {
            Record::Study { .. } => Err("a second `study` record".into()),
            Record::TrialStarted { number, params, attempt } => {
                let len = self.trials.len() as u64;
                if *number == len {
                    if *attempt != 0 {
                        return Err(format!("new trial {number} starts at attempt {attempt}, not 0"));
                    }
                    return Ok(());
                }
                let t =
                    trial(*number).map_err(|_| format!("trial {number} skips numbers (the next trial is {len})"))?;
                if t.state != TrialState::Failed {
                    return Err(format!("trial {number} is started again but is {:?}, not Failed", t.state));
                }
                if *attempt != t.attempt + 1 {
                    return Err(format!("trial {number} retried as attempt {attempt} after attempt {}", t.attempt));
                }
                if *params != t.params {
                    return Err(format!("trial {number} retried with other parameters"));
                }
                Ok(())
            }
            Record::Intermediate { number, .. } | Record::Completed { number, .. } | Record::Pruned { number, .. } => {
                running(*number).map(drop)
            }
            Record::Rung { number, rung, .. } => {
                let t = running(*number)?;
                if *rung != t.completed_rungs.len() {
                    return Err(format!(
                        "trial {number}: rung {rung} recorded after {} rungs",
                        t.completed_rungs.len()
                    ));
                }
                Ok(())
            }
            Record::Failed { number, .. } => running(*number).map(drop),
        }
    }

    /// Applies a record that [`Study::check`] accepted.
    fn apply_checked(&mut self, record: &Record) {
        match record {
            Record::Study { .. } => unreachable!("refused by check"),
            Record::TrialStarted { number, params, attempt } => {
                if let Some(t) = self.trials.get_mut(*number as usize) {
                    t.attempt = *attempt;
                    t.state = TrialState::Running;
                } else {
                    self.trials.push(Trial {
                        number: *number,
                        params: params.clone(),
                        attempt: *attempt,
                        state: TrialState::Running,
                        intermediate: BTreeMap::new(),
                        completed_rungs: Vec::new(),
                        value: None,
                        pruned_at: None,
                        fail_reason: None,
                    });
                }
            }
            Record::Intermediate { number, step, value } => {
                self.trials[*number as usize].intermediate.entry(*step).or_insert(*value);
            }
            Record::Rung { number, value, .. } => self.trials[*number as usize].completed_rungs.push(*value),
            Record::Pruned { number, step } => {
                let t = &mut self.trials[*number as usize];
                t.state = TrialState::Pruned;
                t.pruned_at = Some(*step);
                t.fail_reason = None;
            }
            Record::Completed { number, value } => {
                let t = &mut self.trials[*number as usize];
                t.state = TrialState::Complete;
                t.value = Some(*value);
                t.fail_reason = None;
            }
            Record::Failed { number, reason } => {
                let t = &mut self.trials[*number as usize];
                t.state = TrialState::Failed;
                t.fail_reason = Some(reason.clone());
            }
        }
    }

    fn apply(&mut self, record: &Record) -> std::result::Result<(), String> {
        self.check(record)?;
        self.apply_checked(record);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{:?} ({:?}, config {})", self.name, self.direction, self.config)
    }
}

/// A started attempt: the trial's number, its attempt and the lease the caller holds while it
/// runs (dropping it tells other processes the trial is no longer running here).
#[derive(Debug)]
pub struct Started {
    pub number: u64,
    pub attempt: u32,
    pub lease: TrialLease,
}

/// An exclusive lock on `DIR/locks/trial-{number}.lock`, released when dropped or when the
/// process dies.
#[derive(Debug)]
pub struct TrialLease {
    number: u64,
    file: File,
}

impl TrialLease {
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl Drop for TrialLease {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// A handle on a study's journal. Each handle has its own open file, so handles exclude each
/// other whether they are in one process or several.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// The study so far (`None` until a complete `study` record is read).
    study: Option<Study>,
    /// The byte length of the complete, applied lines.
    read: u64,
    /// The number of complete, applied lines.
    lines: u64,
}

impl Journal {
    /// Opens the study in `dir` (its journal must exist) and replays it.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Journal, Study)> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(JOURNAL_FILE);
        let file = OpenOptions::new().read(true).append(true).open(&path).map_err(|e| io_error(&path, e))?;
        let mut journal = Journal { dir, path, file, study: None, read: 0, lines: 0 };
        let study = journal.refresh()?.clone();
        Ok((journal, study))
    }

    /// Opens the study in `dir`, creating the directory and the journal if needed. An existing
    /// study must have the same name, direction and configuration (a rerun resumes it).
    pub fn create(
        dir: impl AsRef<Path>,
        name: impl Into<String>,
        direction: Direction,
        config: Value,
    ) -> Result<(Journal, Study)> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let path = dir.join(JOURNAL_FILE);
        let file =
            OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(|e| io_error(&path, e))?;
        let mut journal = Journal { dir, path, file, study: None, read: 0, lines: 0 };
        let header = Record::Study { name: name.into(), direction, config, format: FORMAT_VERSION };
        journal.locked(true, |journal| match &journal.study {
            Some(study) => {
                let wanted = Study::from_header(&header).expect("a study record");
                if (&study.name, study.direction, &study.config) != (&wanted.name, wanted.direction, &wanted.config) {
                    return Err(JournalError::StudyMismatch {
                        path: journal.path.clone(),
                        found: study.describe(),
                        expected: wanted.describe(),
                    });
                }
                Ok(())
            }
            None => journal.write_line(&header),
        })?;
        let study = journal.study().clone();
        Ok((journal, study))
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The study directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The study as this handle last read it (with its own appends).
    pub fn study(&self) -> &Study {
        self.study.as_ref().expect("a journal handle always has its study record")
    }

    /// Reads what other handles appended since the last look.
    pub fn refresh(&mut self) -> Result<&Study> {
        self.locked(false, |_| Ok(()))?;
        self.study.as_ref().ok_or_else(|| JournalError::NoStudy { path: self.path.clone() })
    }

    /// Allocates the next trial number and records its first attempt: under the lock, replay
    /// the tail, take the lease, append `trial_started`.
    pub fn start_trial(&mut self, params: Map<String, Value>) -> Result<Started> {
        self.locked(true, |journal| {
            let number = journal.study_or_err()?.trials.len() as u64;
            let lease = journal.take_lease(number)?.ok_or_else(|| {
                journal.refused(format!("the lease of new trial {number} is held (a stale process?)"))
            })?;
            journal.append_locked(&Record::TrialStarted { number, params, attempt: 0 })?;
            Ok(Started { number, attempt: 0, lease })
        })
    }

    /// [`Journal::start_trial`] with the parameters chosen under the lock, once the number is
    /// known: `choose(number, study)` sees the study as it is at allocation (so a sampler's
    /// history and trial number agree even with several processes on one study) and returns
    /// the parameters, `None` to start no trial (e.g. the study already has enough), or its own
    /// error. Nothing is written unless it returns parameters.
    pub fn start_trial_with<E>(
        &mut self,
        choose: impl FnOnce(u64, &Study) -> std::result::Result<Option<Map<String, Value>>, E>,
    ) -> Result<std::result::Result<Option<Started>, E>> {
        self.locked(true, |journal| {
            let study = journal.study_or_err()?;
            let number = study.trials.len() as u64;
            let params = match choose(number, study) {
                Ok(Some(params)) => params,
                Ok(None) => return Ok(Ok(None)),
                Err(e) => return Ok(Err(e)),
            };
            let lease = journal.take_lease(number)?.ok_or_else(|| {
                journal.refused(format!("the lease of new trial {number} is held (a stale process?)"))
            })?;
            journal.append_locked(&Record::TrialStarted { number, params, attempt: 0 })?;
            Ok(Ok(Some(Started { number, attempt: 0, lease })))
        })
    }

    /// Runs `f` on the study as it is under the exclusive lock and appends the records it
    /// returns, in order, each checked as [`Journal::append`] checks it (the first refused one
    /// is an error; the ones before it stay written). What a decision needs to be atomic with
    /// (report a value, ask the pruner, record its rungs and verdict) goes in one call.
    pub fn transact<T>(&mut self, f: impl FnOnce(&Study) -> (Vec<Record>, T)) -> Result<T> {
        self.locked(true, |journal| {
            let (records, value) = f(journal.study_or_err()?);
            for record in &records {
                journal.append_locked(record)?;
            }
            Ok(value)
        })
    }

    /// Starts the next attempt of failed trial `number`, with its parameters.
    pub fn retry_trial(&mut self, number: u64) -> Result<Started> {
        self.locked(true, |journal| {
            let trial = journal.study_or_err()?.trials.get(number as usize);
            let trial = trial.ok_or_else(|| journal.refused(format!("no trial {number}")))?;
            let (params, attempt) = (trial.params.clone(), trial.attempt + 1);
            let lease = journal
                .take_lease(number)?
                .ok_or_else(|| journal.refused(format!("trial {number} is held by a running process")))?;
            journal.append_locked(&Record::TrialStarted { number, params, attempt })?;
            Ok(Started { number, attempt, lease })
        })
    }

    /// Marks `failed {reason: "interrupted"}` every RUNNING trial whose lease is free (its
    /// process died), under one lock; returns their numbers. Trials another live process runs
    /// are left alone.
    pub fn mark_interrupted(&mut self) -> Result<Vec<u64>> {
        self.locked(true, |journal| {
            let mut marked = Vec::new();
            for number in journal.study_or_err()?.interrupted() {
                if let Some(lease) = journal.take_lease(number)? {
                    journal.append_locked(&Record::Failed { number, reason: INTERRUPTED.into() })?;
                    drop(lease);
                    marked.push(number);
                }
            }
            Ok(marked)
        })
    }

    /// Records a reported intermediate value.
    pub fn report(&mut self, number: u64, step: u64, value: f64) -> Result<()> {
        self.append(&Record::Intermediate { number, step, value })
    }

    /// Records Successive Halving's `completed_rung_{rung}` of a trial.
    pub fn rung(&mut self, number: u64, rung: usize, value: f64) -> Result<()> {
        self.append(&Record::Rung { number, rung, value })
    }

    pub fn pruned(&mut self, number: u64, step: u64) -> Result<()> {
        self.append(&Record::Pruned { number, step })
    }

    pub fn completed(&mut self, number: u64, value: f64) -> Result<()> {
        self.append(&Record::Completed { number, value })
    }

    pub fn failed(&mut self, number: u64, reason: impl Into<String>) -> Result<()> {
        self.append(&Record::Failed { number, reason: reason.into() })
    }

    /// Appends any record the study accepts (checked against the journal as it is under the
    /// lock; a refused record writes nothing). Prefer [`Journal::start_trial`] and
    /// [`Journal::retry_trial`] for `trial_started`: they take the trial's lease.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        self.locked(true, |journal| journal.append_locked(record))
    }

    fn study_or_err(&self) -> Result<&Study> {
        self.study.as_ref().ok_or_else(|| JournalError::NoStudy { path: self.path.clone() })
    }

    fn refused(&self, message: String) -> JournalError {
        JournalError::Refused { path: self.path.clone(), message }
    }

    fn append_locked(&mut self, record: &Record) -> Result<()> {
        let study = self.study.as_mut().ok_or_else(|| JournalError::NoStudy { path: self.path.clone() })?;
        study.check(record).map_err(|message| JournalError::Refused { path: self.path.clone(), message })?;
        self.write_line(record)?;
        self.study.as_mut().expect("checked above").apply_checked(record);
        Ok(())
    }

    /// Writes one line (the caller holds the exclusive lock and has read to the end), first
    /// truncating a torn tail.
    fn write_line(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("records serialise");
        line.push(b'\n');
        let torn = self.study.as_ref().and_then(|s| s.torn_tail.as_ref()).is_some()
            || self.file.metadata().map_err(|e| io_error(&self.path, e))?.len() != self.read;
        if torn {
            self.file.set_len(self.read).map_err(|e| io_error(&self.path, e))?;
        }
        self.file.write_all(&line).map_err(|e| io_error(&self.path, e))?;
        self.file.sync_data().map_err(|e| io_error(&self.path, e))?;
        self.read += line.len() as u64;
        self.lines += 1;
        match self.study.as_mut() {
            Some(study) => study.torn_tail = None,
            None => self.study = Some(Study::from_header(record).expect("the first record is the study record")),
        }
        Ok(())
    }

    /// Reads and applies the complete lines past `self.read` (the caller holds a lock).
    fn read_new(&mut self) -> Result<()> {
        let len = self.file.metadata().map_err(|e| io_error(&self.path, e))?.len();
        if len < self.read {
            return Err(JournalError::Shrunk { path: self.path.clone(), len, read: self.read });
        }
        let mut buf = Vec::with_capacity((len - self.read) as usize);
        self.file.seek(SeekFrom::Start(self.read)).map_err(|e| io_error(&self.path, e))?;
        self.file.read_to_end(&mut buf).map_err(|e| io_error(&self.path, e))?;
        let mut torn = None;
        let mut pos = 0;
        while pos < buf.len() {
            let line_no = self.lines + 1;
            let torn_here = || TornTail {
                path: self.path.clone(),
                line: line_no,
                offset: self.read,
                len: (buf.len() - pos) as u64,
            };
            let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i) else {
                torn = Some(torn_here());
                break;
            };
            let record = match serde_json::from_slice::<Record>(&buf[pos..nl]) {
                Ok(record) => record,
                Err(_) if nl + 1 == buf.len() => {
                    torn = Some(torn_here());
                    break;
                }
                Err(e) => {
                    return Err(JournalError::Malformed {
                        path: self.path.clone(),
                        line: line_no,
                        message: e.to_string(),
                    });
                }
            };
            let invalid = |message: String| JournalError::Invalid { path: self.path.clone(), line: line_no, message };
            match self.study.as_mut() {
                Some(study) => study.apply(&record).map_err(invalid)?,
                None => {
                    let study = Study::from_header(&record).map_err(invalid)?;
                    if study.format != FORMAT_VERSION {
                        return Err(JournalError::Version { path: self.path.clone(), found: study.format });
                    }
                    self.study = Some(study);
                }
            }
            self.read += (nl + 1 - pos) as u64;
            self.lines += 1;
            pos = nl + 1;
        }
        // With no study yet, a torn first line is only truncated by `Journal::create`.
        if let Some(study) = self.study.as_mut() {
            study.torn_tail = torn;
        }
        Ok(())
    }

    /// Takes trial `number`'s lease if it is free (`None` if another handle holds it).
    fn take_lease(&self, number: u64) -> Result<Option<TrialLease>> {
        let dir = self.dir.join(LOCKS_DIR);
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let path = dir.join(format!("trial-{number}.lock"));
        let file =
            OpenOptions::new().write(true).create(true).truncate(false).open(&path).map_err(|e| io_error(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(TrialLease { number, file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(io_error(&path, e)),
        }
    }

    /// Runs `f` under the journal's lock (exclusive or shared), after reading what other
    /// handles appended; the lock is released whatever `f` returns.
    fn locked<T>(&mut self, exclusive: bool, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let locked = if exclusive { self.file.lock() } else { self.file.lock_shared() };
        locked.map_err(|e| io_error(&self.path, e))?;
        let result = self.read_new().and_then(|()| f(self));
        let unlocked = self.file.unlock().map_err(|e| io_error(&self.path, e));
        let value = result?;
        unlocked?;
        Ok(value)
    }
}

fn io_error(path: &Path, source: io::Error) -> JournalError {
    JournalError::Io { path: path.to_path_buf(), source }
}
