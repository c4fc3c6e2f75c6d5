//! A seeded trip simulator on any LibCity road network (`roadmap.geo` + `roadmap.rel`), writing
//! **synthetic** LibCity trajectory files.
//!
//! Model, per trip (every random draw comes from the seed, so one seed gives one output):
//!
//! 1. **Origin–destination**: two distinct roads drawn uniformly. Pairs with no path are skipped and
//!    counted ([`SimStats::no_path`]); so are routes shorter than [`SimConfig::min_roads`] or longer
//!    than [`SimConfig::max_roads`].
//! 2. **Route**: Dijkstra over the road graph (road → successor in `rel`), where entering road `r`
//!    costs its free-flow travel time `length / speed(highway)` times a per-trip multiplicative noise
//!    `exp(σ_route·z)`, `z ~ N(0,1)` drawn per (trip, road). Each trip therefore takes a shortest path
//!    under its own perturbed costs, and repeated OD pairs take varying routes. Ties break on road id.
//! 3. **Departure**: a weekend day with probability [`SimConfig::weekend_share`] (a weekday
//!    otherwise; days are those of the span starting at [`SimConfig::start_date`]), and a time of
//!    day uniform in `[day_start_s, day_end_s)`.
//! 4. **Timing**: road `i` is entered at `time[i]`; `time[i+1] = time[i] + max(1, round(length_i /
//!    v_i))` with `v_i = speed(highway_i) · exp(σ_trip·z_trip) · exp(σ_speed·z_i)` (a driver factor
//!    per trip and a factor per road). Times are therefore strictly increasing, at one-second
//!    resolution. `speed` is [`free_flow_speed_kmh`].
//! 5. **Split**: trips are shuffled with the seed and cut into train/val/test by
//!    [`SimConfig::split`]; each file lists its trips by `traj_id`, unique across the three files.
//!
//! Every consecutive pair of roads in a written trajectory is a successor pair of the network.
//! Output: `train.csv`, `val.csv`, `test.csv` with columns `traj_id,rid_list,time_list,synthetic`
//! (`synthetic` = 1 on every row), plus `synthetic.json` (generator, configuration, counts) and
//! `SYNTHETIC.md` next to them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::osm::{self, OsmError, RoadNetwork, days_from_civil, rid_list, time_list, write_csv};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Reading or writing files failed.
    #[error(transparent)]
    Files(#[from] OsmError),
    /// The configuration is unusable.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// A directed road network as the simulator needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// Road lengths in metres, by road id.
    pub lengths: Vec<f64>,
    /// `highway` text, by road id.
    pub highways: Vec<String>,
    /// Successors of each road, in `rel` order.
    pub successors: Vec<Vec<usize>>,
}

impl Network {
    /// Reads `roadmap.geo` (columns `length` and `highway`; the row index is the road id) and
    /// `roadmap.rel` (`origin_id`, `destination_id`) from `dir`.
    pub fn load(dir: &Path) -> Result<Self, SimError> {
        let geo = read_columns(&dir.join("roadmap.geo"), &["length", "highway"])?;
        let mut lengths = Vec::with_capacity(geo.len());
        let mut highways = Vec::with_capacity(geo.len());
        let geo_path = dir.join("roadmap.geo");
        for (i, row) in geo.into_iter().enumerate() {
            let length: f64 = row[0].trim().parse().map_err(|_| invalid(&geo_path, i, "length", &row[0]))?;
            if !length.is_finite() || length < 0.0 {
                return Err(invalid(&geo_path, i, "length", &row[0]).into());
            }
            lengths.push(length);
            highways.push(row[1].clone());
        }
        let rel_path = dir.join("roadmap.rel");
        let rel = read_columns(&rel_path, &["origin_id", "destination_id"])?;
        let mut successors = vec![Vec::new(); lengths.len()];
        for (i, row) in rel.into_iter().enumerate() {
            let a: usize = row[0].trim().parse().map_err(|_| invalid(&rel_path, i, "origin_id", &row[0]))?;
            let b: usize = row[1].trim().parse().map_err(|_| invalid(&rel_path, i, "destination_id", &row[1]))?;
            if a >= lengths.len() || b >= lengths.len() {
                return Err(OsmError::Invalid {
                    path: rel_path,
                    message: format!("row {}: road {a} → {b} is outside 0..{}", i + 2, lengths.len()),
                }
                .into());
            }
            successors[a].push(b);
        }
        Ok(Self { lengths, highways, successors })
    }

