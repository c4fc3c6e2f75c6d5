//! Study reports: the exact `summary.csv` of a hand-built study, the best trial's tie rule, the
//! best parameters as nested YAML that reads back bit for bit, the console table, and both PNG
//! plots (also for an empty and an all-NaN study).

use std::fs;
use std::path::Path;

use serde_json::{Map, Value, json};
use serde_yaml::Value as Yaml;
use tune::report::{PLOT_SIZE, format_significant};
use tune::{
    Direction, Journal, ParamsYamlError, ResourceUnit, SearchSpace, Study, best_params_yaml, best_trial, plot_history,
    plot_intermediate, summary_csv, table, write_summary_csv,
};

const SPACE: &str = r#"
optimizer.lr: {float: [1.0e-5, 1.0e-1], log: true}
model.arch: {categorical: ["resnet,18", vit]}
model.depth: {int: [2, 8]}
"#;

fn space(text: &str) -> SearchSpace {
    SearchSpace::from_yaml_str(text, "space.yaml").unwrap()
}

fn params(lr: f64, arch: &str, depth: i64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("optimizer.lr".into(), json!(lr));
    m.insert("model.arch".into(), json!(arch));
    m.insert("model.depth".into(), json!(depth));
    m
}

fn journal(dir: &Path, direction: Direction) -> Journal {
    Journal::create(dir, "study", direction, json!({})).unwrap().0
}

/// Maximize; trial 0 complete, 1 pruned (a NaN report), 2 failed, 3 complete (the best),
/// 4 complete without reports, 5 interrupted then retried (running, attempt 1).
fn hand_built(dir: &Path) -> Study {
    let mut j = journal(dir, Direction::Maximize);
    let t = j.start_trial(params(0.001, "resnet,18", 4)).unwrap();
    for (step, v) in [(0, 0.5), (1, 0.7), (2, 0.8)] {
        j.report(t.number, step, v).unwrap();
    }
    j.completed(t.number, 0.8).unwrap();
    let t = j.start_trial(params(0.01, "vit", 2)).unwrap();
    j.report(t.number, 0, 0.3).unwrap();
    j.report(t.number, 1, f64::NAN).unwrap();
    j.pruned(t.number, 1).unwrap();
    let t = j.start_trial(params(1e-5, "vit", 8)).unwrap();
    j.report(t.number, 0, 0.6).unwrap();
    j.failed(t.number, "out of memory").unwrap();
    let t = j.start_trial(params(0.0014, "resnet,18", 6)).unwrap();
    j.report(t.number, 0, 0.9).unwrap();
    j.report(t.number, 1, 0.95).unwrap();
    j.completed(t.number, 0.95).unwrap();
    let t = j.start_trial(params(0.1, "vit", 3)).unwrap();
    j.completed(t.number, 0.5).unwrap();
    let t = j.start_trial(params(0.0001, "vit", 5)).unwrap();
    j.report(t.number, 0, 0.1).unwrap();
    j.failed(t.number, "interrupted").unwrap();
    drop(t);
    let retry = j.retry_trial(5).unwrap();
    assert_eq!(retry.attempt, 1);
    j.study().clone()
}

const EXPECTED_CSV: &str = "\
trial,state,attempts,optimizer.lr,model.arch,model.depth,value,best_intermediate,epochs_run,pruned_at,fail_reason
0,complete,1,0.001,\"resnet,18\",4,0.8,0.8,3,,
1,pruned,1,0.01,vit,2,,0.3,2,1,
2,failed,1,0.00001,vit,8,,0.6,1,,out of memory
3,complete,1,0.0014,\"resnet,18\",6,0.95,0.95,2,,
4,complete,1,0.1,vit,3,0.5,,0,,
5,running,2,0.0001,vit,5,,0.1,1,,interrupted
";

