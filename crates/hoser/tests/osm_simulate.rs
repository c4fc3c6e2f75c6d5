//! OSM import, GMNS conversion and trip simulation on the committed real-data fixtures
//! (`tests/fixtures/README.md` lists their sources and licences).
//!
//! Golden files under `tests/fixtures/libcity/` and `tests/fixtures/i95/libcity/` are compared byte
//! for byte with a fresh run; `HOSER_UPDATE_FIXTURES=1 cargo test -p hoser --test osm_simulate`
//! rewrites them instead.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hoser::osm::gmns::{convert_gmns, gmns_to_libcity};
use hoser::osm::{
    DRIVABLE_HIGHWAYS, ImportConfig, RoadNetwork, UTurns, days_from_civil, format_utc, import_pbf, polyline_length_m,
};
use hoser::simulate::{Network, SimConfig, Simulation, simulate};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn helsinki_test() -> RoadNetwork {
    import_pbf(&fixtures().join("osm/helsinki_test.osm.pbf"), &ImportConfig::default()).unwrap()
}

/// The configuration of the committed synthetic set `libcity/helsinki_test/`.
fn fixture_sim_config() -> SimConfig {
    SimConfig { seed: 42, trips: 200, ..SimConfig::default() }
}

fn updating() -> bool {
    std::env::var_os("HOSER_UPDATE_FIXTURES").is_some_and(|v| v == "1")
}

/// Compares every file of `fresh` with the same name under `golden` (or copies them there when
/// updating).
fn check_golden(fresh: &Path, golden: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(fresh).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    if updating() {
        std::fs::create_dir_all(golden).unwrap();
    }
    for name in names {
        let new = std::fs::read(fresh.join(&name)).unwrap();
        let path = golden.join(&name);
        if updating() {
            std::fs::write(&path, &new).unwrap();
        } else {
            let old = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(old == new, "{} differs from a fresh run (HOSER_UPDATE_FIXTURES=1 rewrites it)", path.display());
        }
    }
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(str::to_string).collect();
    let rows = reader.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect();
    (header, rows)
}

