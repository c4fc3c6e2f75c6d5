//! Tests of `hoser::data` on the hand-made 12-road fixture in `tests/fixtures/tiny`.
//!
//! The fixture is a 3 × 2 grid of intersections 0.01° apart near Beijing:
//!
//! ```text
//!   D(116.40,39.91) --7-->  E(116.41,39.91) --8-->  F(116.42,39.91)
//!        ^   <----11-----   |  ^                   |  ^
//!        4                  9  5 (bent via          10 6
//!        |                  v  |  116.412,39.905)  v  |
//!   A(116.40,39.90) --0-->  B(116.41,39.90) --1-->  C(116.42,39.90)
//!                   <--2--                  <--3--
//! ```
//!
//! Road 11 writes D as `116.400,39.910`, so by exact text it does not meet roads 4 and 7 at D.
//! Expected values are computed by hand below; the `REF_*` literals were produced by running the
//! upstream HOSER Python code (pandas, shapely, `haversine`, numpy) on these files.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use hoser::data::{
    Batch, CacheStatus, Collator, DataError, DatasetFiles, DatasetOptions, FeatureOptions, HoserData,
    InvalidTrajectory, PartitionSource, Road, RoadNetwork, Sample, Timestamp, ZonePartition, ZoneTransitions,
    read_trajectories,
};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

fn network() -> RoadNetwork {
    let d = fixture();
    RoadNetwork::read(&d.join("roadmap.geo"), &d.join("roadmap.rel")).expect("fixture network")
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

/// Independent haversine (R = 6371.0088 km), `[lon, lat]` points.
fn hav(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (la1, lo1, la2, lo2) = (a[1].to_radians(), a[0].to_radians(), b[1].to_radians(), b[0].to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2) + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn assert_all_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(close(f64::from(g), w, tol), "{what}[{i}]: got {g}, want {w}");
    }
}

// Hand-placed centroids `[lon, lat]` (midpoints of straight roads; road 5 is computed below).
const A: [f64; 2] = [116.40, 39.90];
const B: [f64; 2] = [116.41, 39.90];
const C: [f64; 2] = [116.42, 39.90];
const E: [f64; 2] = [116.41, 39.91];
const F: [f64; 2] = [116.42, 39.91];

fn mid(p: [f64; 2], q: [f64; 2]) -> [f64; 2] {
    [(p[0] + q[0]) / 2.0, (p[1] + q[1]) / 2.0]
}

// ---------------------------------------------------------------- readers

#[test]
fn road_network_reader_values() {
    let net = network();
    assert_eq!(net.num_roads(), 12);
    assert_eq!(net.num_relations(), 25);
    // Successors in roadmap.rel file order, not sorted.
    assert_eq!(net.successors(0), &[1, 5, 2]);
    assert_eq!(net.successors(3), &[2, 5, 1]);
    assert_eq!(net.successors(5), &[11, 9, 8]);
    assert_eq!(net.successors(9), &[1, 2, 5]);
    assert_eq!(net.successors(11), &[7]);
    assert_eq!(net.candidate_index(0, 5), Some(1));
    assert_eq!(net.candidate_index(0, 8), None);

    let r5 = net.road(5);
    assert_eq!(r5.coordinates, vec![[116.41, 39.9], [116.412, 39.905], [116.41, 39.91]]);
    assert_eq!(r5.length, 1200.0);
    assert_eq!((r5.start_key.as_str(), r5.end_key.as_str()), ("116.41,39.9", "116.41,39.91"));
    assert_eq!(net.road(11).end_key, "116.400,39.910");
    assert_eq!(net.road(11).end(), [116.4, 39.91]);

    // Highway: list-strings resolve to the first element, or the second after 'unclassified'.
    assert_eq!(net.road(3).highway, "residential");
    assert_eq!(net.road(5).highway, "primary");
    assert_eq!(net.highway_classes(), &["primary", "residential", "secondary", "tertiary"]);
    assert_eq!(net.highway_labels(), &[0, 0, 2, 1, 3, 0, 3, 2, 2, 1, 3, 1]);

    // Centroids: straight roads at their midpoints; road 5 has two segments of equal length
    // sqrt(0.002² + 0.005²) with midpoints (116.411, 39.9025) and (116.411, 39.9075).
    let c = net.centroids();
    assert!(close(c[0][0], 116.405, 1e-12) && close(c[0][1], 39.9, 1e-12));
    assert!(close(c[5][0], 116.411, 1e-12) && close(c[5][1], 39.905, 1e-12), "{:?}", c[5]);
    assert!(close(c[9][0], 116.41, 1e-12) && close(c[9][1], 39.905, 1e-12));
}

#[test]
fn centroid_weights_segments_by_length() {
    // Segment 1: (0,0)-(2,0), length 2, midpoint (1,0); segment 2: (2,0)-(2,1), length 1, midpoint
    // (2,0.5). Centroid = (2·1 + 1·2, 2·0 + 1·0.5) / 3 = (4/3, 1/6). A zero-length line gives its
    // first point, like GEOS.
    let c = hoser::data::line_centroid(&[[0.0, 0.0], [2.0, 0.0], [2.0, 0.0], [2.0, 1.0]]).unwrap();
    assert!(close(c[0], 4.0 / 3.0, 1e-15) && close(c[1], 1.0 / 6.0, 1e-15));
    assert_eq!(hoser::data::line_centroid(&[[5.0, 6.0], [5.0, 6.0]]), Some([5.0, 6.0]));
    assert_eq!(hoser::data::line_centroid(&[]), None);
}

#[test]
fn integer_highway_codes_sort_numerically() {
    let dir = tempfile::tempdir().unwrap();
    let geo = dir.path().join("roadmap.geo");
    let rel = dir.path().join("roadmap.rel");
    std::fs::write(
        &geo,
        "coordinates,highway,length\n\"[[0,0],[1,0]]\",10,1\n\"[[1,0],[2,0]]\",9,1\n\"[[2,0],[3,0]]\",10,1\n\"[[3,0],[4,0]]\",2,1\n",
    )
    .unwrap();
    std::fs::write(&rel, "origin_id,destination_id\n0,1\n").unwrap();
    let net = RoadNetwork::read(&geo, &rel).unwrap();
    // Numeric order 2 < 9 < 10 (as strings "10" would sort first).
    assert_eq!(net.highway_classes(), &["2", "9", "10"]);
    assert_eq!(net.highway_labels(), &[2, 1, 2, 0]);
}

