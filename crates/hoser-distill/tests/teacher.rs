//! `hoser-distill teacher`, `teacher-score` and `teacher-map` end to end on the bundled
//! simulated Helsinki trips: files on disk, logged metrics, scores against an independent
//! computation, and what careless input gets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use hoser::data::{RoadNetwork, read_trajectories};
use hoser::lmtad::teacher::Teacher;
use hoser::lmtad::tokens::TokenMap;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data_dir() -> PathBuf {
    root().join("crates/hoser/tests/fixtures/libcity/helsinki_test")
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hoser-distill"));
    c.current_dir(root());
    c
}

/// `hoser-distill teacher` on the demo config, `epochs` epochs, into `out`.
fn teacher(out: &Path, epochs: u64) -> Command {
    let mut c = bin();
    c.args(["teacher", "--config", "configs/lmtad/helsinki_test.yaml", "--output-dir"]).arg(out).args([
        "--epochs",
        &epochs.to_string(),
        "--set",
        "logging.progress=off",
    ]);
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn validations(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("training.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "validation")
        .collect()
}

fn metric(e: &Value, name: &str) -> f64 {
    e["metrics"][name].as_f64().unwrap_or_else(|| panic!("no {name} in {e}"))
}

/// One trained teacher shared by the tests: 10 epochs of the demo config, then 2 more at a
/// learning rate that wrecks it, so the last weights are far worse than the best.
fn trained() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("lmtad");
        run(teacher(&out, 10));
        let mut wreck = teacher(&out, 12);
        wreck.args(["--auto-resume", "--lr", "0.3", "--set", "optimizer.scheduler.name=constant"]);
        wreck.args(["--set", "optimizer.scheduler.warmup_ratio=null"]);
        run(wreck);
        (dir, out)
    })
    .1
}

#[test]
fn the_teacher_beats_the_unigram_baseline_and_both_are_logged() {
    let dir = trained();
    let v = validations(dir);
    assert_eq!(v.len(), 12, "one validation per epoch");
    let best = v.iter().rfind(|e| e["is_best"] == true).unwrap();
    let unigram = metric(best, "val_unigram_perplexity");
    assert!(unigram > 50.0, "unigram perplexity {unigram}");
    assert!(metric(best, "val_perplexity") < unigram / 2.0, "{best}");
    assert!((metric(best, "val_loss").exp() - metric(best, "val_perplexity")).abs() < 1e-9);
    // The same columns in metrics.csv.
    let mut csv = csv::Reader::from_path(dir.join("metrics.csv")).unwrap();
    let headers = csv.headers().unwrap().clone();
    for column in ["val_perplexity", "val_unigram_perplexity", "val_loss"] {
        assert!(headers.iter().any(|h| h == column), "{column} not in {headers:?}");
    }
    // The wrecked epochs are worse: the best is not the last.
    assert_eq!(v.last().unwrap()["is_best"], false);
    assert!(metric(v.last().unwrap(), "val_perplexity") > 10.0 * metric(best, "val_perplexity"));
}