fn column(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

/// Parses `%Y-%m-%dT%H:%M:%SZ` strictly.
fn parse_utc(text: &str) -> i64 {
    let b = text.as_bytes();
    assert!(b.len() == 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[19] == b'Z', "{text}");
    assert!(b[13] == b':' && b[16] == b':', "{text}");
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let days = days_from_civil(n(0..4), n(5..7) as u32, n(8..10) as u32);
    let t = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    assert_eq!(format_utc(t), text);
    t
}

struct Trajectory {
    traj_id: usize,
    roads: Vec<usize>,
    times: Vec<i64>,
    synthetic: String,
}

fn read_trajectories(path: &Path) -> Vec<Trajectory> {
    let (header, rows) = read_csv(path);
    let (c_id, c_rid, c_time, c_syn) = (
        column(&header, "traj_id"),
        column(&header, "rid_list"),
        column(&header, "time_list"),
        column(&header, "synthetic"),
    );
    rows.iter()
        .map(|r| Trajectory {
            traj_id: r[c_id].parse().unwrap(),
            roads: r[c_rid].split(',').map(|s| s.parse().unwrap()).collect(),
            times: r[c_time].split(',').map(parse_utc).collect(),
            synthetic: r[c_syn].clone(),
        })
        .collect()
}

/// Checks a LibCity `roadmap.geo` against the columns HOSER reads.
fn check_geo(path: &Path, expected_rows: usize) -> Vec<Vec<[f64; 2]>> {
    let (header, rows) = read_csv(path);
    assert_eq!(&header[..5], ["geo_id", "type", "coordinates", "highway", "length"]);
    assert_eq!(rows.len(), expected_rows);
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r[0], i.to_string(), "geo_id is the row index");
            let coords: Vec<[f64; 2]> = serde_json::from_str(&r[2]).unwrap();
            assert!(coords.len() >= 2);
            assert!(!r[3].is_empty());
            assert!(r[4].parse::<f64>().unwrap() >= 0.0);
            coords
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// OSM importer
// ---------------------------------------------------------------------------------------------

#[test]
fn helsinki_test_import_counts() {
    let net = helsinki_test();
    let s = &net.stats;
    assert_eq!(
        (s.ways_read, s.ways_kept, s.missing_node_refs, s.segments, s.roads, s.relations, s.u_turns_dropped),
        (2653, 175, 263, 307, 553, 919, 492)
    );
    assert_eq!(net.roads.len(), s.roads);
    assert_eq!(net.successors.len(), s.relations);
    // Two-way segments give two roads, one-way segments one.
    let one_way_segments = net.roads.iter().filter(|r| r.oneway).count();
    assert_eq!(one_way_segments + 2 * (s.segments - one_way_segments), s.roads);
    for r in &net.roads {
        assert!(DRIVABLE_HIGHWAYS.contains(&r.highway.as_str()), "{}", r.highway);
        // The SE Finland patch (pyrosm's test extract).
        for &[lon, lat] in &r.coordinates {
            assert!((26.9..27.0).contains(&lon) && (60.5..60.56).contains(&lat), "{lon},{lat}");
        }
        assert_eq!(r.coordinates.len(), r.nodes.len());
        assert!((r.length - polyline_length_m(&r.coordinates)).abs() <= 0.0005 + 1e-9);
    }
    // `service` ways are opt-in.
    let with_service = import_pbf(
        &fixtures().join("osm/helsinki_test.osm.pbf"),
        &ImportConfig { include_service: true, ..ImportConfig::default() },
    )
    .unwrap();
    assert!(with_service.stats.ways_kept > s.ways_kept);
    assert!(with_service.roads.iter().any(|r| r.highway == "service"));
}

#[test]
fn oneway_and_two_way_ways() {
    let net = helsinki_test();
    // Way 5184588: highway=secondary, oneway=yes, 8 nodes, cut into 3 segments at junctions.
    let w: Vec<(usize, &hoser::osm::Road)> =
        net.roads.iter().enumerate().filter(|(_, r)| r.way_id == 5_184_588).collect();
    assert_eq!(w.len(), 3);
    for (k, (_, r)) in w.iter().enumerate() {
        assert_eq!((r.segment, r.forward, r.oneway, r.highway.as_str()), (k as u32, true, true, "secondary"));
    }
    assert_eq!(w[0].1.nodes, [36_156_592, 1_364_702_640, 36_156_593]);
    assert_eq!(w[2].1.nodes.last(), Some(&475_347_453));
    assert_eq!(w[0].1.nodes.last(), w[1].1.nodes.first());
    assert!(net.successors.contains(&(w[0].0, w[1].0)) && net.successors.contains(&(w[1].0, w[2].0)));
    // Nothing runs against it.
    assert!(!net.roads.iter().any(|r| r.way_id == 5_184_588 && !r.forward));

    // Way 5184590: highway=secondary, no oneway tag: every segment is a forward/backward pair,
    // adjacent in id order, with reversed nodes, and no U-turn between twins.
    let w: Vec<(usize, &hoser::osm::Road)> =
        net.roads.iter().enumerate().filter(|(_, r)| r.way_id == 5_184_590).collect();
    assert_eq!(w.len() % 2, 0);
    assert!(w.len() >= 8);
    for pair in w.chunks(2) {
        let ((fi, f), (bi, b)) = (pair[0], pair[1]);
        assert_eq!((bi, f.segment, f.forward, b.forward, f.oneway), (fi + 1, b.segment, true, false, false));
        assert_eq!(f.nodes.iter().rev().copied().collect::<Vec<_>>(), b.nodes);
        assert_eq!(f.length, b.length);
        assert!(!net.successors.contains(&(fi, bi)) && !net.successors.contains(&(bi, fi)));
    }
    // The segment 5184590/2 from the data.
    let seg2 = w.iter().find(|(_, r)| r.segment == 2 && r.forward).unwrap().1;
    assert_eq!(seg2.nodes, [749_392_287, 36_156_609, 876_232_691, 4_147_108_146, 36_156_610, 876_232_661]);
}

#[test]
fn successor_relation_is_sane() {
    let net = helsinki_test();
    let n = net.roads.len();
    let mut seen = HashSet::new();
    for &(a, b) in &net.successors {
        assert!(a < n && b < n, "dangling id");
        assert!(seen.insert((a, b)), "duplicate pair");
        assert_eq!(net.roads[a].nodes.last(), net.roads[b].nodes.first(), "{a}->{b} share no node");
        let (ra, rb) = (&net.roads[a], &net.roads[b]);
        assert!(!(ra.way_id == rb.way_id && ra.segment == rb.segment && ra.forward != rb.forward), "U-turn {a}->{b}");
    }
    // Ordered by origin then destination (HOSER's candidate order is the file order).
    assert!(net.successors.windows(2).all(|w| w[0] < w[1]));
    // Complete: every road starting at a road's end node is listed (except the twin).
    let mut starting_at: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, r) in net.roads.iter().enumerate() {
        starting_at.entry(r.nodes[0]).or_default().push(i);
    }
    let expected: usize = net.roads.iter().map(|r| starting_at.get(r.nodes.last().unwrap()).map_or(0, Vec::len)).sum();
    assert_eq!(expected, net.successors.len() + net.stats.u_turns_dropped);

    let import = |u_turns| {
        import_pbf(&fixtures().join("osm/helsinki_test.osm.pbf"), &ImportConfig { u_turns, ..ImportConfig::default() })
            .unwrap()
    };
    let always = import(UTurns::Always);
    assert_eq!(always.roads, net.roads);
    assert_eq!(always.successors.len(), net.successors.len() + net.stats.u_turns_dropped);
    assert_eq!(always.stats.u_turns_dropped, 0);
    // At dead ends only: exactly the two-way roads that had no successor gain their twin.
    let dead_ends = import(UTurns::AtDeadEnds);
    let stuck: Vec<usize> =
        (0..n).filter(|&a| !net.roads[a].oneway && !net.successors.iter().any(|p| p.0 == a)).collect();
    assert!(!stuck.is_empty());
    assert_eq!(dead_ends.successors.len(), net.successors.len() + stuck.len());
    for a in stuck {
        let twin = if net.roads[a].forward { a + 1 } else { a - 1 };
        assert!(dead_ends.successors.contains(&(a, twin)));
    }
}

