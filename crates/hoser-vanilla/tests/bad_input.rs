//! `hoser-vanilla` on broken copies of the bundled Helsinki fixture: each bad input is one clear
//! error (exit 1 or 2, never a panic) naming the file, and nothing is exported as "best"; inputs
//! that are fine for a tiny run (`--steps 1` with the stage's default warm-up ratio) just run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hoser/tests/fixtures/libcity/helsinki_test");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/hoser/helsinki_test.yaml");

/// A writable copy of the fixture's LibCity files in `root/data`.
fn fixture_copy(root: &Path) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in ["roadmap.geo", "roadmap.rel", "train.csv", "val.csv", "test.csv"] {
        std::fs::copy(Path::new(FIXTURE).join(f), data.join(f)).unwrap();
    }
    data
}

/// Runs a tiny model for `args` on the dataset in `data`, with the working directory `root`.
fn run(root: &Path, data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hoser-vanilla"))
        .args(["--config", CONFIG, "--seed", "1", "--batch-size", "16", "--set", "logging.progress=off"])
        .args(["--set", "model.road_id_emb_dim=8", "--set", "model.len_emb_dim=2", "--set", "model.type_emb_dim=2"])
        .args(["--set", "model.lon_emb_dim=2", "--set", "model.lat_emb_dim=2", "--set", "model.num_layers=1"])
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .current_dir(root)
        .output()
        .expect("hoser-vanilla runs")
}

/// Every file under `dir` whose name starts with `best`.
fn best_exports(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(best_exports(&path));
        } else if entry.file_name().to_string_lossy().starts_with("best") {
            found.push(path);
        }
    }
    found
}

fn assert_clean_failure(out: &Output, root: &Path, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(best_exports(root).is_empty(), "no best export: {:?}", best_exports(root));
    stderr
}

#[test]
fn a_header_only_val_csv_is_one_error_naming_it_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixture_copy(tmp.path());
    let val = data.join("val.csv");
    let header = std::fs::read_to_string(&val).unwrap().lines().next().unwrap().to_owned();
    std::fs::write(&val, header + "\n").unwrap();
    let out = run(tmp.path(), &data, &["--epochs", "1"]);
    let stderr = assert_clean_failure(&out, tmp.path(), 1);
    assert!(stderr.contains(&val.display().to_string()), "names the file: {stderr}");
    assert!(stderr.contains("validation split is empty"), "{stderr}");
    assert!(!tmp.path().join("log/helsinki_test/seed1/training.jsonl").exists(), "no training started");
}

#[test]
fn a_train_csv_of_single_road_trips_is_an_empty_training_split_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixture_copy(tmp.path());
    let train = data.join("train.csv");
    let text = std::fs::read_to_string(&train).unwrap();
    let header = text.lines().next().unwrap();
    // Keep only the first road and time of every trip.
    let first = |cell: &str| cell.trim_matches('"').split(',').next().unwrap_or("").to_owned();
    let cols: Vec<&str> = header.split(',').collect();
    let (c_rid, c_time) =
        (cols.iter().position(|c| *c == "rid_list").unwrap(), cols.iter().position(|c| *c == "time_list").unwrap());
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut rows = vec![header.to_owned()];
    for record in reader.records() {
        let record = record.unwrap();
        let cells: Vec<String> = record
            .iter()
            .enumerate()
            .map(|(i, c)| if i == c_rid || i == c_time { first(c) } else { c.to_owned() })
            .collect();
        rows.push(cells.join(","));
    }
    std::fs::write(&train, rows.join("\n") + "\n").unwrap();
    let out = run(tmp.path(), &data, &["--epochs", "1"]);
    let stderr = assert_clean_failure(&out, tmp.path(), 1);
    assert!(stderr.contains("train.csv"), "names the file: {stderr}");
    assert!(stderr.contains("140 single-road"), "says why it is empty: {stderr}");
}

#[test]
fn single_road_trips_are_counted_in_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixture_copy(tmp.path());
    let val = data.join("val.csv");
    let text = std::fs::read_to_string(&val).unwrap();
    let header = text.lines().next().unwrap();
    let cols = header.split(',').count();
    // Two single-road trips appended (the other columns left empty).
    let row = |road: &str| {
        let cells: Vec<&str> = header
            .split(',')
            .map(|c| match c {
                "rid_list" => road,
                "time_list" => "2023-05-01T08:00:00Z",
                _ => "0",
            })
            .collect();
        assert_eq!(cells.len(), cols);
        cells.join(",")
    };
    std::fs::write(&val, format!("{}{}\n{}\n", text, row("0"), row("1"))).unwrap();
    let out = run(tmp.path(), &data, &["--steps", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("val.csv") && stderr.contains("dropped 2 single-road"), "{stderr}");
}

#[test]
fn one_step_runs_with_the_stage_default_warmup_ratio() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixture_copy(tmp.path());
    let out = run(tmp.path(), &data, &["--steps", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a ratio-derived warm-up fits a 1-step run: {stderr}");
    assert!(!stderr.contains("warmup"), "no warm-up complaint: {stderr}");
}

#[test]
fn an_explicit_warmup_as_long_as_the_run_is_a_config_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixture_copy(tmp.path());
    let out = run(tmp.path(), &data, &["--steps", "2", "--warmup-steps", "2"]);
    let stderr = assert_clean_failure(&out, tmp.path(), 2);
    assert!(stderr.contains("warmup_steps"), "{stderr}");
}

#[test]
fn a_duplicated_roadmap_geo_row_is_one_error_naming_the_file_row_and_id() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixture_copy(tmp.path());
    let geo = data.join("roadmap.geo");
    let mut rows: Vec<String> = std::fs::read_to_string(&geo).unwrap().lines().map(str::to_owned).collect();
    rows[3] = rows[2].clone();
    std::fs::write(&geo, rows.join("\n") + "\n").unwrap();
    let out = run(tmp.path(), &data, &["--epochs", "1"]);
    let stderr = assert_clean_failure(&out, tmp.path(), 1);
    assert!(stderr.contains(&geo.display().to_string()), "names the file: {stderr}");
    assert!(stderr.contains("data row 3") && stderr.contains("duplicate geo_id 1"), "{stderr}");
}

#[test]
fn a_model_config_that_cannot_work_is_a_config_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixture_copy(tmp.path());
    let out = run(tmp.path(), &data, &["--epochs", "1", "--set", "model.num_heads=7"]);
    let stderr = assert_clean_failure(&out, tmp.path(), 2);
    assert!(stderr.contains("model.num_heads"), "{stderr}");
    let out = run(tmp.path(), &data, &["--epochs", "1", "--set", "model.num_roads=5"]);
    let stderr = assert_clean_failure(&out, tmp.path(), 2);
    assert!(stderr.contains("num_roads"), "the table sizes come from the data, not the config: {stderr}");
}