/// The teacher directory holds the BEST weights (its validation perplexity, recomputed here from
/// the files alone, is the best logged one, not the last), the model config and the map that
/// the dataset gives.
#[test]
fn the_teacher_directory_holds_the_best_weights_and_the_datasets_map() {
    let dir = trained();
    for f in ["teacher.safetensors", "model_config.json", "token_map.json", "best.safetensors", "config.yaml"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(dir.join("checkpoints/checkpoint_latest.safetensors").is_file());
    let device = Default::default();
    let t = Teacher::<Flex>::load(dir, &device).unwrap();
    let data = data_dir();
    let network = RoadNetwork::read(&data.join("roadmap.geo"), &data.join("roadmap.rel")).unwrap();
    let fresh = TokenMap::build("helsinki_test", &data.join("roadmap.geo"), &network, 0.001).unwrap();
    assert_eq!(t.map, fresh);
    assert_eq!(t.config.vocab_size, 803);
    let val = read_trajectories(&data.join("val.csv"), &network, false).unwrap();
    let seqs: Vec<Vec<u32>> = val.trajectories.iter().map(|tr| t.map.encode(&tr.roads).unwrap()).collect();
    let (sum, n) = hoser_distill::teacher::total_nll(&t.model, &seqs, &t.map, 7, &device).unwrap();
    let v = validations(dir);
    let best = v.iter().rfind(|e| e["is_best"] == true).unwrap();
    let ppl = (sum / n as f64).exp();
    assert!((ppl / metric(best, "val_perplexity") - 1.0).abs() < 1e-5, "{ppl} vs best {best}");
}

/// Per-step surprisal against −log softmax of the model's logits computed here in f64, and each
/// trajectory's log-perplexity against the mean of its steps; over the validation split the
/// scores give back the best validation loss.
#[test]
fn teacher_score_matches_an_independent_computation() {
    let dir = trained();
    let tmp = tempfile::tempdir().unwrap();
    let (out, steps) = (tmp.path().join("scores.csv"), tmp.path().join("steps.csv"));
    let o = run({
        let mut c = bin();
        c.args(["teacher-score", "--teacher"]).arg(dir).arg("--trajectories").arg(data_dir().join("val.csv"));
        c.arg("--out").arg(&out).arg("--steps-out").arg(&steps).args(["--batch-size", "3"]);
        c
    });
    assert!(String::from_utf8_lossy(&o.stdout).contains("scored 20 trajectories"));
    let rows: Vec<csv::StringRecord> = csv::Reader::from_path(&out).unwrap().records().map(Result::unwrap).collect();
    let step_rows: Vec<csv::StringRecord> =
        csv::Reader::from_path(&steps).unwrap().records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 20);
    let f = |r: &csv::StringRecord, i: usize| r[i].parse::<f64>().unwrap();

    let device = Default::default();
    let t = Teacher::<Flex>::load(dir, &device).unwrap();
    let data = data_dir();
    let network = RoadNetwork::read(&data.join("roadmap.geo"), &data.join("roadmap.rel")).unwrap();
    let val = read_trajectories(&data.join("val.csv"), &network, false).unwrap();
    let (mut total, mut targets) = (0f64, 0usize);
    for (row, tr) in rows.iter().zip(&val.trajectories) {
        let tokens = t.map.encode(&tr.roads).unwrap();
        let mine: Vec<&csv::StringRecord> = step_rows.iter().filter(|s| s[0] == row[0]).collect();
        assert_eq!(mine.len(), tr.roads.len() + 1, "one step per road, then EOT");
        assert_eq!(&mine.last().unwrap()[2], "", "the last step is EOT");
        // Logits of the whole sequence but its last token, log-softmax in f64 here.
        let input: Vec<i64> = tokens[..tokens.len() - 1].iter().map(|&x| x as i64).collect();
        let len = input.len();
        let logits = t.model.forward(Tensor::<Flex, 2, Int>::from_data(TensorData::new(input, [1, len]), &device));
        let logits: Vec<f32> = logits.into_data().to_vec().unwrap();
        let v = t.map.vocab_size();
        let mut sum = 0f64;
        for (k, s) in mine.iter().enumerate() {
            let l = &logits[k * v..(k + 1) * v];
            let max = l.iter().fold(f64::MIN, |a, &x| a.max(x as f64));
            let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            let expected = lse - l[tokens[k + 1] as usize] as f64;
            assert_eq!(s[3].parse::<u32>().unwrap(), tokens[k + 1]);
            assert!((f(s, 4) - expected).abs() < 1e-4, "row {} step {k}: {} vs {expected}", &row[0], &s[4]);
            sum += f(s, 4);
        }
        let n = mine.len() as f64;
        assert!((f(row, 3) - sum / n).abs() < 1e-5);
        assert!((f(row, 4) - f(row, 3).exp()).abs() < 1e-4 * f(row, 4));
        total += sum;
        targets += mine.len();
    }
    let best = validations(dir).into_iter().rfind(|e| e["is_best"] == true).unwrap();
    assert!((total / targets as f64 - metric(&best, "val_loss")).abs() < 1e-4);
}