#[test]
fn import_is_deterministic_and_matches_the_committed_files() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    helsinki_test().write_libcity(d1.path()).unwrap();
    helsinki_test().write_libcity(d2.path()).unwrap();
    for f in ["roadmap.geo", "roadmap.rel"] {
        assert_eq!(std::fs::read(d1.path().join(f)).unwrap(), std::fs::read(d2.path().join(f)).unwrap(), "{f}");
    }
    // The written files carry the same network.
    let net = helsinki_test();
    let coords = check_geo(&d1.path().join("roadmap.geo"), net.roads.len());
    for (c, r) in coords.iter().zip(&net.roads) {
        assert_eq!(c, &r.coordinates);
    }
    let (header, rows) = read_csv(&d1.path().join("roadmap.rel"));
    assert_eq!(header, ["rel_id", "type", "origin_id", "destination_id"]);
    let pairs: Vec<(usize, usize)> = rows.iter().map(|r| (r[2].parse().unwrap(), r[3].parse().unwrap())).collect();
    assert_eq!(pairs, net.successors);
    let loaded = Network::load(d1.path()).unwrap();
    assert_eq!(loaded.len(), net.roads.len());
    check_golden(d1.path(), &fixtures().join("libcity/helsinki_test"));
}

#[test]
fn helsinki_centre_import() {
    let path = fixtures().join("osm/helsinki_centre.osm.pbf");
    let net = import_pbf(&path, &ImportConfig::default()).unwrap();
    let s = &net.stats;
    assert_eq!(
        (s.ways_read, s.ways_kept, s.segments, s.roads, s.relations, s.u_turns_dropped),
        (5130, 754, 772, 1149, 1390, 754)
    );
    for &(a, b) in &net.successors {
        assert_eq!(net.roads[a].nodes.last(), net.roads[b].nodes.first());
    }
    for r in &net.roads {
        for &[lon, lat] in &r.coordinates {
            assert!((24.9..24.97).contains(&lon) && (60.15..60.19).contains(&lat), "{lon},{lat}");
        }
    }
    assert_eq!(net, import_pbf(&path, &ImportConfig::default()).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Simulator
// ---------------------------------------------------------------------------------------------

fn check_simulation(net: &Network, sim: &Simulation, config: &SimConfig) {
    let s = &sim.stats;
    assert_eq!(s.attempts, s.trips + s.no_path + s.too_short + s.too_long);
    assert_eq!(s.split.iter().sum::<usize>(), s.trips);
    let first_day = days_from_civil(i64::from(config.start_date.0), config.start_date.1, config.start_date.2);
    let mut ids = HashSet::new();
    for t in sim.all() {
        assert!(ids.insert(t.traj_id), "traj_id {} in two splits", t.traj_id);
        assert_eq!(t.roads.len(), t.times.len());
        assert!(t.roads.len() >= config.min_roads && t.roads.len() <= config.max_roads);
        for w in t.roads.windows(2) {
            assert!(net.has_successor(w[0], w[1]), "trip {}: {} -> {} not in rel", t.traj_id, w[0], w[1]);
        }
        assert!(t.times.windows(2).all(|w| w[0] < w[1]), "times not increasing in trip {}", t.traj_id);
        let day = t.times[0].div_euclid(86_400);
        let second = t.times[0].rem_euclid(86_400);
        assert!((first_day..first_day + i64::from(config.days)).contains(&day));
        assert!((i64::from(config.day_start_s)..i64::from(config.day_end_s)).contains(&second));
    }
    assert_eq!(ids, (0..s.trips).collect::<HashSet<_>>());
    for part in [&sim.train, &sim.val, &sim.test] {
        assert!(part.windows(2).all(|w| w[0].traj_id < w[1].traj_id));
    }
}

#[test]
fn simulation_is_valid_and_deterministic_per_seed() {
    let net = Network::from_road_network(&helsinki_test());
    let config = SimConfig { seed: 7, trips: 300, ..SimConfig::default() };
    let sim = simulate(&net, &config).unwrap();
    assert_eq!(sim.stats.trips, 300);
    assert!(sim.stats.no_path > 0, "this clipped network has unreachable pairs, and they are counted");
    check_simulation(&net, &sim, &config);
    assert_eq!(sim.stats.split, [210, 30, 60]);
    // Weekday/weekend mix: ~2/7 of departures on Sat/Sun (2024-01-06/07).
    let weekend = sim.all().filter(|t| (t.times[0].div_euclid(86_400) + 3).rem_euclid(7) >= 5).count();
    assert!((50..=120).contains(&weekend), "{weekend}");

    assert_eq!(sim, simulate(&net, &config).unwrap(), "same seed, same trips");
    let other = simulate(&net, &SimConfig { seed: 8, ..config.clone() }).unwrap();
    assert_ne!(sim.train, other.train);
}

#[test]
fn routing_noise_varies_routes() {
    let net = Network::from_road_network(&helsinki_test());
    let base = SimConfig { seed: 3, trips: 200, ..SimConfig::default() };
    let noisy = simulate(&net, &base).unwrap();
    let exact = simulate(&net, &SimConfig { route_noise_sigma: 0.0, ..base }).unwrap();
    // Same OD draws (the noise is keyed, not drawn from the shared stream), different routes.
    let od =
        |s: &Simulation| s.all().map(|t| (t.traj_id, t.roads[0], *t.roads.last().unwrap())).collect::<HashSet<_>>();
    assert_eq!(od(&noisy), od(&exact));
    let routes = |s: &Simulation| s.all().map(|t| (t.traj_id, t.roads.clone())).collect::<HashMap<_, _>>();
    let (a, b) = (routes(&noisy), routes(&exact));
    let differing = a.iter().filter(|(id, r)| b[*id] != **r).count();
    assert!(differing > 0 && differing < a.len(), "{differing} of {}", a.len());
}

#[test]
fn simulated_files_are_labelled_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let osm = helsinki_test();
    osm.write_libcity(dir.path()).unwrap();
    let net = Network::load(dir.path()).unwrap();
    assert_eq!(net, Network::from_road_network(&osm));
    let config = fixture_sim_config();
    let sim = simulate(&net, &config).unwrap();
    sim.write_libcity(dir.path()).unwrap();

    let mut ids = HashSet::new();
    let mut total = 0;
    for (name, part) in [("train.csv", &sim.train), ("val.csv", &sim.val), ("test.csv", &sim.test)] {
        let (header, _) = read_csv(&dir.path().join(name));
        assert_eq!(header, ["traj_id", "rid_list", "time_list", "synthetic"]);
        let rows = read_trajectories(&dir.path().join(name));
        assert_eq!(rows.len(), part.len());
        for (row, trip) in rows.iter().zip(part) {
            assert_eq!(row.synthetic, "1");
            assert!(ids.insert(row.traj_id), "split overlap");
            assert_eq!((row.traj_id, &row.roads, &row.times), (trip.traj_id, &trip.roads, &trip.times));
            for w in row.roads.windows(2) {
                assert!(net.has_successor(w[0], w[1]));
            }
        }
        total += rows.len();
    }
    assert_eq!(total, config.trips);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("synthetic.json")).unwrap()).unwrap();
    assert_eq!(meta["synthetic"], true);
    assert_eq!(meta["config"]["seed"], 42);
    assert_eq!(meta["stats"]["trips"], 200);
    let md = std::fs::read_to_string(dir.path().join("SYNTHETIC.md")).unwrap();
    assert!(md.starts_with("# SYNTHETIC DATA"));

    // The committed synthetic set is this run.
    check_golden(dir.path(), &fixtures().join("libcity/helsinki_test"));
}