    /// The network of an OSM import, without going through files.
    pub fn from_road_network(net: &RoadNetwork) -> Self {
        let mut successors = vec![Vec::new(); net.roads.len()];
        for &(a, b) in &net.successors {
            successors[a].push(b);
        }
        Self {
            lengths: net.roads.iter().map(|r| r.length).collect(),
            highways: net.roads.iter().map(|r| r.highway.clone()).collect(),
            successors,
        }
    }

    /// Number of roads.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// `true` when there are no roads.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// `true` when `b` is a successor of `a`.
    pub fn has_successor(&self, a: usize, b: usize) -> bool {
        self.successors.get(a).is_some_and(|s| s.contains(&b))
    }
}

fn invalid(path: &Path, row: usize, column: &str, value: &str) -> OsmError {
    OsmError::Invalid { path: path.to_path_buf(), message: format!("row {}: bad `{column}` {value:?}", row + 2) }
}

fn read_columns(path: &Path, names: &[&str]) -> Result<Vec<Vec<String>>, OsmError> {
    let csv_err = |source| OsmError::Csv { path: path.to_path_buf(), source };
    let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
    let header = reader.headers().map_err(csv_err)?.clone();
    let cols = names
        .iter()
        .map(|n| {
            header
                .iter()
                .position(|h| h == *n)
                .ok_or_else(|| OsmError::Invalid { path: path.to_path_buf(), message: format!("no `{n}` column") })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        rows.push(cols.iter().map(|&c| record.get(c).unwrap_or("").to_string()).collect());
    }
    Ok(rows)
}

/// Free-flow speed in km/h assumed for a `highway` value. A list-like value such as
/// `"['primary', 'secondary']"` uses its first class, or its second when the first is
/// `unclassified` (HOSER's rule). Unknown classes (and integer codes) get 30 km/h.
pub fn free_flow_speed_kmh(highway: &str) -> f64 {
    let classes: Vec<&str> = highway
        .split(',')
        .map(|s| s.trim_matches(|c: char| c == '[' || c == ']' || c == '\'' || c == '"' || c.is_whitespace()))
        .filter(|s| !s.is_empty())
        .collect();
    let class = match classes.as_slice() {
        [first, second, ..] if *first == "unclassified" => *second,
        [first, ..] => *first,
        [] => "",
    };
    match class {
        "motorway" => 100.0,
        "trunk" => 80.0,
        "primary" => 60.0,
        "motorway_link" => 60.0,
        "secondary" => 50.0,
        "trunk_link" => 50.0,
        "tertiary" | "primary_link" | "secondary_link" => 40.0,
        "tertiary_link" | "unclassified" | "residential" => 30.0,
        "service" => 15.0,
        "living_street" => 10.0,
        _ => 30.0,
    }
}

/// Simulator settings. [`Default`] gives 1,000 trips over one week from Monday 2024-01-01.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Trips to produce (fewer when [`SimConfig::max_attempts`] runs out first).
    pub trips: usize,
    /// OD draws allowed in all; default 20 × `trips`.
    pub max_attempts: usize,
    /// Shortest route kept, in roads (at least 2).
    pub min_roads: usize,
    /// Longest route kept, in roads.
    pub max_roads: usize,
    /// σ of the per-trip, per-road lognormal noise on routing costs.
    pub route_noise_sigma: f64,
    /// σ of the per-trip lognormal driver speed factor.
    pub trip_speed_sigma: f64,
    /// σ of the per-road lognormal speed factor.
    pub road_speed_sigma: f64,
    /// First day of the span, `(year, month, day)`, UTC.
    pub start_date: (i32, u32, u32),
    /// Number of days in the span.
    pub days: u32,
    /// Earliest departure, seconds after midnight (UTC).
    pub day_start_s: u32,
    /// Latest departure (exclusive), seconds after midnight (UTC).
    pub day_end_s: u32,
    /// Probability that a trip departs on a Saturday or Sunday (when the span has both kinds).
    pub weekend_share: f64,
    /// Fractions of trips in train, val and test (normalised by their sum).
    pub split: [f64; 3],
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            trips: 1000,
            max_attempts: 20_000,
            min_roads: 2,
            max_roads: 512,
            route_noise_sigma: 0.2,
            trip_speed_sigma: 0.1,
            road_speed_sigma: 0.15,
            start_date: (2024, 1, 1),
            days: 7,
            day_start_s: 6 * 3600,
            day_end_s: 22 * 3600,
            weekend_share: 2.0 / 7.0,
            split: [0.7, 0.1, 0.2],
        }
    }
}