#[test]
fn teacher_score_refuses_careless_input_and_never_overwrites() {
    let dir = trained();
    let tmp = tempfile::tempdir().unwrap();
    let score = |teacher: &Path, trajectories: &Path, out: &Path, extra: &[&str]| {
        let mut c = bin();
        c.args(["teacher-score", "--teacher"]).arg(teacher).arg("--trajectories").arg(trajectories);
        c.arg("--out").arg(out).args(extra);
        c.output().unwrap()
    };
    let val = data_dir().join("val.csv");

    // An existing output is left as it is.
    let out = tmp.path().join("scores.csv");
    std::fs::write(&out, "keep me").unwrap();
    let o = score(dir, &val, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists") && stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");

    // Another dataset's name, with the trajectories beside their roadmap.geo.
    let fresh = tmp.path().join("fresh.csv");
    let o = score(dir, &val, &fresh, &["--dataset", "Porto"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("helsinki_test") && stderr(&o).contains("Porto"), "{}", stderr(&o));
    assert!(!fresh.exists());

    // A road id the teacher's network does not have, and a file without rid_list.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "rid_list,time_list\n\"1,2,3\",\n\"4,5553\",\n").unwrap();
    let o = score(dir, &bad, &fresh, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("data row 2") && stderr(&o).contains("road 5553"), "{}", stderr(&o));
    std::fs::write(&bad, "roads\n1\n").unwrap();
    let o = score(dir, &bad, &fresh, &[]);
    assert!(stderr(&o).contains("rid_list") && stderr(&o).contains("bad.csv"), "{}", stderr(&o));
    assert!(!fresh.exists());

    // A teacher directory without its token map, or whose config disagrees with the map.
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["teacher.safetensors", "model_config.json"] {
        std::fs::copy(dir.join(f), broken.join(f)).unwrap();
    }
    let o = score(&broken, &val, &fresh, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no token_map.json") && stderr(&o).contains("teacher-map"), "{}", stderr(&o));
    std::fs::copy(dir.join("token_map.json"), broken.join("token_map.json")).unwrap();
    let config = std::fs::read_to_string(dir.join("model_config.json")).unwrap();
    std::fs::write(broken.join("model_config.json"), config.replace("\"vocab_size\": 803", "\"vocab_size\": 804"))
        .unwrap();
    let o = score(&broken, &val, &fresh, &[]);
    assert!(stderr(&o).contains("803 tokens") && stderr(&o).contains("vocab_size 804"), "{}", stderr(&o));
    assert!(!fresh.exists());
}

/// An upstream teacher arrives as weights + model_config.json (scripts/pth_to_safetensors.py);
/// `teacher-map` adds the dataset's map and then it scores. A dataset whose grid gives another
/// vocabulary is refused.
#[test]
fn teacher_map_completes_an_imported_teacher() {
    let dir = trained();
    let tmp = tempfile::tempdir().unwrap();
    let imported = tmp.path().join("imported");
    std::fs::create_dir(&imported).unwrap();
    for f in ["teacher.safetensors", "model_config.json"] {
        std::fs::copy(dir.join(f), imported.join(f)).unwrap();
    }
    let map = |data: &Path| {
        let mut c = bin();
        c.args(["teacher-map", "--dataset", "helsinki_test", "--teacher"]).arg(&imported).arg("--data-dir").arg(data);
        c.output().unwrap()
    };
    let other = root().join("crates/hoser/tests/fixtures/tiny");
    let o = map(&other);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("vocab_size 803"), "{}", stderr(&o));
    assert!(!imported.join("token_map.json").exists());
    let o = map(&data_dir());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(imported.join("token_map.json")).unwrap(),
        std::fs::read_to_string(dir.join("token_map.json")).unwrap()
    );
    let o = map(&data_dir());
    assert!(stderr(&o).contains("already exists"), "a second map is not written over the first");
    // Training into the imported teacher's directory would write its own teacher over it.
    let before: Vec<Vec<u8>> = ["teacher.safetensors", "model_config.json", "token_map.json"]
        .iter()
        .map(|f| std::fs::read(imported.join(f)).unwrap())
        .collect();
    let o = teacher(&imported, 1).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("holds a teacher") && stderr(&o).contains("teacher.safetensors"), "{}", stderr(&o));
    for (f, b) in ["teacher.safetensors", "model_config.json", "token_map.json"].iter().zip(&before) {
        assert_eq!(&std::fs::read(imported.join(f)).unwrap(), b, "{f} changed");
    }
    assert!(!imported.join("training.jsonl").exists());
    let mut c = bin();
    c.args(["teacher-score", "--teacher"]).arg(&imported).arg("--trajectories").arg(data_dir().join("test.csv"));
    c.arg("--out").arg(tmp.path().join("s.csv"));
    run(c);
}

