//! Stage 1: the SAR→optical generator trained on the shared loop.
//!
//! The model ([`Stage1Model`]) is `sarmodels`' TerraMind-style encoder–decoder (frozen base plus
//! LoRA adapters, or fully trained) and its conditional DDIM denoiser. A training step computes
//! the configured pixel/structure/SAR losses on the generator's output and the denoiser's own x0
//! loss on the detached output (never through sampling). Validation samples the refiner with
//! the current `model.timesteps`, reports seed 000's metrics (`val_loss`, `l1`, `ms_ssim`,
//! `sar_edge_agreement`, ...) plus PSNR against the "predict the mean training image" baseline,
//! prints seed 000's console block and writes a PNG grid (SAR | prediction | target, labelled; see [`grid`]).

pub mod config;
pub mod error;
pub mod grid;
pub mod predict;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, ElementConversion, Tensor, TensorData};
use losses::combined::CombinedLoss;
use losses::lpips::{Lpips, rgb_from_s2};
use losses::pixel::masked_l1;
use losses::sar::colour_ratio_loss;
use losses::sar::sar_structure_loss;
use losses::structure::{MsSsimConfig, ms_ssim_loss};
use sarmodels::denoiser::{Denoiser, sample, training_loss};
use sarmodels::generator::Generator;
use sarmodels::report::ParamCount;
use sarmodels::{GeneratorConfig, ParamSnapshot, WeightError};
use tiling::TilingError;
use tiling::dataset::{
    DatasetConfig, NpzSource, Sample, Standardization, TileDataset, TileSetError, TileSource, check_not_empty,
    decode_parallel, train_val_sources,
};
use tiling::tile::Split;
use trainer::{Metrics, Mode, Selection, StepOutput, Task, TaskResult};

pub use config::{DataSection, LossSection, ModelSection, Stage1Config};
pub use error::Stage1Error;

/// Stage name (binary, default output directory).
pub const NAME: &str = "stage1";

/// File name of the merged generator written at the end of a run (loadable by `model.pretrained`).
pub const BASE_EXPORT: &str = "base_model.safetensors";

/// The trained pair: the generator and its refiner.
#[derive(Module, Debug)]
pub struct Stage1Model<B: Backend> {
    /// SAR → optical encoder–decoder.
    pub generator: Generator<B>,
    /// Conditional residual denoiser.
    pub denoiser: Denoiser<B>,
}

impl<B: Backend> Stage1Model<B> {
    /// The generator's output and the refined output (`timesteps` DDIM steps from noise seeded by `seed`).
    pub fn predict(&self, sar: Tensor<B, 4>, timesteps: usize, seed: u64) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let head = self.generator.forward(sar.clone());
        let residual = sample(&self.denoiser, head.clone(), sar, timesteps, seed);
        (head.clone(), head + residual)
    }
}

/// A batch of tiles on the device.
pub struct Stage1Batch<B: Backend> {
    /// `[b, 2, h, w]` standardised VV, VH.
    pub sar: Tensor<B, 4>,
    /// `[b, 4, h, w]` standardised B2, B3, B4, B8.
    pub target: Tensor<B, 4>,
    /// `[b, 1, h, w]`: 1 where every band was finite.
    pub valid: Tensor<B, 4>,
}

/// Stacks samples into a batch on the device (`tiling::dataset::collate`'s host batch); samples of
/// different sizes are an error naming the tile.
pub fn collate<B: Backend>(samples: &[Sample], device: &B::Device) -> Result<Stage1Batch<B>, Stage1Error> {
    let tiling::dataset::Batch { s1, s2, valid, batch, height, width, .. } = tiling::dataset::collate(samples)?;
    let tensor =
        |data: Vec<f32>, c: usize| Tensor::<B, 4>::from_data(TensorData::new(data, [batch, c, height, width]), device);
    Ok(Stage1Batch { sar: tensor(s1, 2), target: tensor(s2, 4), valid: tensor(valid, 1) })
}

/// Decodes `indices` of `dataset` for `epoch` on up to `workers` threads, in order. A tile that
/// cannot be read (truncated, damaged, checksum mismatch, all-NaN, ...) is an error naming its
/// file: the headers were checked when the task was built, so this is a tile that changed or
/// whose data is bad.
pub fn load_samples(
    dataset: &TileDataset<NpzSource>,
    indices: &[usize],
    epoch: u64,
    workers: usize,
) -> Result<Vec<Sample>, Stage1Error> {
    // A panic while decoding is a bug in a reader; report it against the tiles of that chunk.
    let decode_panicked = |first: usize| Stage1Error::Decode { path: dataset.source().path(first) };
    decode_parallel(indices, workers, |i| Ok(dataset.sample(i, epoch)?), decode_panicked)
}

