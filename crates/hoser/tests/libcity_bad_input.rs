//! Malformed LibCity inputs a careless user would give, on copies of the 12-road fixture in
//! `tests/fixtures/tiny`: each one is a single error naming the file, the row and the value, or (for
//! a reordered `roadmap.geo`) the same network as the original.

use std::path::{Path, PathBuf};

use hoser::data::{DataError, DatasetFiles, DatasetOptions, HoserData, RoadNetwork};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// A writable copy of the fixture.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["roadmap.geo", "roadmap.rel", "train.csv", "val.csv", "test.csv"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn options() -> DatasetOptions {
    DatasetOptions { num_zones: 3, ..DatasetOptions::default() }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn read_network(dir: &Path) -> Result<RoadNetwork, DataError> {
    RoadNetwork::read(&dir.join("roadmap.geo"), &dir.join("roadmap.rel"))
}

fn load_error(dir: &Path) -> String {
    HoserData::load_files(DatasetFiles::in_dir(dir), &options(), None).unwrap_err().to_string()
}

#[test]
fn swapped_geo_rows_are_put_back_in_geo_id_order() {
    let original = read_network(&fixture()).unwrap();
    let dir = fixture_copy();
    let geo = dir.path().join("roadmap.geo");
    let mut rows = lines(&geo);
    // Rows of roads 0 and 5 swapped, and the last row moved to the front.
    rows.swap(1, 6);
    let last = rows.pop().unwrap();
    rows.insert(1, last);
    write_lines(&geo, &rows);
    let net = read_network(dir.path()).unwrap();
    assert_eq!(net.roads(), original.roads(), "roads are indexed by geo_id, not by row");
    assert_eq!(net.highway_labels(), original.highway_labels());
    for id in 0..original.num_roads() as u32 {
        assert_eq!(net.successors(id), original.successors(id));
    }
}

#[test]
fn a_duplicated_geo_id_is_an_error_naming_both_rows() {
    let dir = fixture_copy();
    let geo = dir.path().join("roadmap.geo");
    let mut rows = lines(&geo);
    // Road 3's row duplicated in place of road 4's: 12 rows, but id 4 never appears.
    rows[5] = rows[4].clone();
    write_lines(&geo, &rows);
    let msg = read_network(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("roadmap.geo"), "{msg}");
    assert!(msg.contains("data row 5") && msg.contains("duplicate geo_id 3") && msg.contains("data row 4"), "{msg}");
}

#[test]
fn a_deleted_geo_row_is_blamed_on_roadmap_geo_and_names_the_missing_id() {
    let dir = fixture_copy();
    let geo = dir.path().join("roadmap.geo");
    let mut rows = lines(&geo);
    rows.remove(5); // road 4
    write_lines(&geo, &rows);
    let msg = read_network(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("roadmap.geo") && !msg.contains("roadmap.rel,"), "blames roadmap.geo: {msg}");
    assert!(msg.contains("geo_id 11 is out of range") && msg.contains("0..10"), "{msg}");
    assert!(msg.contains("geo_id 4 is missing"), "{msg}");
    assert!(msg.contains("data row 11"), "names the row of the out-of-range id: {msg}");
}

#[test]
fn a_non_integer_geo_id_is_an_error_naming_row_and_value() {
    for bad in ["3.5", "x", "-1"] {
        let dir = fixture_copy();
        let geo = dir.path().join("roadmap.geo");
        let mut rows = lines(&geo);
        rows[4] = rows[4].replacen("3,", &format!("{bad},"), 1);
        write_lines(&geo, &rows);
        let msg = read_network(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("roadmap.geo") && msg.contains("data row 4"), "{bad}: {msg}");
        assert!(msg.contains(&format!("geo_id \"{bad}\" is not a road id")), "{bad}: {msg}");
    }
}

#[test]
fn a_header_only_roadmap_rel_is_an_error_naming_it() {
    let dir = fixture_copy();
    std::fs::write(dir.path().join("roadmap.rel"), "rel_id,type,origin_id,destination_id\n").unwrap();
    let msg = read_network(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("roadmap.rel") && msg.contains("no relations"), "{msg}");
}

#[test]
fn a_trajectory_naming_a_road_not_in_roadmap_geo_names_file_row_and_id() {
    let dir = fixture_copy();
    let train = dir.path().join("train.csv");
    let mut rows = lines(&train);
    rows[2] = rows[2].replacen("\"4,7,9,1\"", "\"4,7,99,1\"", 1);
    write_lines(&train, &rows);
    let msg = load_error(dir.path());
    assert!(msg.contains("train.csv") && msg.contains("data row 2"), "{msg}");
    assert!(msg.contains("unknown road id 99") && msg.contains("12 roads"), "{msg}");
}

#[test]
fn a_malformed_time_names_file_row_and_value() {
    for bad in ["2015-11-07 23:59:30", "2015-13-07T23:59:30Z", "yesterday"] {
        let dir = fixture_copy();
        let train = dir.path().join("train.csv");
        let mut rows = lines(&train);
        rows[2] = rows[2].replacen("2015-11-07T23:59:30Z", bad, 1);
        write_lines(&train, &rows);
        let msg = load_error(dir.path());
        assert!(msg.contains("train.csv") && msg.contains("data row 2"), "{bad}: {msg}");
        assert!(msg.contains(&format!("{bad:?}")) && msg.contains("%Y-%m-%dT%H:%M:%SZ"), "{bad}: {msg}");
    }
}

#[test]
fn non_numeric_columns_name_file_row_and_value() {
    // (file, row index in the file, text to replace, replacement, what the message must contain)
    let cases = [
        ("roadmap.geo", 3, "853.0", "long", "length \"long\" is not a number"),
        ("roadmap.rel", 1, ",0,1", ",0,one", "destination_id \"one\" is not a road id"),
        ("train.csv", 1, "\"0,5,8,10,3\"", "\"0,5,x,10,3\"", "rid_list entry \"x\" is not a road id"),
    ];
    for (file, line, from, to, expected) in cases {
        let dir = fixture_copy();
        let path = dir.path().join(file);
        let mut rows = lines(&path);
        assert!(rows[line].contains(from), "{file}: {}", rows[line]);
        rows[line] = rows[line].replacen(from, to, 1);
        write_lines(&path, &rows);
        let msg = load_error(dir.path());
        assert!(msg.contains(file) && msg.contains(&format!("data row {line}")), "{file}: {msg}");
        assert!(msg.contains(expected), "{file}: {msg}");
    }
}

#[test]
fn a_missing_train_csv_names_it() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("train.csv")).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains(&dir.path().join("train.csv").display().to_string()), "{msg}");
}

#[test]
fn single_road_trajectories_are_counted_and_named_in_the_summary() {
    let dir = fixture_copy();
    let val = dir.path().join("val.csv");
    let mut rows = lines(&val);
    rows.push("2,202,0,\"3\",\"2015-11-08T10:00:00Z\"".into());
    rows.push("3,203,0,7,2015-11-08T10:00:00Z".into());
    write_lines(&val, &rows);
    let data = HoserData::load_files(DatasetFiles::in_dir(dir.path()), &options(), None).unwrap();
    assert_eq!((data.val.summary.rows, data.val.summary.single_road, data.val.samples.len()), (4, 2, 2));
    let line = data.val.summary.describe();
    assert!(line.contains("val.csv") && line.contains("dropped 2 single-road"), "{line}");
}