#[test]
fn committed_synthetic_set_is_consistent() {
    // Read only through the files, as a LibCity consumer would.
    let dir = fixtures().join("libcity/helsinki_test");
    let net = Network::load(&dir).unwrap();
    check_geo(&dir.join("roadmap.geo"), net.len());
    let mut ids = HashSet::new();
    for name in ["train.csv", "val.csv", "test.csv"] {
        for t in read_trajectories(&dir.join(name)) {
            assert_eq!(t.synthetic, "1");
            assert!(ids.insert(t.traj_id));
            assert!(t.roads.windows(2).all(|w| net.has_successor(w[0], w[1])));
            assert!(t.times.windows(2).all(|w| w[0] < w[1]));
        }
    }
    assert_eq!(ids.len(), fixture_sim_config().trips);
}

// ---------------------------------------------------------------------------------------------
// GMNS (I-95) conversion
// ---------------------------------------------------------------------------------------------

#[test]
fn i95_conversion_counts_and_connectivity() {
    let raw = fixtures().join("i95/raw");
    let data = convert_gmns(&raw).unwrap();
    assert_eq!(data.links.len(), 132);
    assert_eq!(data.successors.len(), 174);
    assert_eq!(data.u_turn_relations, 32);
    assert_eq!(data.trajectories.len(), 5);
    let lens: Vec<usize> = data.trajectories.iter().map(|t| t.roads.len()).collect();
    assert_eq!(lens, [10, 17, 4, 18, 17]);
    assert!(data.links.windows(2).all(|w| w[0].link_id < w[1].link_id));
    assert!(data.links.iter().all(|l| l.highway == "motorway"));
    // Route 1 is links 21,42,111,… → road ids link_id - 1 (ids 1..=132 are dense).
    assert_eq!(&data.trajectories[0].roads[..3], &[20, 41, 110]);
    for t in &data.trajectories {
        for w in t.roads.windows(2) {
            assert!(data.successors.contains(&(w[0], w[1])));
            assert_eq!(data.links[w[0]].to_node_id, data.links[w[1]].from_node_id);
        }
        assert!(t.times.windows(2).all(|w| w[0] <= w[1]));
        assert!(t.max_snap_m < 150.0, "{} {}", t.journey_id, t.max_snap_m);
        // 2024-08-05 UTC.
        assert_eq!(t.times[0].div_euclid(86_400), days_from_civil(2024, 8, 5));
    }

    let dir = tempfile::tempdir().unwrap();
    let summary = gmns_to_libcity(&raw, dir.path()).unwrap();
    assert_eq!((summary.links, summary.relations, summary.trajectories, summary.split), (132, 174, 5, [3, 1, 1]));
    // Through the files: every consecutive pair is in rel.
    let net = Network::load(dir.path()).unwrap();
    check_geo(&dir.path().join("roadmap.geo"), 132);
    let mut n = 0;
    for name in ["train.csv", "val.csv", "test.csv"] {
        for t in read_trajectories(&dir.path().join(name)) {
            assert_eq!(t.synthetic, "0");
            assert!(t.roads.windows(2).all(|w| net.has_successor(w[0], w[1])));
            n += 1;
        }
    }
    assert_eq!(n, 5);
    check_golden(dir.path(), &fixtures().join("i95/libcity"));
}

#[test]
fn gmns_route_off_the_network_is_an_error() {
    let raw = fixtures().join("i95/raw");
    let dir = tempfile::tempdir().unwrap();
    for f in ["link.csv", "node.csv", "gps.csv"] {
        std::fs::copy(raw.join(f), dir.path().join(f)).unwrap();
    }
    // Link 21 is not followed by link 14.
    std::fs::write(dir.path().join("expected_routes.csv"), "journey_id,link_ids\n2bd302da9400692a,\"21,14\"\n")
        .unwrap();
    let err = convert_gmns(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not followed by link 14"), "{err}");
}