#[test]
fn geo_and_rel_errors_name_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let geo = dir.path().join("roadmap.geo");
    let rel = dir.path().join("roadmap.rel");
    std::fs::write(&geo, "coordinates,highway,length\n\"[[0,0],[1,0]]\",a,1\n\"[[1,0],[2,0]\",a,1\n").unwrap();
    std::fs::write(&rel, "origin_id,destination_id\n0,1\n").unwrap();
    let msg = RoadNetwork::read(&geo, &rel).unwrap_err().to_string();
    assert!(msg.contains("roadmap.geo") && msg.contains("data row 2") && msg.contains("coordinates"), "{msg}");

    std::fs::write(&geo, "coordinates,highway,length\n\"[[0,0],[1,0]]\",a,1\n\"[[1,0],[2,0]]\",a,1\n").unwrap();
    std::fs::write(&rel, "origin_id,destination_id\n0,1\n1,7\n").unwrap();
    let msg = RoadNetwork::read(&geo, &rel).unwrap_err().to_string();
    assert!(msg.contains("roadmap.rel") && msg.contains("data row 2") && msg.contains("destination_id 7"), "{msg}");

    std::fs::write(&rel, "from,to\n0,1\n").unwrap();
    let err = RoadNetwork::read(&geo, &rel).unwrap_err();
    assert!(matches!(err, DataError::MissingColumn { column: "origin_id", .. }), "{err}");
}

#[test]
fn timestamps_parse_by_hand() {
    let t = Timestamp::parse("2015-11-05T08:00:00Z").unwrap();
    // 16744 days from 1970-01-01 to 2015-11-05, plus 8 h.
    assert_eq!(t.seconds(), 16_744 * 86_400 + 8 * 3600);
    assert_eq!(t.seconds(), 1_446_710_400);
    assert_eq!(t.weekday(), 3, "2015-11-05 is a Thursday");
    assert!(!t.is_weekend());
    let sat = Timestamp::parse("2015-11-07T23:58:00Z").unwrap();
    assert_eq!(sat.weekday(), 5);
    assert!(sat.is_weekend());
    assert_eq!(Timestamp::parse("2015-11-08T00:00:10Z").unwrap().weekday(), 6);
    assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z").unwrap().seconds(), 0);
    assert_eq!(Timestamp::parse("2000-02-29T12:00:00Z").unwrap().to_string(), "2000-02-29T12:00:00Z");
    assert_eq!(Timestamp::parse("1969-12-31T23:59:59Z").unwrap().seconds(), -1);
    assert!(Timestamp::parse("2015-02-29T00:00:00Z").is_err(), "2015 is not a leap year");
    assert!(Timestamp::parse("2015-11-05 08:00:00").is_err());
    assert!(Timestamp::parse("2015-11-05T24:00:00Z").is_err());
    assert!(close(sat.day_fraction(), (23.0 * 60.0 + 58.0) / 1440.0, 1e-15));
    // Round trip over a range of days.
    for days in (-719_162..2_932_896).step_by(997) {
        // Years 1..=9999: the format has exactly four year digits.
        let t = Timestamp(days * 86_400 + 3_723);
        assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
    }
}

#[test]
fn trajectory_reader_values() {
    let net = network();
    let f = read_trajectories(&fixture().join("train.csv"), &net, false).unwrap();
    assert_eq!(f.summary.rows, 5);
    assert_eq!(f.summary.kept, 5);
    assert_eq!(f.summary.single_road, 1);
    assert_eq!(f.summary.samples(), 4);
    assert_eq!(f.summary.skipped.total(), 0);
    let t0 = &f.trajectories[0];
    assert_eq!((t0.row, t0.roads.as_slice()), (1, &[0, 5, 8, 10, 3][..]));
    assert_eq!(t0.times[1].seconds() - t0.times[0].seconds(), 30);
    let single = &f.trajectories[2];
    assert_eq!((single.row, single.roads.as_slice()), (3, &[6][..]));
}