#[test]
fn summary_csv_of_a_hand_built_study_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let study = hand_built(dir.path());
    assert_eq!(summary_csv(&study, &space(SPACE), ResourceUnit::Epoch), EXPECTED_CSV);

    // Steps: the resource is the last reported step itself; the column is renamed.
    let steps = summary_csv(&study, &space(SPACE), ResourceUnit::Step);
    let lines: Vec<&str> = steps.lines().collect();
    assert!(lines[0].ends_with(",value,best_intermediate,steps_run,pruned_at,fail_reason"), "{}", lines[0]);
    assert_eq!(lines[1], "0,complete,1,0.001,\"resnet,18\",4,0.8,0.8,2,,");
    assert_eq!(lines[5], "4,complete,1,0.1,vit,3,0.5,,0,,");
}

#[test]
fn summary_values_read_back_exactly_and_best_intermediate_follows_the_direction() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path(), Direction::Minimize);
    let awkward: f64 = 0.1 + 0.2;
    let t = j.start_trial(params(1e-5 * 3.0, "vit", 2)).unwrap();
    for (step, v) in [(0, 2.0), (1, f64::NAN), (2, 1.0 / 3.0), (3, 0.5)] {
        j.report(t.number, step, v).unwrap();
    }
    j.completed(t.number, awkward).unwrap();
    let csv = summary_csv(j.study(), &space(SPACE), ResourceUnit::Epoch);
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[3].parse::<f64>().unwrap().to_bits(), (1e-5 * 3.0f64).to_bits(), "{csv}");
    assert_eq!(row[6].parse::<f64>().unwrap().to_bits(), awkward.to_bits(), "{csv}");
    // Minimize: the lowest report, the NaN ignored.
    assert_eq!(row[7].parse::<f64>().unwrap().to_bits(), (1.0f64 / 3.0).to_bits(), "{csv}");
    assert_eq!(row[8], "4");
}

#[test]
fn write_summary_csv_replaces_the_file_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let study = hand_built(&dir.path().join("study"));
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let path = out.join("summary.csv");
    fs::write(&path, "old summary").unwrap();
    write_summary_csv(&path, &study, &space(SPACE), ResourceUnit::Epoch).unwrap();
    write_summary_csv(&path, &study, &space(SPACE), ResourceUnit::Epoch).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), EXPECTED_CSV);
    let names: Vec<String> =
        fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["summary.csv"]);

    let missing = out.join("no-such-dir").join("summary.csv");
    let err = write_summary_csv(&missing, &study, &space(SPACE), ResourceUnit::Epoch).unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
}

#[test]
fn best_trial_takes_the_best_finite_complete_value_and_the_lowest_number_on_ties() {
    let run = |direction: Direction| {
        let dir = tempfile::tempdir().unwrap();
        let mut j = journal(dir.path(), direction);
        // Trial 4 is pruned with the best intermediate value and trial 5 fails: neither counts.
        for value in [0.5, f64::NAN, 0.2, 0.2, f64::NEG_INFINITY, f64::INFINITY, 0.5] {
            let t = j.start_trial(params(0.001, "vit", 2)).unwrap();
            j.completed(t.number, value).unwrap();
        }
        let t = j.start_trial(params(0.001, "vit", 2)).unwrap();
        j.report(t.number, 0, -10.0).unwrap();
        j.pruned(t.number, 0).unwrap();
        let t = j.start_trial(params(0.001, "vit", 2)).unwrap();
        j.report(t.number, 0, 100.0).unwrap();
        j.failed(t.number, "boom").unwrap();
        best_trial(j.study()).map(|t| t.number)
    };
    assert_eq!(run(Direction::Minimize), Some(2));
    assert_eq!(run(Direction::Maximize), Some(0));

    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path(), Direction::Minimize);
    assert_eq!(best_trial(j.study()), None);
    let t = j.start_trial(params(0.001, "vit", 2)).unwrap();
    j.completed(t.number, f64::NAN).unwrap();
    assert_eq!(best_trial(j.study()), None);
}

