//! Nothing of an earlier run in an output directory is lost or overwritten: a refused resume
//! leaves the earlier `config.yaml` as it was, and `--on-mismatch fresh` moves the whole
//! earlier run (telemetry, config, checkpoints) into an archive of its own, never into an
//! existing one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/mod.rs"]
mod support;

use support::toy;

fn run(cmd: &mut Command) -> (i32, String) {
    let Output { status, stderr, .. } = cmd.output().unwrap();
    (status.code().unwrap_or(-1), String::from_utf8(stderr).unwrap())
}

fn toy_run(out: &Path, seed: u64, extra: &[&str]) -> (i32, String) {
    run(toy().args(["--max-steps", "3", "--seed", &seed.to_string()]).args(extra).arg("-o").arg(out))
}

fn archives(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("archived")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn a_refused_resume_leaves_the_earlier_config_yaml_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert_eq!(toy_run(&out, 1, &[]).0, 0);
    let config = std::fs::read(out.join("config.yaml")).unwrap();
    let jsonl = std::fs::read(out.join("training.jsonl")).unwrap();
    // Another seed, another width, an explicit weights-less checkpoint: each is refused.
    let bogus = dir.path().join("weights_only.safetensors");
    std::fs::write(&bogus, b"not a checkpoint").unwrap();
    for (seed, extra) in [
        (2, vec!["--auto-resume"]),
        (1, vec!["--auto-resume", "--hidden", "5"]),
        (1, vec!["--resume", bogus.to_str().unwrap()]),
    ] {
        let (code, err) = toy_run(&out, seed, &extra);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert_eq!(std::fs::read(out.join("config.yaml")).unwrap(), config, "{extra:?} replaced config.yaml");
        assert_eq!(std::fs::read(out.join("training.jsonl")).unwrap(), jsonl, "{extra:?} touched training.jsonl");
    }
}

#[test]
fn fresh_starts_archive_the_whole_run_under_a_name_never_used_before() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert_eq!(toy_run(&out, 1, &[]).0, 0);
    // Archives of every second around now already exist (two fresh starts within one second
    // would otherwise pick the same name): they must be left as they are.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for t in now.saturating_sub(2)..now + 120 {
        let taken = out.join("archived").join(format!("run_{t}"));
        std::fs::create_dir_all(&taken).unwrap();
        std::fs::write(taken.join("training.jsonl"), format!("sentinel {t}\n")).unwrap();
    }
    let before = archives(&out).len();
    let fresh = ["--auto-resume", "--on-mismatch", "fresh"];
    assert_eq!(toy_run(&out, 2, &fresh).0, 0);
    assert_eq!(toy_run(&out, 3, &fresh).0, 0);
    for t in now.saturating_sub(2)..now + 120 {
        let taken = out.join("archived").join(format!("run_{t}/training.jsonl"));
        assert_eq!(
            std::fs::read_to_string(&taken).unwrap(),
            format!("sentinel {t}\n"),
            "{} overwritten",
            taken.display()
        );
    }
    let new: Vec<PathBuf> = archives(&out)
        .into_iter()
        .filter(|p| std::fs::read_to_string(p.join("training.jsonl")).is_ok_and(|s| !s.starts_with("sentinel")))
        .collect();
    assert_eq!(new.len(), 2, "one new archive per fresh start (of {} in all, {before} before)", archives(&out).len());
    // Each holds its whole run: telemetry, the resolved config of that run, its checkpoints.
    let mut seeds = Vec::new();
    for a in &new {
        for f in
            ["training.jsonl", "metrics.csv", "curves.png", "config.yaml", "checkpoints/checkpoint_latest.safetensors"]
        {
            assert!(a.join(f).is_file(), "{} lacks {f}", a.display());
        }
        assert!(a.join("tensorboard").is_dir());
        let config: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(a.join("config.yaml")).unwrap()).unwrap();
        seeds.push(config["seed"].as_u64().unwrap());
    }
    seeds.sort();
    assert_eq!(seeds, [1, 2]);
    // The run directory now holds only the third run.
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(out.join("config.yaml")).unwrap()).unwrap();
    assert_eq!(config["seed"].as_u64(), Some(3));
    assert_eq!(support::events(&out, Some("run_start")).len(), 1);
}