impl SimConfig {
    fn check(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::Config(m.to_string()));
        if self.min_roads < 2 || self.max_roads < self.min_roads {
            return bad("need 2 <= min_roads <= max_roads");
        }
        if self.days == 0 || self.day_start_s >= self.day_end_s || self.day_end_s > 86_400 {
            return bad("need days >= 1 and day_start_s < day_end_s <= 86400");
        }
        let sigmas = [self.route_noise_sigma, self.trip_speed_sigma, self.road_speed_sigma];
        if sigmas.iter().any(|s| !s.is_finite() || *s < 0.0) || !(0.0..=1.0).contains(&self.weekend_share) {
            return bad("sigmas must be finite and >= 0, weekend_share in [0, 1]");
        }
        if self.split.iter().any(|f| !f.is_finite() || *f < 0.0) || self.split.iter().sum::<f64>() <= 0.0 {
            return bad("split fractions must be >= 0 with a positive sum");
        }
        let (y, m, d) = self.start_date;
        if !(1..=12).contains(&m)
            || d == 0
            || osm::civil_from_days(days_from_civil(i64::from(y), m, d)) != (i64::from(y), m, d)
        {
            return bad("start_date is not a calendar date");
        }
        Ok(())
    }
}

/// One simulated trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trip {
    /// Id unique across the three splits (the order in which trips were generated).
    pub traj_id: usize,
    /// Road ids; each consecutive pair is a successor pair.
    pub roads: Vec<usize>,
    /// Unix seconds at which each road is entered, strictly increasing.
    pub times: Vec<i64>,
}

/// What the simulator did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// OD pairs drawn.
    pub attempts: usize,
    /// Trips produced.
    pub trips: usize,
    /// OD pairs with no path.
    pub no_path: usize,
    /// Routes shorter than `min_roads`.
    pub too_short: usize,
    /// Routes longer than `max_roads`.
    pub too_long: usize,
    /// Trips in train, val, test.
    pub split: [usize; 3],
}

/// The simulator's output.
#[derive(Clone, Debug, PartialEq)]
pub struct Simulation {
    /// Training trips, by `traj_id`.
    pub train: Vec<Trip>,
    /// Validation trips, by `traj_id`.
    pub val: Vec<Trip>,
    /// Test trips, by `traj_id`.
    pub test: Vec<Trip>,
    /// Counts.
    pub stats: SimStats,
    /// The configuration used.
    pub config: SimConfig,
}