/// Converts standardised S2 `[b, 4, h, w]` back to reflectance.
fn reflectance<B: Backend>(x: Tensor<B, 4>, s: &Standardization) -> Tensor<B, 4> {
    let device = x.device();
    let mean = Tensor::<B, 1>::from_data(TensorData::from(s.s2_mean), &device).reshape([1, 4, 1, 1]);
    let std = Tensor::<B, 1>::from_data(TensorData::from(s.s2_std), &device).reshape([1, 4, 1, 1]);
    x * std + mean
}

/// Per-image PSNR in dB over reflectance with a data range of 1 (mean over the image's valid pixels).
fn psnr_per_image<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>, valid: Tensor<B, 4>) -> Vec<f64> {
    let [b, c, _, _] = pred.dims();
    let sq = (pred - target).powi_scalar(2) * valid.clone();
    let sum: Vec<f64> = sq.sum_dims(&[1, 2, 3]).reshape([b]).into_data().iter::<f64>().collect();
    let n: Vec<f64> = valid.sum_dims(&[1, 2, 3]).reshape([b]).into_data().iter::<f64>().collect();
    sum.iter().zip(&n).map(|(s, n)| psnr(s / (n * c as f64).max(1.0))).collect()
}

fn psnr(mse: f64) -> f64 {
    if mse > 0.0 { 10.0 * (1.0 / mse).log10() } else { f64::INFINITY }
}

fn sum_of<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

/// Where the tiles come from: a manifest's splits, a hash split, or a separate validation directory.
fn sources(data: &DataSection) -> Result<(NpzSource, NpzSource, bool), Stage1Error> {
    let dir = data.data_dir.as_deref().ok_or_else(|| Stage1Error::config("data.data_dir", "is not set"))?;
    Ok(train_val_sources(dir, data.val_dir.as_deref(), data.val_split)?)
}

/// Keeps the first `n` tiles of a source.
fn take(source: NpzSource, n: Option<usize>) -> NpzSource {
    match n {
        Some(n) => source.take(n),
        None => source,
    }
}

/// The smallest tile side MS-SSIM accepts (its Gaussian window): validation always computes it.
pub fn min_tile_side(ms_ssim: &MsSsimConfig) -> usize {
    ms_ssim.ssim.kernel_size
}

/// Checks one tile set when the task is built: every tile's headers, one size for all, equal to
/// `data.tile_size` when set, fitting the patch grid and at least `min_side` (the losses' window).
fn check_tile_set(
    name: &str,
    source: &NpzSource,
    data: &DataSection,
    generator: &GeneratorConfig,
    min_side: Option<(usize, &str)>,
) -> Result<(), Stage1Error> {
    let fits = |h, w| generator.check_input(h, w).map_err(|e| e.to_string());
    tiling::dataset::check_tile_set(name, source, data.tile_size, fits, min_side)?;
    Ok(())
}

/// The shared tile-set checks' errors as this stage's (`data.tile_size` names the size key).
impl From<TileSetError> for Stage1Error {
    fn from(e: TileSetError) -> Self {
        match e {
            TileSetError::Tiles(e) => Stage1Error::Tiles(e),
            e @ TileSetError::TileSize { .. } => Stage1Error::config("data.tile_size", e.to_string()),
            TileSetError::NoTiles { dir, what } => Stage1Error::NoTiles { dir, what },
            TileSetError::Tile { path, message } => Stage1Error::Tile { path, message },
        }
    }
}

/// The stage-1 task over loaded tile sets.
pub struct Stage1Task<B: AutodiffBackend> {
    config: Stage1Config,
    train: TileDataset<NpzSource>,
    val: TileDataset<NpzSource>,
    standardization: Standardization,
    loss: CombinedLoss,
    ms_ssim: MsSsimConfig,
    lpips: Option<Lpips<B>>,
    /// The `model.pretrained` base, read and checked against the model when the task was built.
    base: Option<ParamSnapshot>,
    timesteps: trainer::oom::DegradeKnob,
    epoch: AtomicU64,
    validation_step: AtomicU64,
    /// Per-pixel mean of the (un-augmented) training targets `[4, h, w]` and its size; `None`
    /// when training tiles differ in size.
    mean_image: Option<(Vec<f32>, usize, usize)>,
    dataset_id: String,
    run_dir: PathBuf,
}