fn write_train(dir: &Path, rows: &[&str]) -> PathBuf {
    let path = dir.join("train.csv");
    let mut text = String::from("rid_list,time_list\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD_ROW: &str = "\"0,5\",\"2015-11-05T08:00:00Z,2015-11-05T08:00:30Z\"";

#[test]
fn bad_pair_is_an_error_naming_file_row_and_roads() {
    let net = network();
    let dir = tempfile::tempdir().unwrap();
    // Row 2: 0 -> 8 is not in roadmap.rel (successors of 0 are 1, 5, 2).
    let path = write_train(
        dir.path(),
        &[GOOD_ROW, "\"0,8,10\",\"2015-11-05T08:00:00Z,2015-11-05T08:01:00Z,2015-11-05T08:02:00Z\"", GOOD_ROW],
    );
    let err = read_trajectories(&path, &net, false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("train.csv"), "{msg}");
    assert!(msg.contains("data row 2"), "{msg}");
    assert!(msg.contains("road 0 -> road 8"), "{msg}");
    assert!(msg.contains("skip_invalid"), "{msg}");
    assert!(matches!(
        err,
        DataError::InvalidTrajectory {
            row: 2,
            reason: InvalidTrajectory::BadTransition { from: 0, to: 8, position: 0 },
            ..
        }
    ));

    let f = read_trajectories(&path, &net, true).unwrap();
    assert_eq!(f.summary.rows, 3);
    assert_eq!(f.summary.kept, 2);
    assert_eq!(f.summary.skipped.bad_transition, 1);
    assert_eq!(f.summary.skipped.total(), 1);
    assert_eq!(f.trajectories.iter().map(|t| t.row).collect::<Vec<_>>(), vec![1, 3]);
    assert!(f.summary.skipped_examples[0].contains("data row 2"), "{:?}", f.summary.skipped_examples);
    assert!(f.summary.describe().contains("bad_transition 1"), "{}", f.summary.describe());
}

#[test]
fn other_invalid_rows_are_errors_or_counted_skips() {
    let net = network();
    let dir = tempfile::tempdir().unwrap();
    type Case = (&'static str, &'static str, fn(&InvalidTrajectory) -> bool);
    let cases: [Case; 3] = [
        ("\"0,5,8\",\"2015-11-05T08:00:00Z,2015-11-05T08:00:30Z\"", "time_list has 2", |r| {
            matches!(r, InvalidTrajectory::LengthMismatch { roads: 3, times: 2 })
        }),
        ("\"0,12\",\"2015-11-05T08:00:00Z,2015-11-05T08:00:30Z\"", "unknown road id 12", |r| {
            matches!(r, InvalidTrajectory::UnknownRoad { road: 12, position: 1, .. })
        }),
        ("\"0,5\",\"2015-11-05T08:00:30Z,2015-11-05T08:00:00Z\"", "goes backwards", |r| {
            matches!(r, InvalidTrajectory::NonMonotonicTime { position: 1, .. })
        }),
    ];
    for (row, text, check) in cases {
        let path = write_train(dir.path(), &[GOOD_ROW, row]);
        match read_trajectories(&path, &net, false) {
            Err(DataError::InvalidTrajectory { row: 2, ref reason, .. }) if check(reason) => {
                let msg = read_trajectories(&path, &net, false).unwrap_err().to_string();
                assert!(msg.contains("train.csv") && msg.contains("data row 2") && msg.contains(text), "{msg}");
            }
            other => panic!("{row}: unexpected {other:?}"),
        }
        let f = read_trajectories(&path, &net, true).unwrap();
        assert_eq!((f.summary.kept, f.summary.skipped.total()), (1, 1), "{row}");
    }
    let s = {
        let path = write_train(
            dir.path(),
            &[
                "\"0,5,8\",\"2015-11-05T08:00:00Z,2015-11-05T08:00:30Z\"",
                "\"0,12\",\"2015-11-05T08:00:00Z,2015-11-05T08:00:30Z\"",
                "\"0,5\",\"2015-11-05T08:00:30Z,2015-11-05T08:00:00Z\"",
                "\"0,8\",\"2015-11-05T08:00:00Z,2015-11-05T08:00:30Z\"",
            ],
        );
        read_trajectories(&path, &net, true).unwrap().summary.skipped
    };
    assert_eq!((s.length_mismatch, s.unknown_road, s.non_monotonic_time, s.bad_transition), (1, 1, 1, 1));

    // Cells that do not parse are errors even with skip_invalid.
    for row in ["\"0,x\",\"2015-11-05T08:00:00Z,2015-11-05T08:00:30Z\"", "\"0,5\",\"2015-11-05T08:00:00Z,yesterday\""] {
        let path = write_train(dir.path(), &[row]);
        let err = read_trajectories(&path, &net, true).unwrap_err();
        assert!(matches!(err, DataError::Malformed { row: 1, .. }), "{err}");
    }
}

// ---------------------------------------------------------------- zones

const HAND_ZONES: [u32; 12] = [0, 0, 0, 0, 1, 1, 1, 2, 2, 1, 1, 2];

#[test]
fn zone_transitions_counted_by_hand() {
    let net = network();
    let partition = ZonePartition::new(HAND_ZONES.to_vec());
    let f = read_trajectories(&fixture().join("train.csv"), &net, false).unwrap();
    let m = ZoneTransitions::count(&partition, f.trajectories.iter().map(|t| t.roads.as_slice()));
    // Zones along the train trajectories (the single-road one contributes nothing):
    //   0,5,8,10,3     -> 0 1 2 1 0       : 0→1, 1→2, 2→1, 1→0
    //   4,7,9,1        -> 1 2 1 0         : 1→2, 2→1, 1→0
    //   2,4,7,11,7,8   -> 0 1 2 2 2 2     : 0→1, 1→2
    //   3,2,0,1,6,10   -> 0 0 0 0 1 1     : 0→1
    assert_eq!(m.dense(), vec![0, 3, 0, 2, 0, 3, 0, 2, 0]);
    assert_eq!(m.nonzero().len(), 4);
    assert_eq!(m.row_sums(), vec![3, 5, 2]);
    assert_eq!((m.get(0, 1), m.get(1, 1)), (3, 0));

    // Zone graph: row-major nonzero order, w = M_ab / sqrt(r_a r_b).
    let g = hoser::data::ZoneGraph::build(&m);
    assert_eq!(g.src, vec![0, 1, 1, 2]);
    assert_eq!(g.dst, vec![1, 0, 2, 1]);
    let want =
        [3.0 / (3.0f64 * 5.0).sqrt(), 2.0 / (5.0f64 * 3.0).sqrt(), 3.0 / (5.0f64 * 2.0).sqrt(), 2.0 / 10f64.sqrt()];
    assert_all_close(&g.weight, &want, 1e-6, "zone weights");
    assert_eq!(g.edge_index(), vec![0, 1, 1, 2, 1, 0, 2, 1]);
}

#[test]
fn partition_file_is_read_and_checked() {
    let dir = fixture_copy();
    let text: String = HAND_ZONES.iter().map(|z| format!("{z}\n")).collect();
    std::fs::write(dir.path().join("road_network_partition"), text).unwrap();
    let data = HoserData::load(dir.path(), &DatasetOptions::default(), None).unwrap();
    assert_eq!(data.partition_source, PartitionSource::File);
    assert_eq!(data.partition.zones(), &HAND_ZONES);
    assert_eq!(data.features.num_zones, 3);
    assert_eq!(data.zone_transitions.dense(), vec![0, 3, 0, 2, 0, 3, 0, 2, 0]);
    assert_eq!(data.features.road_to_zone, HAND_ZONES.to_vec());

    std::fs::write(dir.path().join("road_network_partition"), "0\n1\n").unwrap();
    let msg = HoserData::load(dir.path(), &DatasetOptions::default(), None).unwrap_err().to_string();
    assert!(msg.contains("road_network_partition") && msg.contains("12 roads"), "{msg}");
}

/// A `w × h` grid of two-way streets: 2·(w−1)·h + 2·w·(h−1) roads, turns at every node.
fn grid_network(w: usize, h: usize) -> RoadNetwork {
    let mut roads = Vec::new();
    let mut ends: Vec<((usize, usize), (usize, usize))> = Vec::new();
    let mut add = |a: (usize, usize), b: (usize, usize)| {
        let coords = format!("[[{}, {}], [{}, {}]]", a.0, a.1, b.0, b.1);
        roads.push(Road::from_geo_fields(&coords, "residential", 100.0).unwrap());
        ends.push((a, b));
    };
    for y in 0..h {
        for x in 0..w {
            if x + 1 < w {
                add((x, y), (x + 1, y));
                add((x + 1, y), (x, y));
            }
            if y + 1 < h {
                add((x, y), (x, y + 1));
                add((x, y + 1), (x, y));
            }
        }
    }
    let mut rel = Vec::new();
    for (i, &(_, end)) in ends.iter().enumerate() {
        for (j, &(start, _)) in ends.iter().enumerate() {
            if start == end && i != j {
                rel.push((i as u32, j as u32));
            }
        }
    }
    RoadNetwork::new(roads, &rel).unwrap()
}

#[test]
fn metis_partition_covers_every_road_is_deterministic_and_beats_random() {
    let net = network();
    let p = ZonePartition::compute(&net, 3, 0).unwrap();
    assert_eq!(p.num_roads(), 12);
    assert_eq!(p.num_zones(), 3);
    assert!(p.zones().iter().all(|&z| z < 3));
    assert_eq!(p, ZonePartition::compute(&net, 3, 0).unwrap(), "same seed, same zones");

    let grid = grid_network(16, 16); // 960 roads
    let z = 12;
    let p = ZonePartition::compute(&grid, z, 7).unwrap();
    assert_eq!(p, ZonePartition::compute(&grid, z, 7).unwrap());
    let mut sizes = vec![0usize; z];
    p.zones().iter().for_each(|&zone| sizes[zone as usize] += 1);
    assert!(sizes.iter().all(|&s| s > 0), "every zone used: {sizes:?}");
    let cut = p.edge_cut(&grid);

    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let random =
        ZonePartition::with_num_zones((0..grid.num_roads()).map(|_| rng.random_range(0..z as u32)).collect(), z)
            .unwrap();
    let random_cut = random.edge_cut(&grid);
    assert!(cut * 4 < random_cut, "METIS cut {cut} should be far below a random assignment's {random_cut}");

    // Concurrent calls give the same zones (METIS's RNG is process-global; calls are serialised).
    let parallel: Vec<ZonePartition> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| ZonePartition::compute(&grid, z, 7).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(parallel.iter().all(|q| *q == p));

    assert!(matches!(ZonePartition::compute(&net, 13, 0), Err(DataError::Partition(_))));
    assert!(matches!(ZonePartition::compute(&net, 0, 0), Err(DataError::Partition(_))));
}

#[test]
fn default_300_zones_on_a_tiny_network_is_a_clear_error() {
    let dir = fixture_copy();
    let msg = HoserData::load(dir.path(), &DatasetOptions::default(), None).unwrap_err().to_string();
    assert!(msg.contains("12 roads into 300 zones"), "{msg}");
}

// ---------------------------------------------------------------- per-step features

fn train_samples(opts: &FeatureOptions) -> (RoadNetwork, Vec<Sample>) {
    let net = network();
    let f = read_trajectories(&fixture().join("train.csv"), &net, false).unwrap();
    let samples = f
        .trajectories
        .iter()
        .filter(|t| t.roads.len() > 1)
        .map(|t| Sample::build(&net, &t.roads, &t.times, opts).unwrap())
        .collect();
    (net, samples)
}

/// Upstream numbers for train row 1 (`0,5,8,10,3`, Thursday 08:00).
const REF_ROW1_DIST: [f64; 16] = [
    0.0,
    0.7556847333908081,
    1.0,
    1.0,
    0.7556847333908081,
    0.0,
    0.6523145437240601,
    0.7676889300346375,
    1.0,
    0.6523145437240601,
    0.0,
    0.7007085084915161,
    1.0,
    0.7676889300346375,
    0.7007085084915161,
    0.0,
];
const REF_ROW1_METRIC_DIS: [&[f64]; 4] = [
    &[0.0, 2.0180015563964844, 2.2544970512390137],
    &[2.080326795578003, 0.0, 1.6316365003585815],
    &[0.0],
    &[2.080350399017334, 0.0],
];
const REF_ROW1_ANGLE_QUIRK: [&[f64]; 4] =
    [&[0.5, 0.0, 0.5], &[0.5000000596046448, 0.0, 0.5], &[0.3667413890361786], &[0.5, 0.0]];
const REF_ROW1_ANGLE_FIXED: [&[f64]; 4] =
    [&[0.0, 0.5, 1.0], &[0.5, 0.0, 0.5000000596046448], &[0.20827847719192505], &[0.5, 0.0]];

#[test]
fn per_step_features_by_hand() {
    let (net, samples) = train_samples(&FeatureOptions::default());
    let s = &samples[0];
    // Trajectory 0,5,8,10,3 at 08:00:00, 08:00:30, 08:01:30, 08:02:00, 08:03:00 (Thursday).
    assert_eq!(s.trace_len(), 4);
    assert_eq!(s.trace_road_id(), &[0, 5, 8, 10]);
    assert_eq!(s.destination_road_id(), 3);
    assert_eq!(s.origin_road_id(), 0);
    assert_eq!(s.candidates(0), &[1, 5, 2]);
    assert_eq!(s.candidates(1), &[11, 9, 8]);
    assert_eq!(s.candidates(2), &[10]);
    assert_eq!(s.candidates(3), &[6, 3]);
    assert_eq!(s.candidate_len(), vec![3, 3, 1, 2]);
    assert_eq!(s.road_label(), &[1, 2, 0, 1]);
    assert_eq!(s.timestamp_label(), &[30.0, 60.0, 30.0, 60.0]);
    let minutes = [480.0, 480.5, 481.5, 482.0];
    assert_all_close(s.temporal_info(), &minutes.map(|m| m / 1440.0), 1e-7, "temporal_info");

    // Distance matrix from hand centroids: road 0 = mid(A,B), 5 = (116.411, 39.905), 8 = mid(E,F),
    // 10 = mid(F,C).
    let cent = [mid(A, B), [116.411, 39.905], mid(E, F), mid(F, C)];
    let mut want = Vec::new();
    for a in cent {
        for b in cent {
            want.push(hav(a, b).min(1000.0) / 1000.0);
        }
    }
    let got = s.trace_distance_mat(&net);
    assert_all_close(&got, &want, 1e-6, "trace_distance_mat");
    assert_all_close(&got, &REF_ROW1_DIST, 1e-6, "trace_distance_mat vs upstream");
    // 0 and 8 are 0.01° of latitude apart plus 0.01° of longitude: more than 1 km, clipped.
    assert_eq!(got[2], 1.0);

    // Time matrix: minutes apart / 5.
    let mut want = Vec::new();
    for a in minutes {
        for b in minutes {
            want.push(f64::min((a - b).abs(), 5.0) / 5.0);
        }
    }
    assert_all_close(&s.trace_time_interval_mat(), &want, 1e-4, "trace_time_interval_mat");

    // metric_dis of step 0: candidates 1, 5, 2 against the destination road 3's centroid mid(B,C);
    // road 1 is mid(B,C) itself, so d = 0 is the minimum.
    let dest = mid(B, C);
    let d = [hav(mid(B, C), dest), hav([116.411, 39.905], dest), hav(mid(A, B), dest)];
    let min = d.iter().copied().fold(f64::INFINITY, f64::min);
    assert_all_close(s.metric_dis(0), &d.map(|x| ((x - min) / 100.0).ln_1p()), 1e-5, "metric_dis step 0");
    for (step, want) in REF_ROW1_METRIC_DIS.iter().enumerate() {
        assert_all_close(s.metric_dis(step), want, 1e-5, "metric_dis vs upstream");
        assert!(s.metric_dis(step).contains(&0.0), "the nearest candidate is exactly 0");
    }

    // metric_angle of step 0 with the quirk: from road 0's end B, get_angle(lat=lon, lon=lat):
    // towards C (116.42,39.90): atan2(Δlon=0.01, 0) = π/2; towards E: atan2(0, +) = 0; towards A:
    // atan2(−0.01, 0) = 3π/2; towards the destination's end B itself: atan2(0, 0) = 0.
    // |π/2 − 0|/π = 0.5, 0, and 3π/2 folds to π/2 → 0.5.
    assert_all_close(s.metric_angle(0), &[0.5, 0.0, 0.5], 1e-7, "angle quirk step 0");
    for (step, want) in REF_ROW1_ANGLE_QUIRK.iter().enumerate() {
        assert_all_close(s.metric_angle(step), want, 1e-6, "angle quirk vs upstream");
    }
    // Step 2 by formula: from road 8's end F to road 10's end C and to road 3's end B.
    let quirk = |p: [f64; 2], q: [f64; 2]| {
        let a = (q[0] - p[0]).atan2((PI / 180.0 * p[0]).cos() * (q[1] - p[1]));
        if a < 0.0 { a + 2.0 * PI } else { a }
    };
    let fold = |a: f64| if a > PI { 2.0 * PI - a } else { a } / PI;
    assert_all_close(s.metric_angle(2), &[fold((quirk(F, C) - quirk(F, B)).abs())], 1e-6, "angle quirk step 2");

    // Without the quirk: correct headings, towards C = 0 (east), E = π/2 (north), A = π (west).
    let (_, fixed) = train_samples(&FeatureOptions { upstream_angle_quirk: false });
    let f = &fixed[0];
    assert_all_close(f.metric_angle(0), &[0.0, 0.5, 1.0], 1e-7, "angle fixed step 0");
    let correct = |p: [f64; 2], q: [f64; 2]| {
        let a = (q[1] - p[1]).atan2((PI / 180.0 * p[1]).cos() * (q[0] - p[0]));
        if a < 0.0 { a + 2.0 * PI } else { a }
    };
    assert_all_close(f.metric_angle(2), &[fold((correct(F, C) - correct(F, B)).abs())], 1e-6, "angle fixed step 2");
    for (step, want) in REF_ROW1_ANGLE_FIXED.iter().enumerate() {
        assert_all_close(f.metric_angle(step), want, 1e-6, "angle fixed vs upstream");
    }
    // Everything else is unaffected by the flag.
    assert_eq!(f.metric_dis(0), s.metric_dis(0));
    assert_eq!(f.road_label(), s.road_label());
}

#[test]
fn weekend_negates_the_whole_time_vector_and_midnight_saturates() {
    let (_, samples) = train_samples(&FeatureOptions::default());
    // Trajectory 4,7,9,1 starts Saturday 2015-11-07 23:58:00; its third step is on Sunday 00:00:10.
    let s = &samples[1];
    let want = [-(23.0 * 60.0 + 58.0) / 1440.0, -(23.0 * 60.0 + 59.5) / 1440.0, -(10.0 / 60.0) / 1440.0];
    assert_all_close(s.temporal_info(), &want, 1e-7, "weekend temporal_info");
    assert_eq!(s.timestamp_label(), &[90.0, 40.0, 50.0]);
    // 1.5 minutes apart → 0.3; across midnight |τ| differs by almost a day → clipped at 1.
    let m = s.trace_time_interval_mat();
    assert!(close(f64::from(m[1]), 0.3, 1e-5), "{m:?}");
    assert_eq!((m[2], m[5], m[6]), (1.0, 1.0, 1.0));
    // A weekday trajectory stays positive.
    assert!(samples[2].temporal_info().iter().all(|&v| v > 0.0));
    // Equal consecutive times give a zero-second step.
    assert_eq!(samples[2].timestamp_label(), &[60.0, 60.0, 60.0, 60.0, 0.0]);
}

// ---------------------------------------------------------------- static features

const REF_LEN: [f64; 12] = [
    -0.836727499961853,
    -0.836727499961853,
    -0.836727499961853,
    -0.836727499961853,
    1.062307596206665,
    1.6078622341156006,
    1.062307596206665,
    -0.836727499961853,
    -0.836727499961853,
    1.062307596206665,
    1.062307596206665,
    -0.836727499961853,
];
const REF_LON: [f64; 12] = [
    -0.8786140084266663,
    0.714557409286499,
    -0.8786140084266663,
    0.714557409286499,
    -1.674592137336731,
    0.07777495682239532,
    1.510535478591919,
    -0.8786140084266663,
    0.714557409286499,
    -0.0814206600189209,
    1.510535478591919,
    -0.8786140084266663,
];
const REF_LAT: [f64; 12] = [
    -1.207141399383545,
    -1.207141399383545,
    -1.207141399383545,
    -1.207141399383545,
    0.1095573827624321,
    0.1095573827624321,
    0.1095573827624321,
    1.4272613525390625,
    1.4272613525390625,
    0.1095573827624321,
    0.1095573827624321,
    1.4272613525390625,
];
/// Upstream `road_edge_index` / `intersection_attr` as `[src, dst, angle, reachable]`.
const REF_EDGES: &str = "[[0, 1, 0.0, 1.0], [0, 2, 1.0, 1.0], [0, 3, 1.0, 0.0], [0, 4, 0.5, 0.0], [0, 5, 0.5, 1.0], [0, 9, 0.5, 0.0], [1, 0, 0.0, 0.0], [1, 2, 1.0, 0.0], [1, 3, 1.0, 1.0], [1, 5, 0.5, 0.0], [1, 6, 0.5, 1.0], [1, 9, 0.5, 0.0], [1, 10, 0.5, 0.0], [2, 0, 1.0, 1.0], [2, 1, 1.0, 0.0], [2, 3, 0.0, 0.0], [2, 4, 0.5, 1.0], [2, 5, 0.5, 0.0], [2, 9, 0.5, 0.0], [3, 0, 1.0, 0.0], [3, 1, 1.0, 1.0], [3, 2, 0.0, 1.0], [3, 5, 0.5, 1.0], [3, 6, 0.5, 0.0], [3, 9, 0.5, 0.0], [3, 10, 0.5, 0.0], [4, 0, 0.5, 0.0], [4, 2, 0.5, 0.0], [4, 7, 0.5, 1.0], [5, 0, 0.5, 0.0], [5, 1, 0.5, 0.0], [5, 2, 0.5, 0.0], [5, 3, 0.5, 0.0], [5, 7, 0.5, 0.0], [5, 8, 0.5, 1.0], [5, 9, 1.0, 1.0], [5, 11, 0.5, 1.0], [6, 1, 0.5, 0.0], [6, 3, 0.5, 0.0], [6, 8, 0.5, 0.0], [6, 10, 1.0, 1.0], [7, 4, 0.5, 0.0], [7, 5, 0.5, 0.0], [7, 8, 0.0, 1.0], [7, 9, 0.5, 1.0], [7, 11, 1.0, 1.0], [8, 5, 0.5, 0.0], [8, 6, 0.5, 0.0], [8, 7, 0.0, 0.0], [8, 9, 0.5, 0.0], [8, 10, 0.5, 1.0], [8, 11, 1.0, 0.0], [9, 0, 0.5, 0.0], [9, 1, 0.5, 1.0], [9, 2, 0.5, 1.0], [9, 3, 0.5, 0.0], [9, 5, 1.0, 1.0], [9, 7, 0.5, 0.0], [9, 8, 0.5, 0.0], [9, 11, 0.5, 0.0], [10, 1, 0.5, 0.0], [10, 3, 0.5, 1.0], [10, 6, 1.0, 1.0], [10, 8, 0.5, 0.0], [11, 5, 0.5, 0.0], [11, 7, 1.0, 1.0], [11, 8, 1.0, 0.0], [11, 9, 0.5, 0.0]]";

#[test]
fn static_features_by_hand_and_against_upstream() {
    let dir = fixture_copy();
    let data = HoserData::load(dir.path(), &options(), None).unwrap();
    let f = &data.features;

    // log1p(length) z-scores: 8 roads of 853 m, 4 of 1112 m... and road 5 with 1200 m.
    let logs: Vec<f64> = data.network.roads().iter().map(|r| r.length.ln_1p()).collect();
    let mean = logs.iter().sum::<f64>() / 12.0;
    let std = (logs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 12.0).sqrt();
    assert_all_close(&f.road_attr_len, &logs.iter().map(|v| (v - mean) / std).collect::<Vec<_>>(), 1e-5, "len");
    assert_all_close(&f.road_attr_len, &REF_LEN, 1e-5, "len vs upstream");
    // Centroid z-scores by hand (f64), then against upstream, which computes in float32: on a network
    // only 0.02° wide its rounding near 116° shows up at the 1e-3 level.
    let cent = [
        mid(A, B),
        mid(B, C),
        mid(A, B),
        mid(B, C),
        [116.40, 39.905],
        [116.411, 39.905],
        mid(C, F),
        mid([116.40, 39.91], E),
        mid(E, F),
        mid(B, E),
        mid(C, F),
        mid([116.40, 39.91], E),
    ];
    for (axis, got) in [(0, &f.road_attr_lon), (1, &f.road_attr_lat)] {
        let v: Vec<f64> = cent.iter().map(|c| c[axis]).collect();
        let mean = v.iter().sum::<f64>() / 12.0;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 12.0).sqrt();
        assert_all_close(got, &v.iter().map(|x| (x - mean) / std).collect::<Vec<_>>(), 1e-5, "centroid z-score");
    }
    assert_all_close(&f.road_attr_lon, &REF_LON, 5e-3, "lon vs upstream");
    assert_all_close(&f.road_attr_lat, &REF_LAT, 5e-3, "lat vs upstream");
    assert_eq!(f.road_attr_type, vec![0, 0, 2, 1, 3, 0, 3, 2, 2, 1, 3, 1]);
    assert_eq!(f.num_road_types, 4);

    // Road graph by hand: at B ("116.41,39.9") roads 1, 2, 5 start and 0, 3, 9 end, so all 30
    // ordered pairs of {0,1,2,3,5,9} are edges. Road 11 ends at "116.400,39.910", which is not the
    // text "116.4,39.91" of D, so 11 never meets 4.
    let g = &f.road_graph;
    let has = |a: u32, b: u32| g.src.iter().zip(&g.dst).any(|(&s, &d)| (s, d) == (a, b));
    for a in [0, 1, 2, 3, 5, 9] {
        for b in [0, 1, 2, 3, 5, 9] {
            assert_eq!(has(a, b), a != b, "({a},{b})");
        }
    }
    assert!(has(4, 7) && has(7, 4) && has(7, 11) && !has(4, 11) && !has(11, 4));
    let edge = |a: u32, b: u32| {
        let i = g.src.iter().zip(&g.dst).position(|(&s, &d)| (s, d) == (a, b)).unwrap();
        (g.angle[i], g.reachable[i])
    };
    // 0 east & 1 east: 0, reachable; 0 east & 2 west: π → 1, reachable; 0 east & 4 north: 0.5, not
    // a successor; 5 (B→E, north) & 9 (E→B, south): 1, reachable.
    assert_eq!(edge(0, 1), (0.0, 1.0));
    assert_eq!(edge(0, 2), (1.0, 1.0));
    assert_eq!(edge(0, 4), (0.5, 0.0));
    assert_eq!(edge(5, 9), (1.0, 1.0));
    assert_eq!(edge(1, 0), (0.0, 0.0));

    let reference: Vec<(u32, u32, f32, f32)> = serde_json::from_str(REF_EDGES).unwrap();
    assert_eq!(g.num_edges(), reference.len());
    for (i, &(s, d, a, r)) in reference.iter().enumerate() {
        assert_eq!((g.src[i], g.dst[i], g.reachable[i]), (s, d, r), "edge {i}");
        assert!(close(f64::from(g.angle[i]), f64::from(a), 1e-6), "edge {i} angle {} vs {a}", g.angle[i]);
    }
    assert_eq!(g.edge_index().len(), 2 * g.num_edges());
    assert_eq!(&g.edge_attr()[..4], &[0.0, 1.0, 1.0, 1.0]);

    // Time normalisation over the 17 training steps' durations.
    let secs = [30.0, 60.0, 30.0, 60.0, 90.0, 40.0, 50.0, 60.0, 60.0, 60.0, 60.0, 0.0, 20.0, 40.0, 40.0, 50.0, 40.0];
    let logs: Vec<f64> = secs.iter().map(|s: &f64| s.ln_1p()).collect();
    let mean = logs.iter().sum::<f64>() / 17.0;
    let std = (logs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 17.0).sqrt();
    assert!(close(f.time.mean, mean, 1e-12) && close(f.time.std, std, 1e-12), "{:?}", f.time);
    assert!(close(f.time.mean, 3.635679006576538, 1e-6) && close(f.time.std, 0.9692162871360779, 1e-6));
    assert!(close(f.time.denormalize(f.time.normalize(42.0)), 42.0, 1e-9));

    // Splits: single-road rows give no sample.
    assert_eq!((data.train.samples.len(), data.val.samples.len(), data.test.samples.len()), (4, 2, 1));
    assert_eq!(data.train.summary.single_road, 1);
    assert_eq!(data.partition_source, PartitionSource::Metis { num_zones: 3, seed: 0 });
    assert_eq!(data.cache, CacheStatus::Disabled);
}

// ---------------------------------------------------------------- batching

fn collate(samples: &[Sample], max_len: Option<usize>) -> Batch {
    Collator::new(&network(), max_len).unwrap().collate(samples)
}

#[test]
fn batch_padding_values_and_masks() {
    let (net, samples) = train_samples(&FeatureOptions::default());
    // Rows: 0,5,8,10,3 (T=4, candidate sets 3,3,1,2) and 4,7,9,1 (T=3, sets 1,3,3).
    let batch = collate(&samples[..2], None);
    assert_eq!((batch.batch_size, batch.max_trace_len, batch.max_candidates), (2, 4, 3));
    assert_eq!(batch.step_shape(), [2, 4]);
    assert_eq!(batch.pair_shape(), [2, 4, 4]);
    assert_eq!(batch.candidate_shape(), [2, 4, 3]);
    assert_eq!(batch.trace_len, vec![4, 3]);
    assert_eq!(batch.destination_road_id, vec![3, 1]);
    assert_eq!(batch.trace_road_id, vec![0, 5, 8, 10, 4, 7, 9, 0]);
    assert_eq!(batch.candidate_len, vec![3, 3, 1, 2, 1, 3, 3, 0]);
    assert_eq!(batch.road_label, vec![1, 2, 0, 1, 0, 0, 0, 0]);
    assert_eq!(batch.timestamp_label, vec![30.0, 60.0, 30.0, 60.0, 90.0, 40.0, 50.0, 0.0]);
    assert_eq!(batch.step_mask, vec![true, true, true, true, true, true, true, false]);
    assert_eq!(batch.temporal_info[7], 0.0);
    assert_eq!(batch.num_steps(), 7);
    #[rustfmt::skip]
    assert_eq!(batch.candidate_road_id, vec![
        1, 5, 2,   11, 9, 8,   10, 0, 0,   6, 3, 0,
        7, 0, 0,   9, 8, 11,   1, 2, 5,    0, 0, 0,
    ]);
    #[rustfmt::skip]
    let mask = vec![
        true, true, true,   true, true, true,   true, false, false,   true, true, false,
        true, false, false, true, true, true,   true, true, true,     false, false, false,
    ];
    assert_eq!(batch.candidate_mask, mask);
    // The mask is exactly `c < candidate_len[b,t]` (what `CandidateSteps::from_lengths` derives).
    for bt in 0..8 {
        for c in 0..3 {
            assert_eq!(batch.candidate_mask[bt * 3 + c], (c as i64) < batch.candidate_len[bt]);
        }
    }
    // Padded candidates are id 0 with metrics 0; so is the real first candidate of no row here, but
    // a real metric_dis of 0 exists (the destination-nearest candidate), so only the mask tells.
    for (i, &real) in batch.candidate_mask.iter().enumerate() {
        if !real {
            assert_eq!((batch.candidate_road_id[i], batch.metric_dis[i], batch.metric_angle[i]), (0, 0.0, 0.0));
        }
    }
    assert_eq!(&batch.metric_dis[..3], samples[0].metric_dis(0));
    assert_eq!(&batch.metric_angle[15..18], samples[1].metric_angle(1));
    // Matrices: row 0 is the sample's own; row 1 has zeros in its padded last row and column.
    assert_eq!(&batch.trace_distance_mat[..16], samples[0].trace_distance_mat(&net).as_slice());
    let own = samples[1].trace_distance_mat(&net);
    let m1 = &batch.trace_distance_mat[16..];
    for i in 0..4 {
        for j in 0..4 {
            let want = if i < 3 && j < 3 { own[i * 3 + j] } else { 0.0 };
            assert_eq!(m1[i * 4 + j], want, "({i},{j})");
        }
    }
    let own_t = samples[1].trace_time_interval_mat();
    assert_eq!(batch.trace_time_interval_mat[16 + 4 + 2], own_t[3 + 2]);
    assert_eq!(batch.trace_time_interval_mat[16 + 15], 0.0);

    // Normalised time target at real steps only.
    let stats = hoser::data::TimeStats { mean: 3.0, std: 2.0 };
    let norm = batch.normalized_timestamp_label(&stats);
    assert!(close(f64::from(norm[0]), (31f64.ln() - 3.0) / 2.0, 1e-6));
    assert_eq!(norm[7], 0.0);

    let empty = collate(&[], None);
    assert_eq!((empty.batch_size, empty.max_trace_len, empty.max_candidates), (0, 0, 0));
}

#[test]
fn max_len_crop_keeps_the_last_steps_consistently() {
    let (net, samples) = train_samples(&FeatureOptions::default());
    let s = &samples[0]; // 0,5,8,10 -> 3
    let c = s.crop_last(2);
    assert_eq!(c.trace_len(), 2);
    assert_eq!(c.trace_road_id(), &[8, 10]);
    assert_eq!(c.destination_road_id(), 3);
    assert_eq!(c.road_label(), &[0, 1]);
    assert_eq!(c.timestamp_label(), &[30.0, 60.0]);
    assert_eq!(c.temporal_info(), &s.temporal_info()[2..]);
    assert_eq!((c.candidates(0), c.candidates(1)), (&[10][..], &[6, 3][..]));
    assert_eq!(c.metric_dis(1), s.metric_dis(3));
    assert_eq!(c.metric_angle(1), s.metric_angle(3));
    assert_eq!(c.candidate_len(), vec![1, 2]);
    assert_eq!(c.start_time(), s.start_time());
    // The matrices are the bottom-right block of the full ones.
    let full = s.trace_distance_mat(&net);
    assert_eq!(c.trace_distance_mat(&net), vec![full[10], full[11], full[14], full[15]]);
    let full_t = s.trace_time_interval_mat();
    assert_eq!(c.trace_time_interval_mat(), vec![full_t[10], full_t[11], full_t[14], full_t[15]]);
    assert_eq!(&s.crop_last(4), s);
    assert_eq!(&s.crop_last(100), s);

    // The collator crops the same way; shorter rows are untouched.
    let batch = collate(&samples[..2], Some(2));
    let cropped: Vec<Sample> = samples[..2].iter().map(|s| s.crop_last(2)).collect();
    assert_eq!(batch, collate(&cropped, None));
    assert_eq!(batch.trace_len, vec![2, 2]);
    assert_eq!(batch.max_trace_len, 2);
    assert_eq!(batch.trace_road_id, vec![8, 10, 7, 9]);
    assert_eq!(batch.road_label, vec![0, 1, 0, 0]);
    // Widest remaining candidate set is 3 (road 7 → 9, 8, 11).
    assert_eq!(batch.max_candidates, 3);
    let every_label_is_a_real_candidate = (0..4).all(|bt| batch.road_label[bt] < batch.candidate_len[bt]);
    assert!(every_label_is_a_real_candidate);
    assert!(matches!(Collator::new(&net, Some(0)), Err(DataError::InvalidOption(_))));
}

// ---------------------------------------------------------------- cache

fn assert_same_data(a: &HoserData, b: &HoserData) {
    assert_eq!(a.train, b.train);
    assert_eq!(a.val, b.val);
    assert_eq!(a.test, b.test);
    assert_eq!(a.features, b.features);
    assert_eq!(a.partition, b.partition);
    assert_eq!(a.zone_transitions, b.zone_transitions);
}

#[test]
fn cache_hit_miss_stale_and_corrupt() {
    let data_dir = fixture_copy();
    let cache_dir = tempfile::tempdir().unwrap();
    let load = |opts: &DatasetOptions| HoserData::load(data_dir.path(), opts, Some(cache_dir.path())).unwrap();
    let fresh = HoserData::load(data_dir.path(), &options(), None).unwrap();

    let first = load(&options());
    assert_eq!(first.cache, CacheStatus::Missing);
    assert_same_data(&first, &fresh);
    let cache_file = cache_dir.path().join(hoser::data::CACHE_FILE_NAME);
    assert!(cache_file.exists());

    let hit = load(&options());
    assert_eq!(hit.cache, CacheStatus::Hit);
    assert_same_data(&hit, &fresh);

    // Changed options rebuild.
    let other = DatasetOptions { upstream_angle_quirk: false, ..options() };
    match load(&other).cache {
        CacheStatus::Stale(why) => assert!(why.contains("options"), "{why}"),
        s => panic!("{s:?}"),
    }
    assert_eq!(load(&other).cache, CacheStatus::Hit);

    // A changed input rebuilds, and the new data reflect it.
    let val = data_dir.path().join("val.csv");
    let mut text = std::fs::read_to_string(&val).unwrap();
    text.push_str("2,202,0,\"7,8\",\"2015-11-11T10:00:00Z,2015-11-11T10:01:00Z\"\n");
    std::fs::write(&val, text).unwrap();
    let rebuilt = load(&other);
    match &rebuilt.cache {
        CacheStatus::Stale(why) => assert!(why.contains("val"), "{why}"),
        s => panic!("{s:?}"),
    }
    assert_eq!(rebuilt.val.samples.len(), 3);
    assert_eq!(load(&other).cache, CacheStatus::Hit);

    // Adding a partition file is an input change too.
    std::fs::write(data_dir.path().join("road_network_partition"), HAND_ZONES.map(|z| format!("{z}\n")).concat())
        .unwrap();
    let with_file = load(&other);
    assert!(matches!(&with_file.cache, CacheStatus::Stale(why) if why.contains("partition")), "{:?}", with_file.cache);
    assert_eq!(with_file.partition.zones(), &HAND_ZONES);

    // Corruption: a flipped payload byte, a truncated file, garbage. Each is rebuilt, never a panic.
    let reference = load(&other);
    assert_eq!(reference.cache, CacheStatus::Hit);
    let good = std::fs::read(&cache_file).unwrap();
    let mut flipped = good.clone();
    let last = flipped.len() - 5;
    flipped[last] ^= 0x40;
    let damaged: [(&str, Vec<u8>); 4] = [
        ("flipped", flipped),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"not a cache at all".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&cache_file, bytes).unwrap();
        let d = load(&other);
        assert!(matches!(d.cache, CacheStatus::Corrupt(_)), "{what}: {:?}", d.cache);
        assert_same_data(&d, &reference);
        assert_eq!(load(&other).cache, CacheStatus::Hit, "{what}: the rebuilt cache is valid");
    }
}