#[test]
fn best_params_yaml_is_nested_in_space_order_and_reads_back_bit_for_bit() {
    let space = space(
        r#"
optimizer.lr: {float: [1.0e-6, 1.0]}
model.arch: {categorical: ["resnet,18", vit]}
optimizer.wd: {float: [0.0, 1.0]}
model.depth: {int: [2, 8]}
seed: {int: [0, 10]}
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path(), Direction::Minimize);
    let lr: f64 = 0.1 + 0.2;
    let mut p = Map::new();
    p.insert("optimizer.lr".into(), json!(lr));
    p.insert("model.arch".into(), json!("resnet,18"));
    // An integer stored for a float parameter is written as a float.
    p.insert("optimizer.wd".into(), json!(1));
    p.insert("model.depth".into(), json!(4));
    p.insert("seed".into(), json!(7));
    let t = j.start_trial(p).unwrap();
    j.completed(t.number, 1e-5 / 3.0).unwrap();
    let study = j.study().clone();
    let best = best_trial(&study).unwrap();
    let text = best_params_yaml(best, &space).unwrap();

    let first = text.lines().next().unwrap();
    assert_eq!(first, format!("# best trial 0: value {}", 1e-5 / 3.0));
    let top: Vec<&str> = text.lines().filter(|l| !l.starts_with([' ', '#'])).collect();
    assert_eq!(top, ["optimizer:", "model:", "seed: 7"], "{text}");
    assert!(text.contains("\n  lr: ") && text.contains("\n  depth: 4\n"), "{text}");

    let back: Yaml = serde_yaml::from_str(&text).unwrap();
    let expected: Yaml =
        serde_yaml::from_str("optimizer: {lr: 0.5, wd: 1.0}\nmodel: {arch: 'resnet,18', depth: 4}\nseed: 7").unwrap();
    let mut expected = expected;
    expected["optimizer"]["lr"] = Yaml::from(lr);
    assert_eq!(back, expected, "{text}");
    let read_lr = back["optimizer"]["lr"].as_f64().unwrap();
    assert_eq!(read_lr.to_bits(), lr.to_bits(), "{text}");
    assert!(back["optimizer"]["wd"].is_f64(), "{text}");
    assert!(back["model"]["depth"].is_i64(), "{text}");
}

#[test]
fn best_params_yaml_refuses_a_key_that_prefixes_another_naming_both() {
    for text in ["a: {int: [0, 3]}\na.b: {int: [0, 3]}\n", "a.b: {int: [0, 3]}\na: {int: [0, 3]}\n"] {
        let space = space(text);
        let dir = tempfile::tempdir().unwrap();
        let mut j = journal(dir.path(), Direction::Minimize);
        let mut p = Map::new();
        p.insert("a".into(), json!(1));
        p.insert("a.b".into(), json!(2));
        let t = j.start_trial(p).unwrap();
        j.completed(t.number, 1.0).unwrap();
        let err = best_params_yaml(&j.study().trials[0], &space).unwrap_err();
        assert!(
            matches!(&err, ParamsYamlError::KeyConflict { parent, child } if parent == "a" && child == "a.b"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("`a`") && message.contains("`a.b`"), "{message}");
    }
    // `ab` is not nested under `a`: no conflict.
    let space = space("a: {int: [0, 3]}\nab.c: {int: [0, 3]}\n");
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path(), Direction::Minimize);
    let mut p = Map::new();
    p.insert("a".into(), json!(1));
    p.insert("ab.c".into(), json!(2));
    let t = j.start_trial(p).unwrap();
    j.completed(t.number, 1.0).unwrap();
    let text = best_params_yaml(&j.study().trials[0], &space).unwrap();
    assert_eq!(text, "# best trial 0: value 1\na: 1\nab:\n  c: 2\n");
}

