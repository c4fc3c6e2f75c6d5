//! `trainyard-tile`: cut co-registered Sentinel-1 / Sentinel-2 GeoTIFF scenes into NPZ tiles
//! with JSON sidecars and a manifest (`manifest.json`, `manifest.csv`) with leak-free splits.
//!
//! One scene:   `trainyard-tile --s1 VVVH.tif --s2 S2.tif [--cloud-mask M.tif] --scene-id ID --out DIR`
//! Many scenes: `trainyard-tile --scenes scenes.csv --out DIR`, where the CSV has the header
//! `scene_id,s1,s2,cloud_mask` (`cloud_mask` may be empty or the column absent; relative paths are
//! resolved against the CSV's directory).
//!
//! Synthetic scenes: `trainyard-tile --synthetic N [--synthetic-size W H] [--synthetic-seed S] --out DIR`
//! renders N paired scenes with `tiling::synthetic` (on a fake UTM grid) and tiles them the same
//! way; their sidecars say `synthetic: true` and their sources are `synthetic://` names. With
//! `--write-scene-tiffs DIR` the rendered scenes are also written as GeoTIFFs plus a `scenes.csv`
//! for `--scenes`; without `--out` that is all it does.
//!
//! The output directory must be new or empty: `--overwrite` first removes an earlier run's
//! manifest and tiles from it (other files are kept). Scenes must be at least `--size` on each
//! side, and a run that would keep no tile fails instead of writing an empty manifest. When
//! only one of S1 and S2 is georeferenced the scene is refused, unless `--assume-same-grid`
//! says the other lies on its pixel grid.
//!
//! Exit status: 0 on success, 2 for bad input (unreadable or inconsistent rasters, malformed CSV,
//! invalid options, a non-empty output directory without `--overwrite`, scenes smaller than a
//! tile, no tile kept), 1 when the output cannot be written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{ArgGroup, Parser, ValueEnum};
use tiling::TilingError;
use tiling::npz::Dtype;
use tiling::synthetic::{SceneFiles, SyntheticConfig, SyntheticScene, write_scene_list};
use tiling::tiler::{Scene, SkipReason, SplitBy, SplitRatios, Tiler, TilerConfig};