#[test]
fn bad_teacher_configs_and_missing_data_are_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = teacher(&tmp.path().join("x"), 1);
    c.args(["--set", "model.n_head=3", "--set", "data.cell_deg=0", "--validate-config"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("model.n_embd") && stderr(&o).contains("data.cell_deg"), "{}", stderr(&o));

    let mut c = teacher(&tmp.path().join("y"), 1);
    c.args(["--data-dir", "no/such/dir"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no/such/dir/roadmap.geo"), "{}", stderr(&o));
    assert!(!tmp.path().join("y/teacher.safetensors").exists());
}

/// SIGTERM mid-run: the teacher stops after the step, leaves a resumable checkpoint and its
/// teacher files; `--auto-resume` finishes it, and the result equals an uninterrupted run's bit
/// for bit (validation perplexities and the exported teacher weights).
#[test]
fn an_interrupted_and_resumed_teacher_equals_an_uninterrupted_one() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    run(teacher(&straight, 10));

    let cut = tmp.path().join("cut");
    let mut child = teacher(&cut, 10).stderr(std::process::Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    let steps = |dir: &Path| {
        std::fs::read_to_string(dir.join("training.jsonl")).map(|t| t.matches("\"train_step\"").count()).unwrap_or(0)
    };
    while steps(&cut) < 5 {
        assert!(start.elapsed() < Duration::from_secs(60), "the run never got going");
        std::thread::sleep(Duration::from_millis(2));
    }
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "SIGTERM exits 143 after saving");
    let done_before = steps(&cut);
    assert!(done_before < 90, "the run finished before the signal ({done_before} steps)");
    assert!(cut.join("checkpoints/checkpoint_latest.safetensors").is_file());
    assert!(cut.join("teacher.safetensors").is_file(), "an interrupted run leaves its teacher too");

    let mut resume = teacher(&cut, 10);
    resume.arg("--auto-resume");
    run(resume);
    let ppl = |dir: &Path| validations(dir).iter().map(|e| metric(e, "val_perplexity")).collect::<Vec<f64>>();
    assert_eq!(ppl(&cut), ppl(&straight));
    assert_eq!(
        std::fs::read(cut.join("teacher.safetensors")).unwrap(),
        std::fs::read(straight.join("teacher.safetensors")).unwrap()
    );
}

/// `--dataset NAME` without `--config` reads `configs/lmtad/NAME.yaml`: the fork's teacher size
/// and LM-TAD's budget, valid as shipped.
#[test]
fn dataset_configs_are_read_and_valid() {
    for dataset in ["Beijing", "Porto", "San_Francisco"] {
        let o = bin().args(["teacher", "--dataset", dataset, "--print-config"]).output().unwrap();
        assert!(o.status.success(), "{dataset}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        let config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(config["model"]["size"], "teacher", "{dataset}");
        assert_eq!(config["training"]["epochs"], 50, "{dataset}");
        assert_eq!(config["output_dir"], format!("save/{dataset}/lmtad").as_str());
        assert_eq!(config["optimizer"]["betas"][1], 0.95);
        assert_eq!(config["optimizer"]["weight_decay_params"], "matrices");
        let o = bin().args(["teacher", "--dataset", dataset, "--validate-config"]).output().unwrap();
        assert!(o.status.success(), "{dataset}: {}", stderr(&o));
    }
}