#[test]
fn load_files_reports_split_summaries() {
    let dir = fixture_copy();
    write_train(
        dir.path(),
        &[GOOD_ROW, "\"0,8\",\"2015-11-05T08:00:00Z,2015-11-05T08:00:30Z\"", "3,2015-11-05T08:00:00Z"],
    );
    let files = DatasetFiles::in_dir(dir.path());
    let err = HoserData::load_files(files.clone(), &options(), None).unwrap_err();
    assert!(err.to_string().contains("road 0 -> road 8"), "{err}");
    let data = HoserData::load_files(files, &DatasetOptions { skip_invalid: true, ..options() }, None).unwrap();
    let s = &data.train.summary;
    assert_eq!((s.rows, s.kept, s.single_road, s.skipped.bad_transition), (3, 2, 1, 1));
    assert_eq!(data.train.samples.len(), 1);
    assert!(s.file.ends_with("train.csv"));
}

#[test]
fn options_deserialise_with_defaults_and_reject_unknown_keys() {
    let o: DatasetOptions = serde_json::from_str(r#"{"skip_invalid": true}"#).unwrap();
    assert_eq!(o, DatasetOptions { skip_invalid: true, ..DatasetOptions::default() });
    assert!(o.upstream_angle_quirk, "the quirk defaults to on");
    assert_eq!((o.num_zones, o.partition_seed), (300, 0));
    assert!(serde_json::from_str::<DatasetOptions>(r#"{"skip_invalid": true, "top_k": 64}"#).is_err());
}