/// SplitMix64: a fixed, well-mixed hash used to draw per-(trip, road) noise lazily.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A standard normal from two 53-bit uniforms (Box–Muller).
fn normal_from_bits(a: u64, b: u64) -> f64 {
    let u1 = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn normal(rng: &mut impl Rng) -> f64 {
    normal_from_bits(rng.random(), rng.random())
}

/// Lognormal factor `exp(σ·z)` for (key, road), where z is a fixed function of both.
fn keyed_lognormal(key: u64, road: usize, sigma: f64) -> f64 {
    if sigma == 0.0 {
        return 1.0;
    }
    let h = splitmix64(key ^ splitmix64(road as u64));
    (sigma * normal_from_bits(h, splitmix64(h))).exp()
}

/// Shortest path from `from` to `to` where entering road `r` costs `cost(r)`; `None` when `to` is
/// unreachable. Deterministic: ties are broken on road id.
fn shortest_path(net: &Network, from: usize, to: usize, cost: impl Fn(usize) -> f64) -> Option<Vec<usize>> {
    let mut dist: HashMap<usize, f64> = HashMap::from([(from, 0.0)]);
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut done: HashSet<usize> = HashSet::new();
    // Non-negative f64 order equals the order of their bit patterns.
    let mut heap = BinaryHeap::from([Reverse((0f64.to_bits(), from))]);
    while let Some(Reverse((bits, road))) = heap.pop() {
        if !done.insert(road) {
            continue;
        }
        if road == to {
            let mut path = vec![to];
            while let Some(&p) = prev.get(path.last().expect("non-empty")) {
                path.push(p);
            }
            path.reverse();
            return Some(path);
        }
        let d = f64::from_bits(bits);
        for &next in &net.successors[road] {
            if done.contains(&next) {
                continue;
            }
            let nd = d + cost(next);
            if dist.get(&next).is_none_or(|&old| nd < old) {
                dist.insert(next, nd);
                prev.insert(next, road);
                heap.push(Reverse((nd.to_bits(), next)));
            }
        }
    }
    None
}

/// Runs the simulator described in the module docs.
pub fn simulate(net: &Network, config: &SimConfig) -> Result<Simulation, SimError> {
    config.check()?;
    if net.len() < 2 {
        return Err(SimError::Config("the network needs at least two roads".to_string()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let base_tt: Vec<f64> =
        net.lengths.iter().zip(&net.highways).map(|(l, h)| l / (free_flow_speed_kmh(h) / 3.6)).collect();

    let first_day = days_from_civil(i64::from(config.start_date.0), config.start_date.1, config.start_date.2);
    // 1970-01-01 was a Thursday: weekday index 0 = Monday … 6 = Sunday.
    let (weekend, weekdays): (Vec<i64>, Vec<i64>) =
        (first_day..first_day + i64::from(config.days)).partition(|d| (d + 3).rem_euclid(7) >= 5);

    let mut stats = SimStats::default();
    let mut trips = Vec::new();
    while trips.len() < config.trips && stats.attempts < config.max_attempts {
        stats.attempts += 1;
        let origin = rng.random_range(0..net.len());
        let mut dest = rng.random_range(0..net.len() - 1);
        if dest >= origin {
            dest += 1;
        }
        let trip_key: u64 = rng.random();
        let sigma = config.route_noise_sigma;
        let Some(roads) = shortest_path(net, origin, dest, |r| base_tt[r] * keyed_lognormal(trip_key, r, sigma)) else {
            stats.no_path += 1;
            continue;
        };
        if roads.len() < config.min_roads {
            stats.too_short += 1;
            continue;
        }
        if roads.len() > config.max_roads {
            stats.too_long += 1;
            continue;
        }
        // Departure and speeds come from the trip's own stream, so the OD draws of later trips do
        // not depend on the routes taken.
        let mut trip_rng = ChaCha8Rng::seed_from_u64(trip_key);
        let on_weekend = !weekend.is_empty() && (weekdays.is_empty() || trip_rng.random_bool(config.weekend_share));
        let pool = if on_weekend { &weekend } else { &weekdays };
        let day = pool[trip_rng.random_range(0..pool.len())];
        let mut t = day * 86_400 + i64::from(trip_rng.random_range(config.day_start_s..config.day_end_s));
        let driver = (config.trip_speed_sigma * normal(&mut trip_rng)).exp();
        let mut times = Vec::with_capacity(roads.len());
        for &r in &roads {
            times.push(t);
            let speed = free_flow_speed_kmh(&net.highways[r]) / 3.6
                * driver
                * (config.road_speed_sigma * normal(&mut trip_rng)).exp();
            t += ((net.lengths[r] / speed).round() as i64).max(1);
        }
        trips.push(Trip { traj_id: trips.len(), roads, times });
    }
    stats.trips = trips.len();

    let mut order: Vec<usize> = (0..trips.len()).collect();
    order.shuffle(&mut rng);
    let total: f64 = config.split.iter().sum();
    let n_train = ((config.split[0] / total) * trips.len() as f64).round() as usize;
    let n_val = (((config.split[1] / total) * trips.len() as f64).round() as usize).min(trips.len() - n_train);
    let mut which = vec![2usize; trips.len()];
    for (rank, &i) in order.iter().enumerate() {
        which[i] = if rank < n_train {
            0
        } else if rank < n_train + n_val {
            1
        } else {
            2
        };
    }
    let mut parts: [Vec<Trip>; 3] = Default::default();
    for (trip, w) in trips.into_iter().zip(which) {
        parts[w].push(trip);
    }
    stats.split = [parts[0].len(), parts[1].len(), parts[2].len()];
    let [train, val, test] = parts;
    Ok(Simulation { train, val, test, stats, config: config.clone() })
}

#[derive(Serialize)]
struct Metadata<'a> {
    synthetic: bool,
    generator: &'static str,
    generator_version: &'static str,
    description: &'static str,
    files: [&'static str; 3],
    config: &'a SimConfig,
    stats: &'a SimStats,
}

const DESCRIPTION: &str = "Synthetic trips: random OD pairs routed by noisy shortest paths on the road network, \
with modelled departure and travel times. Not observed vehicle data.";

impl Simulation {
    /// All trips of the three splits.
    pub fn all(&self) -> impl Iterator<Item = &Trip> {
        self.train.iter().chain(&self.val).chain(&self.test)
    }

    /// Writes `train.csv`, `val.csv`, `test.csv` (`traj_id,rid_list,time_list,synthetic`, with
    /// `synthetic` = 1), `synthetic.json` and `SYNTHETIC.md` into `dir` (created if missing).
    /// Put them next to the network's `roadmap.geo`/`roadmap.rel` to get a LibCity data set.
    pub fn write_libcity(&self, dir: &Path) -> Result<(), SimError> {
        osm::create_dir(dir)?;
        for (name, trips) in [("train.csv", &self.train), ("val.csv", &self.val), ("test.csv", &self.test)] {
            let rows = trips
                .iter()
                .map(|t| vec![t.traj_id.to_string(), rid_list(&t.roads), time_list(&t.times), "1".to_string()]);
            write_csv(&dir.join(name), &["traj_id", "rid_list", "time_list", "synthetic"], rows)?;
        }
        let meta = Metadata {
            synthetic: true,
            generator: "hoser::simulate",
            generator_version: env!("CARGO_PKG_VERSION"),
            description: DESCRIPTION,
            files: ["train.csv", "val.csv", "test.csv"],
            config: &self.config,
            stats: &self.stats,
        };
        let mut json = serde_json::to_string_pretty(&meta).expect("metadata serialises");
        json.push('\n');
        write_text(&dir.join("synthetic.json"), &json)?;
        let md = format!(
            "# SYNTHETIC DATA\n\n{DESCRIPTION}\n\nGenerated by `hoser::simulate` {} with seed {}: {} trips \
             (train {}, val {}, test {}) from {} OD draws; {} draws had no path. Every row of `train.csv`, \
             `val.csv` and `test.csv` has `synthetic` = 1. The full configuration is in `synthetic.json`.\n",
            env!("CARGO_PKG_VERSION"),
            self.config.seed,
            self.stats.trips,
            self.stats.split[0],
            self.stats.split[1],
            self.stats.split[2],
            self.stats.attempts,
            self.stats.no_path,
        );
        write_text(&dir.join("SYNTHETIC.md"), &md)?;
        Ok(())
    }
}

fn write_text(path: &Path, text: &str) -> Result<(), OsmError> {
    std::fs::write(path, text).map_err(|source| OsmError::Io { path: PathBuf::from(path), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Network {
        Network {
            lengths: vec![100.0; n],
            highways: vec!["residential".to_string(); n],
            successors: (0..n).map(|i| if i + 1 < n { vec![i + 1] } else { vec![] }).collect(),
        }
    }

    #[test]
    fn speeds_by_class() {
        assert_eq!(free_flow_speed_kmh("motorway"), 100.0);
        assert_eq!(free_flow_speed_kmh("['unclassified', 'primary']"), 60.0);
        assert_eq!(free_flow_speed_kmh("['secondary','tertiary']"), 50.0);
        assert_eq!(free_flow_speed_kmh("7"), 30.0);
    }

    #[test]
    fn path_on_a_line_and_unreachable() {
        let net = line(5);
        assert_eq!(shortest_path(&net, 1, 4, |_| 1.0), Some(vec![1, 2, 3, 4]));
        assert_eq!(shortest_path(&net, 4, 1, |_| 1.0), None);
    }

    #[test]
    fn noisy_routes_pick_the_cheaper_branch() {
        // 0 → {1, 2} → 3; road 2 is twice as long.
        let net = Network {
            lengths: vec![10.0, 100.0, 200.0, 10.0],
            highways: vec!["residential".to_string(); 4],
            successors: vec![vec![1, 2], vec![3], vec![3], vec![]],
        };
        let tt = |r: usize| net.lengths[r];
        assert_eq!(shortest_path(&net, 0, 3, tt), Some(vec![0, 1, 3]));
        // With large noise both branches occur over many trips.
        let mut seen = HashSet::new();
        for key in 0..200u64 {
            seen.insert(shortest_path(&net, 0, 3, |r| tt(r) * keyed_lognormal(key, r, 1.0)).unwrap()[1]);
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn lognormal_noise_has_the_right_spread() {
        let logs: Vec<f64> = (0..20_000).map(|r| keyed_lognormal(7, r, 0.2).ln()).collect();
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let sd = (logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
        assert!(mean.abs() < 0.01 && (sd - 0.2).abs() < 0.01, "{mean} {sd}");
    }

    #[test]
    fn config_checks() {
        let net = line(3);
        for cfg in [
            SimConfig { min_roads: 1, ..SimConfig::default() },
            SimConfig { day_start_s: 10, day_end_s: 10, ..SimConfig::default() },
            SimConfig { start_date: (2023, 2, 29), ..SimConfig::default() },
            SimConfig { split: [0.0; 3], ..SimConfig::default() },
        ] {
            assert!(matches!(simulate(&net, &cfg), Err(SimError::Config(_))));
        }
    }
}