/// Cut S1/S2 scenes into Axion-style NPZ tiles with sidecars, a manifest and scene/region splits.
#[derive(Debug, Parser)]
#[command(name = "trainyard-tile", version)]
#[command(group(ArgGroup::new("input").required(true).args(["s1", "scenes", "synthetic"])))]
struct Args {
    /// Sentinel-1 GeoTIFF with 2 bands (VV, VH), linear σ0 power (or dB with --s1-db).
    #[arg(long, value_name = "TIF", requires_all = ["s2", "scene_id"])]
    s1: Option<PathBuf>,
    /// Sentinel-2 L2A GeoTIFF with 4 bands (B2, B3, B4, B8) as DN, on the S1 pixel grid.
    #[arg(long, value_name = "TIF", requires = "s1")]
    s2: Option<PathBuf>,
    /// Optional 1-band cloud mask on the same grid; nonzero marks cloud.
    #[arg(long, value_name = "TIF", requires = "s1")]
    cloud_mask: Option<PathBuf>,
    /// Scene id (letters, digits, `_`, `-`, `.`); tiles are named `<id>_r<row>_c<col>`.
    #[arg(long, value_name = "ID", requires = "s1")]
    scene_id: Option<String>,
    /// CSV list of scenes with the columns scene_id, s1, s2 and optionally cloud_mask (instead of --s1/--s2).
    #[arg(long, value_name = "CSV", conflicts_with_all = ["s1", "s2", "cloud_mask", "scene_id"])]
    scenes: Option<PathBuf>,
    /// Render N synthetic paired scenes (tiling::synthetic, clearly labelled) instead of reading files.
    #[arg(long, value_name = "N", conflicts_with_all = ["s1", "s2", "cloud_mask", "scene_id", "scenes", "s1_db"])]
    synthetic: Option<usize>,
    /// Width and height of every synthetic scene in pixels [default: 512 512].
    #[arg(long, num_args = 2, value_names = ["W", "H"], requires = "synthetic", conflicts_with_all = ["s1", "scenes"])]
    synthetic_size: Option<Vec<usize>>,
    /// Seed of the synthetic scenes (default: --seed).
    #[arg(long, value_name = "S", requires = "synthetic", conflicts_with_all = ["s1", "scenes"])]
    synthetic_seed: Option<u64>,
    /// Cloud blobs per synthetic scene (written as S2 nodata and as a cloud mask) [default: 0].
    #[arg(long, value_name = "N", requires = "synthetic", conflicts_with_all = ["s1", "scenes"])]
    synthetic_clouds: Option<usize>,
    /// Also write the synthetic scenes as GeoTIFFs (S1 float32 linear power, S2 uint16 DN, cloud mask
    /// uint8; fake UTM georeference) with a scenes.csv for --scenes, into DIR.
    #[arg(long, value_name = "DIR", requires = "synthetic", conflicts_with_all = ["s1", "scenes"])]
    write_scene_tiffs: Option<PathBuf>,
    /// Output directory (created if missing; must be empty unless --overwrite); optional with
    /// --write-scene-tiffs (export only).
    #[arg(long, value_name = "DIR", required_unless_present = "write_scene_tiffs")]
    out: Option<PathBuf>,
    /// Reuse a non-empty --out: first delete its manifest.json / manifest.csv and every *.npz
    /// tile with its .json sidecar (other files are kept), then tile into it.
    #[arg(long, requires = "out")]
    overwrite: bool,
    /// When only one of the S1 and S2 rasters is georeferenced, take the other to lie on its pixel
    /// grid (tiles get its geotransform and CRS). Without it such a scene is refused.
    #[arg(long, conflicts_with = "synthetic")]
    assume_same_grid: bool,
    /// Tile side in pixels.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Pixels shared by neighbouring tiles.
    #[arg(long, default_value_t = 0)]
    overlap: usize,
    /// Minimum fraction of valid pixels for a tile to be kept.
    #[arg(long = "min-valid", default_value_t = 0.5)]
    min_valid: f64,
    /// Seed of the split shuffle.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// S1 input is already in dB (no log conversion; the floor still applies).
    #[arg(long)]
    s1_db: bool,
    /// S1 dB floor: lower values are raised to it.
    #[arg(long, default_value_t = -30.0, allow_negative_numbers = true, value_name = "DB")]
    s1_db_floor: f32,
    /// Do not apply the S1 dB floor.
    #[arg(long, conflicts_with = "s1_db_floor")]
    no_db_floor: bool,
    /// S2 DN are multiplied by this to give reflectance.
    #[arg(long, default_value_t = 1e-4)]
    s2_scale: f64,
    /// Write float16 planes instead of float32.
    #[arg(long)]
    float16: bool,
    /// Split unit: every scene, or scenes grouped by region (coarse grid cell of their centre).
    #[arg(long, value_enum, default_value_t = SplitUnit::Scene)]
    split_by: SplitUnit,
    /// Train,val,test fractions of the split units.
    #[arg(long, default_value = "0.7,0.15,0.15", value_name = "TRAIN,VAL,TEST")]
    split_ratio: String,
    /// Region cell side in metres (projected CRSs).
    #[arg(long, default_value_t = 50_000.0)]
    region_size_m: f64,
    /// Region cell side in degrees (geographic CRSs).
    #[arg(long, default_value_t = 0.5)]
    region_size_deg: f64,
    /// Worker threads (0: all cores); the output does not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// `--split-by` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum SplitUnit {
    Scene,
    Region,
}

/// Where a scene's rasters come from.
enum SceneSource {
    Files {
        id: String,
        s1: PathBuf,
        s2: PathBuf,
        cloud_mask: Option<PathBuf>,
    },
    /// Scene `index` rendered by `tiling::synthetic` from `config`.
    Synthetic {
        config: SyntheticConfig,
        index: u64,
    },
}

