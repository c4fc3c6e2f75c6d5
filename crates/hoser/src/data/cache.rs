//! The preprocessing cache: one binary file holding the processed samples and static features,
//! keyed by the CRC-32C of every input file and the options.
//!
//! Layout (little-endian): the magic `HOSERDAT`, a `u32` length and the JSON [`CacheManifest`] (format
//! version, input checksums, options), then a `u64` payload length, the payload's CRC-32C (`u32`)
//! and the payload, a compact encoding written by hand (length-prefixed vectors of fixed-width
//! numbers). A manifest that differs from the current one means stale; a bad magic, a truncated
//! file, a checksum mismatch or a payload that does not decode means corrupt. Either way the data
//! are rebuilt and the file rewritten (atomically: temporary file, fsync, rename), never a panic.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::DataError;
use super::features::{RoadGraph, Sample, StaticFeatures, TimeStats, ZoneGraph};
use super::time::Timestamp;
use super::trajectory::SplitSummary;
use super::zones::{ZonePartition, ZoneTransitions};

const MAGIC: &[u8; 8] = b"HOSERDAT";
/// Bump whenever the payload encoding or any feature formula changes.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// File name of the cache inside the cache directory.
pub const CACHE_FILE_NAME: &str = "hoser-data.bin";

/// What identifies a cache: the inputs' checksums and the options that shaped the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheManifest {
    /// Payload format version.
    pub format: u32,
    /// CRC-32C of each input file by role (`geo`, `rel`, `train`, `val`, `test`, `partition`); a
    /// missing optional file is recorded as absent.
    pub inputs: BTreeMap<String, Option<u32>>,
    /// The dataset options, as JSON.
    pub options: serde_json::Value,
}

impl CacheManifest {
    /// Why `self` (the cached manifest) does not match `current`, or `None` if it does.
    pub fn difference(&self, current: &Self) -> Option<String> {
        if self.format != current.format {
            return Some(format!("cache format {} differs from {}", self.format, current.format));
        }
        let changed: Vec<&str> = current
            .inputs
            .iter()
            .filter(|(k, v)| self.inputs.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .chain(self.inputs.keys().filter(|k| !current.inputs.contains_key(*k)).map(String::as_str))
            .collect();
        if !changed.is_empty() {
            return Some(format!("input changed: {}", changed.join(", ")));
        }
        if self.options != current.options {
            return Some(format!("options changed: cached {} vs now {}", self.options, current.options));
        }
        None
    }
}

/// CRC-32C of a whole file, streamed.
pub fn file_crc32c(path: &Path) -> Result<u32, DataError> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

/// Everything the cache stores.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CachedData {
    pub partition: ZonePartition,
    pub partition_from_file: bool,
    pub transitions: ZoneTransitions,
    pub features: StaticFeatures,
    pub splits: [(Vec<Sample>, SplitSummary); 3],
}

/// The outcome of reading a cache file.
pub(crate) enum CacheRead {
    Hit(Box<CachedData>),
    Missing,
    Stale(String),
    Corrupt(String),
}

pub(crate) fn read_cache(path: &Path, expected: &CacheManifest) -> CacheRead {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CacheRead::Missing,
        Err(e) => return CacheRead::Corrupt(format!("cannot read it: {e}")),
    };
    let mut r = Reader::new(&bytes);
    let header = (|| -> Result<(CacheManifest, u32, &[u8]), String> {
        if r.take(MAGIC.len())? != MAGIC {
            return Err("not a HOSER data cache (bad magic)".into());
        }
        let len = r.u32()? as usize;
        let manifest: CacheManifest =
            serde_json::from_slice(r.take(len)?).map_err(|e| format!("unreadable manifest: {e}"))?;
        let payload_len = usize::try_from(r.u64()?).map_err(|_| "payload length overflows".to_string())?;
        let crc = r.u32()?;
        let payload = r.take(payload_len)?;
        if !r.is_empty() {
            return Err("trailing bytes after the payload".into());
        }
        Ok((manifest, crc, payload))
    })();
    let (manifest, crc, payload) = match header {
        Ok(h) => h,
        Err(e) => return CacheRead::Corrupt(e),
    };
    if let Some(why) = manifest.difference(expected) {
        return CacheRead::Stale(why);
    }
    if crc32c::crc32c(payload) != crc {
        return CacheRead::Corrupt("payload checksum mismatch".into());
    }
    match decode_payload(&mut Reader::new(payload)) {
        Ok(data) => CacheRead::Hit(Box::new(data)),
        Err(e) => CacheRead::Corrupt(format!("payload does not decode: {e}")),
    }
}