#[test]
fn table_marks_the_best_row_and_counts_the_states() {
    let dir = tempfile::tempdir().unwrap();
    let study = hand_built(dir.path());
    let text = table(&study, &space(SPACE), ResourceUnit::Epoch);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 6 + 2, "{text}");
    let marked: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with('*')).collect();
    assert_eq!(marked.len(), 1, "{text}");
    let cells: Vec<&str> = marked[0].split_whitespace().collect();
    assert_eq!(cells, ["*", "3", "complete", "0.0014", "resnet,18", "6", "0.95", "2"], "{text}");
    // Fixed width: every row's state starts in the header's column.
    let column = lines[0].find("state").unwrap();
    for line in &lines[1..7] {
        assert!(line[column..].starts_with(|c: char| c.is_ascii_lowercase()), "{text}");
    }
    assert!(lines[0].contains("epochs_run"), "{text}");
    assert_eq!(lines[6].split_whitespace().collect::<Vec<_>>(), ["5", "running", "0.0001", "vit", "5", "-", "1"]);
    assert_eq!(lines[7], "best: trial 3, value 0.95 (params optimizer.lr=0.0014, model.arch=resnet,18, model.depth=6)");
    assert_eq!(lines[8], "6 trials: 3 complete, 1 pruned, 1 failed, 1 running");

    let dir = tempfile::tempdir().unwrap();
    let empty = journal(dir.path(), Direction::Minimize).study().clone();
    let text = table(&empty, &space(SPACE), ResourceUnit::Step);
    assert_eq!(
        text.lines().skip(1).collect::<Vec<_>>(),
        ["no complete trial yet", "0 trials: 0 complete, 0 pruned, 0 failed, 0 running"]
    );
}

#[test]
fn table_floats_have_four_significant_digits() {
    let cases = [
        (0.00123456, "0.001235"),
        (123456.0, "1.235e5"),
        (0.1 + 0.2, "0.3"),
        (3e-5, "3e-5"),
        (9.99996, "10"),
        (-2.5, "-2.5"),
        (1234.0, "1234"),
        (0.0, "0"),
    ];
    for (v, text) in cases {
        assert_eq!(format_significant(v, 4), text, "{v}");
    }
    assert_eq!(format_significant(f64::NAN, 4), "NaN");

    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path(), Direction::Minimize);
    let t = j.start_trial(params(0.000123456, "vit", 2)).unwrap();
    j.completed(t.number, 1.0).unwrap();
    let text = table(j.study(), &space(SPACE), ResourceUnit::Epoch);
    assert!(text.lines().nth(1).unwrap().contains(" 0.0001235 "), "{text}");
}

/// The PNG signature, then the IHDR chunk's width and height.
fn assert_png(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), PLOT_SIZE);
    bytes
}

#[test]
fn both_plots_are_written_for_a_study_an_empty_one_and_an_all_nan_one() {
    let dir = tempfile::tempdir().unwrap();
    let full = hand_built(&dir.path().join("full"));
    let empty = journal(&dir.path().join("empty"), Direction::Minimize).study().clone();
    let nan = {
        let mut j = journal(&dir.path().join("nan"), Direction::Maximize);
        let t = j.start_trial(params(0.001, "vit", 2)).unwrap();
        j.report(t.number, 0, f64::NAN).unwrap();
        j.completed(t.number, f64::NAN).unwrap();
        let t = j.start_trial(params(0.001, "vit", 2)).unwrap();
        j.report(t.number, 0, f64::INFINITY).unwrap();
        j.pruned(t.number, 0).unwrap();
        j.study().clone()
    };
    let mut images = Vec::new();
    for (name, study) in [("full", &full), ("empty", &empty), ("nan", &nan)] {
        let history = dir.path().join(format!("{name}-history.png"));
        let intermediate = dir.path().join(format!("{name}-intermediate.png"));
        plot_history(study, &history).unwrap();
        plot_intermediate(study, &intermediate, ResourceUnit::Epoch).unwrap();
        images.push((assert_png(&history), assert_png(&intermediate)));
    }
    // The full study draws something the empty one does not; with nothing finite to draw,
    // the all-NaN study's images are the empty study's note.
    assert_ne!(images[0].0, images[1].0);
    assert_ne!(images[0].1, images[1].1);
    assert_eq!(images[1], images[2]);
}

#[test]
fn plot_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let study = hand_built(&dir.path().join("study"));
    let path = dir.path().join("missing").join("history.png");
    let err = plot_history(&study, &path).unwrap_err();
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    let err = plot_intermediate(&study, &path, ResourceUnit::Step).unwrap_err();
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}