/// An error and the exit status it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn bad_input(error: anyhow::Error) -> Failure {
    Failure { code: 2, error }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let config = config(args).map_err(bad_input)?;
    let sources = scene_sources(args).map_err(bad_input)?;
    let synthetic = args.synthetic.is_some();
    let kind = if synthetic { "synthetic scene" } else { "scene" };
    let threads =
        if args.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { args.threads };
    let mut tiler = match &args.out {
        Some(out) => {
            let removed = tiling::tiler::prepare_output_dir(out, args.overwrite)
                .map_err(|e| classify(e, &format!("preparing the output directory {}", out.display())))?;
            if removed > 0 {
                eprintln!("--overwrite: removed {removed} earlier tiles and the manifest from {}", out.display());
            }
            Some(Tiler::new(out, config).map_err(|e| classify(e, "starting the run"))?.with_threads(threads))
        }
        None => None,
    };
    let mut exported: Vec<SceneFiles> = Vec::new();
    let (mut written, mut windows) = (0usize, 0usize);
    for source in sources {
        let scene = load(source, args.s1_db, args.write_scene_tiffs.as_deref(), &mut exported)?;
        let Some(tiler) = tiler.as_mut() else { continue };
        let id = scene.id.clone();
        check_scene_size(&scene, args.size).map_err(bad_input)?;
        let report = tiler.add_scene(scene).map_err(|e| classify(e, &format!("tiling {kind} `{id}`")))?;
        eprintln!(
            "{kind} {id}: {} of {} windows written, {} skipped (too few valid pixels)",
            report.written, report.windows, report.skipped
        );
        (written, windows) = (written + report.written, windows + report.windows);
    }
    if tiler.is_some() && written == 0 {
        return Err(bad_input(anyhow!(
            "no tile kept: all {windows} windows had fewer than --min-valid {} valid pixels; no manifest was written",
            args.min_valid
        )));
    }
    if let Some(dir) = &args.write_scene_tiffs {
        let list = dir.join("scenes.csv");
        write_scene_list(&list, &exported).map_err(|e| classify(e, "writing the scene list"))?;
        eprintln!(
            "{} synthetic scenes written as GeoTIFF to {} (list: {}; fake georeference, not real data)",
            exported.len(),
            dir.display(),
            list.display()
        );
    }
    let (Some(tiler), Some(out)) = (tiler, &args.out) else { return Ok(()) };
    let manifest = tiler.finish().map_err(|e| classify(e, "writing sidecars and manifest"))?;
    let s = &manifest.summary;
    let reasons: Vec<String> = s
        .skipped
        .by_reason
        .iter()
        .map(|(reason, n)| {
            format!("{n} {}", if *reason == SkipReason::MostlyCloud { "mostly cloud" } else { "mostly nodata" })
        })
        .collect();
    eprintln!(
        "{} tiles from {} {kind}{} written to {} (train {}, val {}, test {}); {} windows skipped{}{}",
        s.tiles_written,
        manifest.scenes.len(),
        if manifest.scenes.len() == 1 { "" } else { "s" },
        out.display(),
        s.tiles_per_split.train,
        s.tiles_per_split.val,
        s.tiles_per_split.test,
        s.skipped.total,
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) },
        if synthetic { "; synthetic data, every sidecar says synthetic: true" } else { "" }
    );
    Ok(())
}

/// A scene smaller than one tile would give no tile: an error naming `--size` and the scene's size.
fn check_scene_size(scene: &Scene, size: usize) -> anyhow::Result<()> {
    let (w, h) = (scene.s2.width, scene.s2.height);
    if w < size || h < size {
        bail!(
            "--size {size}: scene `{}` ({}) is {w}x{h} pixels (width x height), smaller than one {size}x{size} tile; \
             choose a --size of at most {}",
            scene.id,
            scene.s2.source.display(),
            w.min(h)
        );
    }
    Ok(())
}

/// Tiler errors: content and format problems are bad input (2); I/O errors are about the
/// output directory (1).
fn classify(e: TilingError, doing: &str) -> Failure {
    let code = if matches!(e, TilingError::Io { .. }) { 1 } else { 2 };
    Failure { code, error: anyhow::Error::new(e).context(doing.to_string()) }
}

fn config(args: &Args) -> anyhow::Result<TilerConfig> {
    let parts: Vec<f64> = args
        .split_ratio
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|p: &Vec<f64>| p.len() == 3)
        .ok_or_else(|| anyhow!("--split-ratio `{}`: expected three numbers TRAIN,VAL,TEST", args.split_ratio))?;
    let config = TilerConfig {
        size: args.size,
        overlap: args.overlap,
        s1_db_floor: (!args.no_db_floor).then_some(args.s1_db_floor),
        s2_scale: args.s2_scale,
        min_valid_fraction: args.min_valid,
        split_ratios: SplitRatios { train: parts[0], val: parts[1], test: parts[2] },
        split_by: match args.split_by {
            SplitUnit::Scene => SplitBy::Scene,
            SplitUnit::Region => SplitBy::Region,
        },
        region_size_m: args.region_size_m,
        region_size_deg: args.region_size_deg,
        seed: args.seed,
        dtype: if args.float16 { Dtype::F16 } else { Dtype::F32 },
        assume_same_grid: args.assume_same_grid,
    };
    config.validate().map_err(|m| anyhow!("invalid options: {m}"))?;
    Ok(config)
}