impl<B: AutodiffBackend> Stage1Task<B> {
    /// Reads the tile sets the config names and checks them against the model and the losses.
    ///
    /// Checked here, so that a bad data set fails before training starts: every tile's headers
    /// (sidecar, zip directory, NPY headers: bands, dtype, order, shape), one size per set, equal
    /// to `data.tile_size` when set, fitting the patch grid and at least MS-SSIM's window; every
    /// manifest entry exists inside the data directory; `model.pretrained` loads into this model.
    /// Errors name the file or the config key.
    pub fn new(config: &Stage1Config, device: &B::Device) -> Result<Self, Stage1Error> {
        let data = &config.data;
        let (train, val, check_split) = sources(data)?;
        let train = take(train, data.max_tiles);
        let val = take(val, data.max_val_tiles);
        let dir = data.data_dir.as_deref().unwrap_or(Path::new("."));
        check_not_empty(&train, &val, dir, data.val_dir.as_deref())?;
        let loss = CombinedLoss::new(&config.loss.weights(), &config::LOSS_TERMS).map_err(|e| {
            Stage1Error::config("loss", e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        let ms_ssim = MsSsimConfig::default();
        let generator = config.model.generator();
        let side = min_tile_side(&ms_ssim);
        // LPIPS's trunk (AlexNet / VGG) needs a minimum input too, in training and validation.
        let lpips = loss
            .is_active("lpips")
            .then(|| (config.loss.lpips.net.min_input_size(), "LPIPS (loss.lpips_weight, its loss.lpips.net)"));
        let largest = |a: Option<(usize, &'static str)>, b: Option<(usize, &'static str)>| match (a, b) {
            (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        let train_min = largest(loss.is_active("ms_ssim").then_some((side, "MS-SSIM (loss.ms_ssim_weight)")), lpips);
        let val_min = largest(Some((side, "MS-SSIM (the validation metric ms_ssim)")), lpips);
        check_tile_set("training", &train, data, &generator, train_min)?;
        check_tile_set("validation", &val, data, &generator, val_min)?;

        let standardization =
            if config.model.standardize { Standardization::terramind_v1() } else { Standardization::none() };
        let dataset = |source, split, augment| {
            let mut c = DatasetConfig::new(split, config.seed);
            c.standardization = standardization.clone();
            c.augment = augment;
            c.tile_size = data.tile_size.map(|s| (s, s));
            c.check_split = check_split;
            TileDataset::new(source, c)
        };
        let mut train_paths = Vec::new();
        for p in train.paths() {
            train_paths.extend_from_slice(p.display().to_string().as_bytes());
        }
        let train = dataset(train, Split::Train, data.augment)?;
        let val = dataset(val, Split::Val, false)?;

        let base = match &config.model.pretrained {
            Some(path) => Some(read_base::<B>(&generator, path, device)?),
            None => None,
        };
        if config.model.lora.enabled && config.model.pretrained.is_none() {
            tracing::warn!(
                "LoRA on a randomly initialised base: only the adapters train and the frozen pixel head stays random. \
                 Train a base first (model.lora.enabled: false; it is written to {BASE_EXPORT}) and load it with \
                 model.pretrained"
            );
        }
        let lpips = if loss.is_active("lpips") {
            Some(config.loss.lpips.load::<B>(device).map_err(|e| Stage1Error::config("loss.lpips", e.to_string()))?)
        } else {
            None
        };
        let mean_image = mean_training_image(&train, data)?;
        let dataset_id = format!("stage1-{:08x}-{}", crc32c::crc32c(&train_paths), train.len());
        Ok(Self {
            config: config.clone(),
            train,
            val,
            standardization,
            loss,
            ms_ssim,
            lpips,
            base,
            timesteps: trainer::oom::DegradeKnob::new(
                "timesteps",
                config.model.timesteps,
                config.model.min_timesteps,
                config.model.timestep_reduction,
            ),
            epoch: AtomicU64::new(0),
            validation_step: AtomicU64::new(0),
            mean_image,
            dataset_id,
            run_dir: config.output_dir.clone(),
        })
    }

    /// The DDIM steps validation uses now (lowered by out-of-memory recovery).
    pub fn timesteps(&self) -> usize {
        self.timesteps.get()
    }

    /// Number of training and validation tiles.
    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.val.len())
    }

    /// Validation over the whole validation set with the current timesteps.
    ///
    /// A validation tile that cannot be read is an error naming its file.
    pub fn evaluate(&self, model: &Stage1Model<B::InnerBackend>, device: &B::Device) -> Result<Metrics, Stage1Error> {
        let steps = self.timesteps();
        let order: Vec<usize> = (0..self.val.len()).collect();
        let w = |name: &str| self.loss.weight(name);
        let lpips = self.lpips.as_ref().map(|l| l.valid());
        let mut sums: std::collections::BTreeMap<&str, f64> = Default::default();
        let (mut psnr_sum, mut psnr_head_sum, mut n) = (0.0, 0.0, 0usize);
        // The baseline: the mean training image predicted for every tile of its size.
        let (mut psnr_mean_sum, mut mean_ok) = (0.0, self.mean_image.is_some());
        let mut grid = Vec::new();
        for (bi, chunk) in order.chunks(self.config.data.val_batch_size).enumerate() {
            let samples = load_samples(&self.val, chunk, 0, self.config.data.num_workers)?;
            let batch = collate::<B::InnerBackend>(&samples, device)?;
            let k = samples.len() as f64;
            let seed = self.config.seed ^ (bi as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let (head, out) = model.predict(batch.sar.clone(), steps, seed);
            let mut add = |name: &'static str, v: f64| *sums.entry(name).or_default() += v * k;
            add("l1", sum_of(masked_l1(out.clone(), batch.target.clone(), batch.valid.clone())));
            add("ms_ssim", sum_of(ms_ssim_loss(out.clone(), batch.target.clone(), &self.ms_ssim)));
            add("sar_structure", sum_of(sar_structure_loss(out.clone(), batch.sar.clone())));
            let refl_out = reflectance(out.clone(), &self.standardization);
            let refl_target = reflectance(batch.target.clone(), &self.standardization);
            if let Some(l) = &lpips {
                add("lpips", sum_of(l.loss(rgb_from_s2(refl_out.clone()), rgb_from_s2(refl_target.clone()))));
            }
            if self.loss.is_active("color_consistency") {
                add("color_consistency", sum_of(colour_ratio_loss(refl_out.clone(), refl_target.clone())));
            }
            let refl_head = reflectance(head, &self.standardization);
            match &self.mean_image {
                Some((mean, h, w)) if samples.iter().all(|x| (x.height, x.width) == (*h, *w)) => {
                    let b = samples.len();
                    let pred = Tensor::from_data(TensorData::new(mean.repeat(b), [b, 4, *h, *w]), device);
                    let p = reflectance(pred, &self.standardization);
                    psnr_mean_sum += psnr_per_image(p, refl_target.clone(), batch.valid.clone()).iter().sum::<f64>();
                }
                _ => mean_ok = false,
            }
            let psnr_each = psnr_per_image(refl_out.clone(), refl_target.clone(), batch.valid.clone());
            psnr_sum += psnr_each.iter().sum::<f64>();
            psnr_head_sum += psnr_per_image(refl_head, refl_target.clone(), batch.valid.clone()).iter().sum::<f64>();
            n += samples.len();
            if grid.len() < self.config.data.grid_tiles {
                let out_host: Vec<f32> = refl_out.into_data().iter::<f32>().collect();
                let target_host: Vec<f32> = refl_target.into_data().iter::<f32>().collect();
                for (i, s) in samples.iter().enumerate() {
                    if grid.len() == self.config.data.grid_tiles {
                        break;
                    }
                    let hw = s.height * s.width;
                    // The sample's VV is standardised: back to the tile's dB for the fixed stretch.
                    let (mean, std) = (self.standardization.s1_mean[0], self.standardization.s1_std[0]);
                    grid.push(grid::Row {
                        tile_id: s.tile_id.clone(),
                        psnr: psnr_each[i],
                        sar_db: s.s1[..hw].iter().map(|v| v * std + mean).collect(),
                        prediction: out_host[i * 4 * hw..(i + 1) * 4 * hw].to_vec(),
                        target: target_host[i * 4 * hw..(i + 1) * 4 * hw].to_vec(),
                        height: s.height,
                        width: s.width,
                    });
                }
            }
        }
        let mut m = Metrics::new();
        let nf = n as f64;
        let mut val_loss = 0.0;
        for (name, total) in &sums {
            let v = total / nf;
            m.insert((*name).to_string(), v);
            val_loss += w(name) * v;
        }
        // seed 000: `sar_edge_agreement` is the validation `sar_structure` (lower is better), always computed.
        m.insert("sar_edge_agreement".into(), m["sar_structure"]);
        m.insert("val_loss".into(), val_loss);
        m.insert("psnr".into(), psnr_sum / nf);
        m.insert("psnr_head".into(), psnr_head_sum / nf);
        let baseline = if mean_ok { psnr_mean_sum / nf } else { f64::NAN };
        m.insert("psnr_mean_image".into(), baseline);
        m.insert("timesteps".into(), steps as f64);
        let step = self.validation_step.load(Ordering::SeqCst);
        if !grid.is_empty() {
            let path = self.run_dir.join("validation").join(format!("step_{step}.png"));
            if let Err(e) = grid::write(&path, &grid) {
                tracing::warn!("could not write the validation grid {}: {e}", path.display());
            }
        }
        eprintln!("Val Loss: {val_loss:.4}");
        eprintln!("  L1: {:.4}, MS-SSIM: {:.4}", m["l1"], m["ms_ssim"]);
        if let Some(l) = m.get("lpips") {
            eprintln!("  LPIPS: {l:.4}");
        }
        eprintln!("  SAR-Edge Agreement: {:.4}", m["sar_edge_agreement"]);
        eprintln!("  PSNR: {:.2} dB (mean-image baseline {baseline:.2} dB, timesteps {steps})", m["psnr"]);
        Ok(m)
    }
}

/// The per-pixel mean of the targets of (at most `baseline_tiles`) un-augmented training tiles,
/// `[4, h, w]` standardised, for the "predict the mean training image" baseline; `None` when the
/// tiles differ in size.
fn mean_training_image(
    train: &TileDataset<NpzSource>,
    data: &DataSection,
) -> Result<Option<(Vec<f32>, usize, usize)>, Stage1Error> {
    let n = train.len().min(data.baseline_tiles.max(1));
    // Training samples are augmented; read these with the validation transform instead.
    let mut plain = train.config().clone();
    plain.augment = false;
    let plain = TileDataset::new(train.source().clone(), plain)?;
    let idx: Vec<usize> = (0..n).collect();
    let samples = load_samples(&plain, &idx, 0, data.num_workers)?;
    let Some(first) = samples.first() else { return Ok(None) };
    let (h, w) = (first.height, first.width);
    if samples.iter().any(|x| (x.height, x.width) != (h, w)) {
        return Ok(None);
    }
    let mut mean = vec![0.0f64; 4 * h * w];
    for x in &samples {
        for (m, v) in mean.iter_mut().zip(&x.s2) {
            *m += f64::from(*v) / n as f64;
        }
    }
    Ok(Some((mean.iter().map(|&v| v as f32).collect(), h, w)))
}

/// Whether a parameter path belongs to a LoRA adapter (`sarmodels` names them `adapter`): never
/// read from a base file.
fn in_adapter(path: &[String]) -> bool {
    path.iter().any(|p| p == "adapter")
}

/// Loads `model.pretrained` (`path`) into a generator of `config` (so every key and shape is
/// checked) and keeps its base (non-adapter) parameters, once when the task is built.
fn read_base<B: Backend>(
    config: &GeneratorConfig,
    path: &Path,
    device: &B::Device,
) -> Result<ParamSnapshot, Stage1Error> {
    let generator = config
        .try_init::<B>(device)
        .map_err(|e| Stage1Error::config("model", e.to_string()))?
        .load_base(path)
        .map_err(Stage1Error::Pretrained)?;
    Ok(ParamSnapshot::of(&generator, in_adapter))
}

impl<B: AutodiffBackend> Task<B> for Stage1Task<B> {
    type Model = Stage1Model<B>;
    type Batch = Stage1Batch<B>;

    fn build_model(&self, device: &B::Device) -> Stage1Model<B> {
        let gc = self.config.model.generator();
        let mut generator = gc.init::<B>(device);
        if let Some(base) = &self.base {
            generator = base.apply(generator);
        }
        let model = Stage1Model { denoiser: gc.init_denoiser(device), generator };
        let count = ParamCount::of::<B, _>(&model);
        eprintln!("{count}");
        model
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn begin_epoch(&self, epoch: u64) -> TaskResult<()> {
        self.epoch.store(epoch, Ordering::SeqCst);
        Ok(())
    }

    fn begin_validation(&self, step: u64) -> TaskResult<()> {
        self.validation_step.store(step, Ordering::SeqCst);
        eprintln!("\n[Step {step}] Running validation...");
        Ok(())
    }

    fn train_batch(&self, indices: &[usize], device: &B::Device) -> TaskResult<Stage1Batch<B>> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        Ok(collate(&load_samples(&self.train, indices, epoch, self.config.data.num_workers)?, device)?)
    }

    fn train_step(&self, model: &Stage1Model<B>, batch: &Stage1Batch<B>) -> TaskResult<StepOutput<B>> {
        let pred = model.generator.forward(batch.sar.clone());
        let mut terms: Vec<(&str, Tensor<B, 1>)> = Vec::new();
        let active = |n: &str| self.loss.is_active(n);
        if active("l1") {
            terms.push(("l1", masked_l1(pred.clone(), batch.target.clone(), batch.valid.clone())));
        }
        if active("ms_ssim") {
            terms.push(("ms_ssim", ms_ssim_loss(pred.clone(), batch.target.clone(), &self.ms_ssim)));
        }
        if active("sar_structure") {
            terms.push(("sar_structure", sar_structure_loss(pred.clone(), batch.sar.clone())));
        }
        if active("lpips") || active("color_consistency") {
            let p = reflectance(pred.clone(), &self.standardization);
            let t = reflectance(batch.target.clone(), &self.standardization);
            if let Some(l) = &self.lpips {
                terms.push(("lpips", l.loss(rgb_from_s2(p.clone()), rgb_from_s2(t.clone()))));
            }
            if active("color_consistency") {
                terms.push(("color_consistency", colour_ratio_loss(p, t)));
            }
        }
        if active("denoiser") {
            // The refiner learns on the detached generator output: its loss never reaches the generator.
            let cond = pred.clone().detach();
            // One draw from the backend RNG (reseeded per step by the loop) seeds the host-side noise,
            // so a resumed run draws the same noise.
            let seed: f64 = Tensor::<B, 1>::random([1], Distribution::Uniform(0.0, 16_777_216.0), &pred.device())
                .into_scalar()
                .elem();
            let residual = batch.target.clone() - cond.clone();
            terms.push(("denoiser", training_loss(&model.denoiser, residual, cond, batch.sar.clone(), seed as u64)));
        }
        let out = self.loss.combine(terms)?;
        let mut metrics = out.components();
        metrics.remove("loss");
        // seed 000's step-log names: the unweighted terms without the `loss_` prefix.
        let metrics = metrics.into_iter().map(|(k, v)| (k.trim_start_matches("loss_").to_string(), v)).collect();
        Ok(StepOutput { loss: out.total, metrics })
    }

    fn validate(&self, model: &Stage1Model<B::InnerBackend>, device: &B::Device) -> TaskResult<Metrics> {
        Ok(self.evaluate(model, device)?)
    }

    fn selection(&self) -> Selection {
        Selection { metric: "val_loss".into(), mode: Mode::Min }
    }

    fn dataset_id(&self) -> String {
        self.dataset_id.clone()
    }

    fn degrade(&self) -> Option<String> {
        self.timesteps.degrade()
    }

    fn degrade_state(&self) -> serde_json::Value {
        self.timesteps.state()
    }

    fn restore_degrade(&self, state: &serde_json::Value) -> Result<(), String> {
        self.timesteps.restore(state)
    }
}

/// Writes the merged generator (adapters folded in) as a base `model.pretrained` can load.
pub fn export_base<B: Backend>(model: Stage1Model<B>, path: &Path) -> Result<(), WeightError> {
    model.generator.merge_lora().save_base(path)
}

/// Renders `scenes` synthetic paired scenes of `scene_size`² pixels (seed `seed`) and cuts them
/// into `tile_size` tiles in `out_dir` with a manifest and scene splits — what
/// `trainyard-tile --synthetic N --synthetic-size S S --size T --synthetic-seed SEED` writes.
/// Tests, smoke and demo runs train on these; every sidecar says `synthetic: true`.
pub fn write_synthetic_tiles(
    out_dir: &Path,
    scenes: usize,
    scene_size: usize,
    tile_size: usize,
    seed: u64,
) -> Result<usize, TilingError> {
    use tiling::synthetic::{SyntheticConfig, SyntheticScene};
    let cfg = SyntheticConfig::new(scene_size, scene_size, seed);
    let rendered =
        (0..scenes as u64).map(|i| SyntheticScene::generate(&cfg, i).with_fake_georeference().to_scene()).collect();
    let tiler = tiling::tiler::TilerConfig { size: tile_size, seed, ..Default::default() };
    let manifest = tiling::tiler::tile_scenes(out_dir, rendered, tiler)?;
    Ok(manifest.tiles.len())
}