pub(crate) fn write_cache(path: &Path, manifest: &CacheManifest, data: &CachedData) -> Result<(), DataError> {
    let mut payload = Writer::default();
    encode_payload(&mut payload, data);
    let manifest_json = serde_json::to_vec(manifest).expect("a manifest always serialises");
    let mut out = Vec::with_capacity(payload.buf.len() + manifest_json.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(manifest_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&manifest_json);
    out.extend_from_slice(&(payload.buf.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload.buf).to_le_bytes());
    out.extend_from_slice(&payload.buf);

    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let tmp: PathBuf = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Persist the rename; not every platform can fsync a directory, which is harmless here.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::io(path, e)
    })
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32s(&mut self, v: &[u32]) {
        self.u64(v.len() as u64);
        v.iter().for_each(|x| self.buf.extend_from_slice(&x.to_le_bytes()));
    }
    fn f32s(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        v.iter().for_each(|x| self.buf.extend_from_slice(&x.to_le_bytes()));
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!("truncated: needs {n} more bytes, {} left", self.buf.len()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn usize(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "length overflows".to_string())
    }
    /// A length-prefixed vector of `width`-byte items, checked against the bytes left before any
    /// allocation (a corrupt length must not allocate gigabytes).
    fn items(&mut self, width: usize) -> Result<&'a [u8], String> {
        let n = self.usize()?;
        let bytes = n.checked_mul(width).ok_or("length overflows")?;
        self.take(bytes)
    }
    fn u32s(&mut self) -> Result<Vec<u32>, String> {
        Ok(self.items(4)?.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    fn f32s(&mut self) -> Result<Vec<f32>, String> {
        Ok(self.items(4)?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        self.items(1)
    }
}

fn encode_sample(w: &mut Writer, s: &Sample) {
    w.u32s(&s.trace_road_id);
    w.f32s(&s.temporal_info);
    w.u32(s.destination_road_id);
    w.u32s(&s.candidate_offsets);
    w.u32s(&s.candidate_road_id);
    w.f32s(&s.metric_dis);
    w.f32s(&s.metric_angle);
    w.u32s(&s.road_label);
    w.f32s(&s.timestamp_label);
    w.i64(s.start_time.seconds());
}

fn decode_sample(r: &mut Reader<'_>, num_roads: usize) -> Result<Sample, String> {
    let s = Sample {
        trace_road_id: r.u32s()?,
        temporal_info: r.f32s()?,
        destination_road_id: r.u32()?,
        candidate_offsets: r.u32s()?,
        candidate_road_id: r.u32s()?,
        metric_dis: r.f32s()?,
        metric_angle: r.f32s()?,
        road_label: r.u32s()?,
        timestamp_label: r.f32s()?,
        start_time: Timestamp(r.i64()?),
    };
    // Invariants the accessors and the collator rely on.
    let t = s.trace_road_id.len();
    let n = s.candidate_road_id.len();
    let consistent = t > 0
        && s.temporal_info.len() == t
        && s.road_label.len() == t
        && s.timestamp_label.len() == t
        && s.candidate_offsets.len() == t + 1
        && s.candidate_offsets[0] == 0
        && s.candidate_offsets.windows(2).all(|w| w[0] <= w[1])
        && s.candidate_offsets[t] as usize == n
        && s.metric_dis.len() == n
        && s.metric_angle.len() == n
        && s.trace_road_id.iter().chain(&s.candidate_road_id).all(|&r| (r as usize) < num_roads)
        && (s.destination_road_id as usize) < num_roads;
    if !consistent {
        return Err("inconsistent sample".into());
    }
    Ok(s)
}

fn encode_payload(w: &mut Writer, d: &CachedData) {
    w.u64(d.partition.num_zones() as u64);
    w.u32s(d.partition.zones());
    w.u8(u8::from(d.partition_from_file));
    w.u64(d.transitions.num_zones() as u64);
    w.u64(d.transitions.nonzero().len() as u64);
    for (&(a, b), &c) in d.transitions.nonzero() {
        w.u32(a);
        w.u32(b);
        w.u64(c);
    }
    let f = &d.features;
    w.f32s(&f.road_attr_len);
    w.u32s(&f.road_attr_type);
    w.u64(f.num_road_types as u64);
    w.f32s(&f.road_attr_lon);
    w.f32s(&f.road_attr_lat);
    w.u32s(&f.road_graph.src);
    w.u32s(&f.road_graph.dst);
    w.f32s(&f.road_graph.angle);
    w.f32s(&f.road_graph.reachable);
    w.u32s(&f.zone_graph.src);
    w.u32s(&f.zone_graph.dst);
    w.f32s(&f.zone_graph.weight);
    w.u32s(&f.road_to_zone);
    w.u64(f.num_zones as u64);
    w.f64(f.time.mean);
    w.f64(f.time.std);
    for (samples, summary) in &d.splits {
        w.bytes(&serde_json::to_vec(summary).expect("a summary always serialises"));
        w.u64(samples.len() as u64);
        samples.iter().for_each(|s| encode_sample(w, s));
    }
}

fn decode_payload(r: &mut Reader<'_>) -> Result<CachedData, String> {
    let num_zones = r.usize()?;
    let partition = ZonePartition::with_num_zones(r.u32s()?, num_zones).map_err(|e| e.to_string())?;
    let num_roads = partition.num_roads();
    let partition_from_file = r.u8()? != 0;
    let tz = r.usize()?;
    let nnz = r.usize()?;
    let mut counts = Vec::with_capacity(nnz.min(r.buf.len() / 16));
    for _ in 0..nnz {
        let (a, b, c) = (r.u32()?, r.u32()?, r.u64()?);
        if a as usize >= tz || b as usize >= tz {
            return Err("zone transition outside the zone range".into());
        }
        counts.push(((a, b), c));
    }
    let transitions = ZoneTransitions::from_counts(tz, counts);
    let features = StaticFeatures {
        road_attr_len: r.f32s()?,
        road_attr_type: r.u32s()?,
        num_road_types: r.usize()?,
        road_attr_lon: r.f32s()?,
        road_attr_lat: r.f32s()?,
        road_graph: RoadGraph { src: r.u32s()?, dst: r.u32s()?, angle: r.f32s()?, reachable: r.f32s()? },
        zone_graph: ZoneGraph { src: r.u32s()?, dst: r.u32s()?, weight: r.f32s()? },
        road_to_zone: r.u32s()?,
        num_zones: r.usize()?,
        time: TimeStats { mean: r.f64()?, std: r.f64()? },
    };
    let g = &features.road_graph;
    let e = g.src.len();
    let features_ok = [&features.road_attr_len, &features.road_attr_lon, &features.road_attr_lat]
        .iter()
        .all(|v| v.len() == num_roads)
        && features.road_attr_type.len() == num_roads
        && features.road_to_zone.len() == num_roads
        && g.dst.len() == e
        && g.angle.len() == e
        && g.reachable.len() == e
        && g.src.iter().chain(&g.dst).all(|&v| (v as usize) < num_roads)
        && features.zone_graph.dst.len() == features.zone_graph.src.len()
        && features.zone_graph.weight.len() == features.zone_graph.src.len();
    if !features_ok {
        return Err("inconsistent static features".into());
    }
    let mut split = || -> Result<(Vec<Sample>, SplitSummary), String> {
        let summary: SplitSummary = serde_json::from_slice(r.bytes()?).map_err(|e| e.to_string())?;
        let n = r.usize()?;
        let mut samples = Vec::with_capacity(n.min(r.buf.len() / 64));
        for _ in 0..n {
            samples.push(decode_sample(r, num_roads)?);
        }
        Ok((samples, summary))
    };
    let splits = [split()?, split()?, split()?];
    if !r.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(CachedData { partition, partition_from_file, transitions, features, splits })
}