/// The scenes to tile, in order.
fn scene_sources(args: &Args) -> anyhow::Result<Vec<SceneSource>> {
    if let Some(csv) = &args.scenes {
        return read_scene_list(csv);
    }
    if let Some(n) = args.synthetic {
        // clap guarantees two values when the option is given.
        let (width, height) = args.synthetic_size.as_deref().map_or((512, 512), |s| (s[0], s[1]));
        if n == 0 || width == 0 || height == 0 {
            bail!("--synthetic {n} --synthetic-size {width} {height}: need at least one scene of at least 1x1 pixels");
        }
        if args.out.is_some() && (width < args.size || height < args.size) {
            bail!(
                "--size {}: the synthetic scenes are {width}x{height} pixels (--synthetic-size), smaller than one tile; \
                 choose a --size of at most {}",
                args.size,
                width.min(height)
            );
        }
        let config = SyntheticConfig {
            cloud_count: args.synthetic_clouds.unwrap_or(0),
            ..SyntheticConfig::new(width, height, args.synthetic_seed.unwrap_or(args.seed))
        };
        return Ok((0..n as u64).map(|index| SceneSource::Synthetic { config: config.clone(), index }).collect());
    }
    // clap guarantees --s2 and --scene-id come with --s1.
    let (Some(s1), Some(s2), Some(id)) = (&args.s1, &args.s2, &args.scene_id) else {
        bail!("give --s1, --s2 and --scene-id, or --scenes");
    };
    Ok(vec![SceneSource::Files { id: id.clone(), s1: s1.clone(), s2: s2.clone(), cloud_mask: args.cloud_mask.clone() }])
}

fn read_scene_list(path: &Path) -> anyhow::Result<Vec<SceneSource>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening scene list {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(file);
    let headers = reader.headers().with_context(|| format!("reading the header of {}", path.display()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(id_col), Some(s1_col), Some(s2_col)) = (column("scene_id"), column("s1"), column("s2")) else {
        bail!(
            "{}: the header must name the columns scene_id,s1,s2 (and optionally cloud_mask); found `{}`",
            path.display(),
            headers.iter().collect::<Vec<_>>().join(",")
        );
    };
    let mask_col = column("cloud_mask");
    let base = path.parent().unwrap_or(Path::new(""));
    let resolve = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
    let mut sources = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{}: line {line} is malformed", path.display()))?;
        let field = |c: usize| record.get(c).unwrap_or("");
        let (id, s1, s2) = (field(id_col), field(s1_col), field(s2_col));
        if id.is_empty() || s1.is_empty() || s2.is_empty() {
            bail!("{}: line {line}: scene_id, s1 and s2 must all be given", path.display());
        }
        let mask = mask_col.map(field).filter(|m| !m.is_empty());
        sources.push(SceneSource::Files {
            id: id.to_string(),
            s1: resolve(s1),
            s2: resolve(s2),
            cloud_mask: mask.map(resolve),
        });
    }
    if sources.is_empty() {
        bail!("{}: no scenes listed", path.display());
    }
    Ok(sources)
}

/// Reads or renders a scene; a synthetic one is also written as GeoTIFF into `export` if given
/// (its files are appended to `exported`).
fn load(
    source: SceneSource,
    s1_is_db: bool,
    export: Option<&Path>,
    exported: &mut Vec<SceneFiles>,
) -> Result<Scene, Failure> {
    match source {
        SceneSource::Files { id, s1, s2, cloud_mask } => {
            let read = |p: &Path, what: &str| {
                tiling::geotiff::read_geotiff(p).with_context(|| format!("reading the {what} of scene `{id}`"))
            };
            let scene = (|| {
                Ok(Scene {
                    s1: read(&s1, "S1 raster")?,
                    s2: read(&s2, "S2 raster")?,
                    cloud_mask: cloud_mask.as_deref().map(|m| read(m, "cloud mask")).transpose()?,
                    s1_is_db,
                    id: id.clone(),
                })
            })();
            scene.map_err(bad_input)
        }
        SceneSource::Synthetic { config, index } => {
            let scene = SyntheticScene::generate(&config, index).with_fake_georeference();
            if let Some(dir) = export {
                let files =
                    scene.write_geotiffs(dir).map_err(|e| classify(e, &format!("exporting scene `{}`", scene.id)))?;
                exported.push(files);
            }
            // As `SyntheticScene::to_scene`, without copying the rasters, plus the cloud mask.
            let cloud_mask = scene.cloud_mask();
            Ok(Scene { id: scene.id, s1: scene.s1, s1_is_db: false, s2: scene.s2, cloud_mask })
        }
    }
}
