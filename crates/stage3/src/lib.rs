//! Stage 3: SAR grounding on the shared loop.
//!
//! The model ([`Stage3Model`], `sarmodels`' grounding model) refines a stage-2 optical estimate
//! `opt_v2` into `opt_v3`: `opt_v2`'s patches are tokens that cross-attend to the tokens of
//! stage 1's frozen SAR encoder, and the change of the tokens is decoded by stage 1's head as a
//! residual on `opt_v2`. Only LoRA adapters on the cross-attention train; an untrained model
//! returns `opt_v2` exactly.
//!
//! A training step computes seed 001's five weighted terms (`losses::grounding`) on `opt_v3` in
//! reflectance: SAR consistency (edge + texture), cycle and identity against `opt_v2`, spectral L1
//! and LPIPS against the truth. Validation reports `sar_agreement` (selects the best model and
//! drives early stopping), the same for `opt_v2` and the improvement, PSNR / SSIM / GAC of both
//! against the truth, `lpips_change` when LPIPS weights are given, `sar_confidence` and every loss
//! term, and writes `validation/step_N.png` (SAR | opt_v2 | opt_v3 | truth | |opt_v3 − opt_v2|).

pub mod config;
pub mod data;
pub mod error;
pub mod grid;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use losses::combined::CombinedLoss;
use losses::grounding::{
    SarConsistency, cycle_term, gac_score, grounding_confidence, identity_term, psnr_per_image,
    sar_edge_score_per_sample, spectral_term,
};
use losses::lpips::{Lpips, rgb_from_s2};
use losses::sar::sar_agreement_per_sample;
use losses::structure::{SsimConfig, ssim_per_image};
use sarmodels::ParamSnapshot;
use sarmodels::grounding::GroundingModel;
use sarmodels::report::ParamCount;
use tiling::dataset::{
    DatasetConfig, NpzSource, Standardization, TileDataset, TileSetError, check_not_empty, train_val_sources,
};
use tiling::tile::Split;
use trainer::{Metrics, Mode, Selection, StepOutput, Task, TaskResult};

pub use config::{DataSection, LossSection, ModelSection, Pretrained, Stage2Proxy, Stage3Config};
pub use data::{Stage2Source, Stage3Batch, Stage3Data, Stage3Sample, collate, load_samples};
pub use error::Stage3Error;

/// Stage name (binary, default output directory).
pub const NAME: &str = "stage3";

/// The trained model: `sarmodels`' grounding model.
pub type Stage3Model<B> = GroundingModel<B>;

/// The trainable share above which the seed's FAQ says LoRA "may not be applied correctly".
pub const TRAINABLE_WARN_PERCENT: f64 = 5.0;

/// Converts a change of standardised S2 `[b, 4, h, w]` to a change of reflectance (`Δ·σ`).
fn scale<B: Backend>(x: Tensor<B, 4>, s: &Standardization) -> Tensor<B, 4> {
    if s.is_none() {
        return x;
    }
    let std = Tensor::<B, 1>::from_data(TensorData::from(s.s2_std), &x.device()).reshape([1, 4, 1, 1]);
    x * std
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

fn host<B: Backend>(t: Tensor<B, 1>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// Where the tiles come from: a manifest's splits, a hash split, or a separate validation directory.
fn sources(data: &DataSection) -> Result<(NpzSource, NpzSource, bool), Stage3Error> {
    let dir = data.data_dir.as_deref().ok_or_else(|| Stage3Error::config("data.data_dir", "is not set"))?;
    Ok(train_val_sources(dir, data.val_dir.as_deref(), data.val_split)?)
}

/// Checks one tile set when the task is built: headers, one size equal to `data.tile_size` when
/// set, fitting the patch grid, at least `min_side` (SSIM's window, LPIPS's trunk).
fn check_tile_set(
    name: &str,
    source: &NpzSource,
    data: &DataSection,
    model: &ModelSection,
    min_side: (usize, &str),
) -> Result<(), Stage3Error> {
    let grounding = model.grounding();
    let fits = |h, w| grounding.check_input(h, w).map_err(|e| e.to_string());
    tiling::dataset::check_tile_set(name, source, data.tile_size, fits, Some(min_side))?;
    Ok(())
}

/// The shared tile-set checks' errors as this stage's (`data.tile_size` names the size key).
impl From<TileSetError> for Stage3Error {
    fn from(e: TileSetError) -> Self {
        match e {
            TileSetError::Tiles(e) => Stage3Error::Tiles(e),
            e @ TileSetError::TileSize { .. } => Stage3Error::config("data.tile_size", e.to_string()),
            TileSetError::NoTiles { dir, what } => Stage3Error::NoTiles { dir, what },
            TileSetError::Tile { path, message } => Stage3Error::Tile { path, message },
        }
    }
}

/// Whether a parameter path is never read from a stage-1 file: the adapters and the optical embedding.
fn not_from_base(path: &[String]) -> bool {
    path.iter().any(|p| p == "adapter" || p == "optical_embed")
}

/// Base parameters of `model.pretrained`, read and checked once when the task is built; applied to
/// every freshly initialised model (so the run's seed decides the adapters and the optical
/// embedding, and the file decides the base).
fn read_base<B: Backend>(model: &ModelSection, path: &Path, device: &B::Device) -> Result<ParamSnapshot, Stage3Error> {
    let loaded = model
        .grounding()
        .try_init::<B>(device)
        .map_err(|e| Stage3Error::config("model", e.to_string()))?
        .load_base(path)
        .map_err(Stage3Error::Pretrained)?;
    Ok(ParamSnapshot::of(&loaded, not_from_base))
}

/// Named scalar loss terms of one batch.
type Terms<B> = Vec<(&'static str, Tensor<B, 1>)>;

/// The stage-3 task over loaded tile sets and their stage-2 estimates.
pub struct Stage3Task<B: AutodiffBackend> {
    config: Stage3Config,
    train: Stage3Data,
    val: Stage3Data,
    standardization: Standardization,
    loss: CombinedLoss,
    sar_consistency: SarConsistency,
    ssim: SsimConfig,
    lpips: Option<Lpips<B>>,
    base: Option<ParamSnapshot>,
    timesteps: trainer::oom::DegradeKnob,
    epoch: AtomicU64,
    validation_step: AtomicU64,
    dataset_id: String,
    run_dir: PathBuf,
}

impl<B: AutodiffBackend> Stage3Task<B> {
    /// Reads the tile sets and estimates the config names and checks them against the model and
    /// the losses, so that a bad data set fails before training starts: every tile's headers, one
    /// size per set fitting the patch grid and the metrics' windows, an estimate file for every
    /// tile, `model.pretrained` loading into this model, LPIPS weights when asked for. Errors name
    /// the file or the config key.
    pub fn new(config: &Stage3Config, device: &B::Device) -> Result<Self, Stage3Error> {
        let data = &config.data;
        let (train, val, check_split) = sources(data)?;
        let train = match data.max_tiles {
            Some(n) => train.take(n),
            None => train,
        };
        let val = match data.max_val_tiles {
            Some(n) => val.take(n),
            None => val,
        };
        let dir = data.data_dir.as_deref().unwrap_or(Path::new("."));
        check_not_empty(&train, &val, dir, data.val_dir.as_deref())?;
        let loss = CombinedLoss::new(&config.loss.weights(), &config::LOSS_TERMS).map_err(|e| {
            Stage3Error::config("loss", e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        let ssim = SsimConfig::default();
        let wants_lpips = config.loss.wants_lpips(data.compute_lpips);
        let lpips_side = config.loss.lpips.net.min_input_size();
        let min_side = if wants_lpips && lpips_side > ssim.kernel_size {
            (lpips_side, "LPIPS (loss.lpips.net)")
        } else {
            (ssim.kernel_size, "SSIM (the validation metric ssim)")
        };
        check_tile_set("training", &train, data, &config.model, min_side)?;
        check_tile_set("validation", &val, data, &config.model, min_side)?;

        let standardization =
            if config.model.standardize { Standardization::terramind_v1() } else { Standardization::none() };
        let stage2 = match (&data.stage2_dir, data.stage2_proxy) {
            (Some(dir), _) => Stage2Source::Dir(dir.clone()),
            (None, Some(Stage2Proxy::NoisyTruth)) => {
                tracing::warn!(
                    "opt_v2 is the noisy_truth PROXY (truth + N(0, {}²), clipped to [0, 1], drawn per seed, epoch and \
                     tile): no stage-2 estimate is used, and every opt_v2 metric describes the proxy",
                    data.proxy_sigma
                );
                Stage2Source::NoisyTruth { sigma: data.proxy_sigma, seed: config.seed }
            }
            (None, None) => {
                return Err(Stage3Error::config(
                    "data.stage2_dir",
                    "is not set (pass --stage2-dir DIR, or set data.stage2_proxy: noisy_truth)",
                ));
            }
        };
        let dataset = |source: NpzSource, split, augment| -> Result<Stage3Data, Stage3Error> {
            let mut c = DatasetConfig::new(split, config.seed);
            c.standardization = Standardization::none();
            c.augment = augment;
            c.tile_size = data.tile_size.map(|s| (s, s));
            c.check_split = check_split;
            Ok(Stage3Data { tiles: TileDataset::new(source, c)?, stage2: stage2.clone() })
        };
        let mut id_bytes = Vec::new();
        for p in train.paths() {
            id_bytes.extend_from_slice(p.display().to_string().as_bytes());
        }
        match &stage2 {
            Stage2Source::Dir(d) => id_bytes.extend_from_slice(d.display().to_string().as_bytes()),
            Stage2Source::NoisyTruth { sigma, .. } => id_bytes.extend_from_slice(format!("proxy{sigma}").as_bytes()),
        }
        let train = dataset(train, Split::Train, data.augment)?;
        let val = dataset(val, Split::Val, false)?;
        train.check_estimates()?;
        val.check_estimates()?;

        let base = match config.model.base_path() {
            Some(path) => Some(read_base::<B>(&config.model, path, device)?),
            None => {
                let frozen = if config.model.freeze_base_model { "frozen" } else { "trainable" };
                tracing::warn!(
                    "model.pretrained: false — grounding with a RANDOM ({frozen}) SAR encoder, cross-attention and \
                     head; only for tests and smoke runs: set it to stage 1's base_model.safetensors for a real run"
                );
                None
            }
        };
        let lpips = if wants_lpips {
            Some(config.loss.lpips.load::<B>(device).map_err(|e| Stage3Error::config("loss.lpips", e.to_string()))?)
        } else {
            let why = if !config.loss.use_lpips {
                "loss.use_lpips is false"
            } else if !data.compute_lpips {
                "validation.compute_lpips is false and loss.lpips_weight is 0"
            } else {
                "no LPIPS weights are given (loss.lpips.weights)"
            };
            tracing::info!("lpips_change is not computed: {why}");
            None
        };
        let dataset_id = format!("stage3-{:08x}-{}", crc32c::crc32c(&id_bytes), train.len());
        Ok(Self {
            config: config.clone(),
            train,
            val,
            standardization,
            loss,
            sar_consistency: config.loss.sar_consistency.clone(),
            ssim,
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
            dataset_id,
            run_dir: config.output_dir.clone(),
        })
    }

    /// The grounding passes in use now (lowered by out-of-memory recovery).
    pub fn timesteps(&self) -> usize {
        self.timesteps.get()
    }

    /// Number of training and validation tiles.
    pub fn sizes(&self) -> (usize, usize) {
        (self.train.len(), self.val.len())
    }

    /// Where opt_v2 comes from, for the start-up lines.
    pub fn stage2_source(&self) -> &Stage2Source {
        &self.train.stage2
    }

    /// `opt_v3` in reflectance for a batch: `opt_v2` plus the model's change converted to
    /// reflectance (`Δ·σ`), so an untrained model returns `opt_v2` bit for bit (a round trip
    /// through the standardisation would not).
    fn refine<BB: Backend>(&self, model: &Stage3Model<BB>, batch: &Stage3Batch<BB>) -> Tensor<BB, 4> {
        let out = model.forward(batch.sar.clone(), batch.opt_v2.clone(), self.timesteps());
        let change = out - batch.opt_v2.clone();
        batch.opt_v2_refl.clone() + scale(change, &self.standardization)
    }

    /// The five terms (those with a weight) and the SAR term's parts, on `opt_v3` in reflectance.
    fn terms<BB: Backend>(
        &self,
        v3: Tensor<BB, 4>,
        batch: &Stage3Batch<BB>,
        lpips: Option<&Lpips<BB>>,
    ) -> (Terms<BB>, Terms<BB>) {
        let mut terms = Vec::new();
        let mut parts = Vec::new();
        let active = |n: &str| self.loss.is_active(n);
        if active("sar_consistency") {
            let s = self.sar_consistency.terms(v3.clone(), batch.sar_db.clone());
            parts.push(("edge_alignment", s.edge));
            parts.push(("texture_correlation", s.texture));
            terms.push(("sar_consistency", s.total));
        }
        if active("cycle") {
            terms.push(("cycle", cycle_term(v3.clone(), batch.opt_v2_refl.clone())));
        }
        if active("identity") {
            terms.push(("identity", identity_term(v3.clone(), batch.opt_v2_refl.clone(), batch.sar_db.clone())));
        }
        if active("spectral") {
            terms.push(("spectral", spectral_term(v3.clone(), batch.truth.clone(), batch.valid.clone())));
        }
        if let Some(l) = lpips.filter(|_| active("lpips")) {
            terms.push(("lpips", l.loss(rgb_from_s2(v3), rgb_from_s2(batch.truth.clone()))));
        }
        (terms, parts)
    }

    /// Validation over the whole validation set with the current passes. A validation tile that
    /// cannot be read is an error naming its file.
    pub fn evaluate(&self, model: &Stage3Model<B::InnerBackend>, device: &B::Device) -> Result<Metrics, Stage3Error> {
        let order: Vec<usize> = (0..self.val.len()).collect();
        let lpips = self.lpips.as_ref().map(|l| l.valid());
        let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
        let mut per_sample: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        let mut n = 0usize;
        let mut rows = Vec::new();
        let want_rows = if self.config.data.save_example_images { self.config.data.num_example_images } else { 0 };
        for chunk in order.chunks(self.config.data.val_batch_size) {
            let samples = load_samples(&self.val, chunk, 0, self.config.data.num_workers)?;
            let batch = collate::<B::InnerBackend>(&samples, &self.standardization, device)?;
            let k = samples.len() as f64;
            let v3 = self.refine(model, &batch);
            let (terms, parts) = self.terms(v3.clone(), &batch, lpips.as_ref());
            let mut add = |name: &'static str, v: f64| *sums.entry(name).or_default() += v * k;
            let mut val_loss = 0.0;
            for (name, t) in terms {
                let v = scalar(t);
                val_loss += self.loss.weight(name) * v;
                add(name, v);
            }
            for (name, t) in parts {
                add(name, scalar(t));
            }
            add("val_loss", val_loss);
            // Per-sample metrics; a sample without a valid pixel has no PSNR (NaN) and is skipped.
            let mut add_each = |name: &'static str, values: &[f64]| {
                let e = per_sample.entry(name).or_insert((0.0, 0usize));
                for v in values.iter().filter(|v| !v.is_nan()) {
                    e.0 += v;
                    e.1 += 1;
                }
            };
            let (v2, truth, valid, sar) =
                (batch.opt_v2_refl.clone(), batch.truth.clone(), batch.valid.clone(), batch.sar_db.clone());
            let agree_v3 = host(sar_agreement_per_sample(v3.clone(), sar.clone()));
            let agree_v2 = host(sar_agreement_per_sample(v2.clone(), sar.clone()));
            add_each("sar_agreement", &agree_v3);
            add_each("sar_agreement_v2", &agree_v2);
            let psnr_v3 = psnr_per_image(v3.clone(), truth.clone(), valid.clone(), 1.0);
            let psnr_v2 = psnr_per_image(v2.clone(), truth.clone(), valid.clone(), 1.0);
            let ssim_v3 = host(ssim_per_image(v3.clone() * valid.clone(), truth.clone() * valid.clone(), &self.ssim));
            let ssim_v2 = host(ssim_per_image(v2.clone() * valid.clone(), truth.clone() * valid.clone(), &self.ssim));
            add_each("psnr", &psnr_v3);
            add_each("psnr_v2", &psnr_v2);
            add_each("ssim", &ssim_v3);
            add_each("ssim_v2", &ssim_v2);
            let edge_v3 = host(sar_edge_score_per_sample(v3.clone(), sar.clone()));
            let edge_v2 = host(sar_edge_score_per_sample(v2.clone(), sar.clone()));
            let gac = |p: &[f64], s: &[f64], e: &[f64]| -> Vec<f64> {
                p.iter().zip(s).zip(e).map(|((p, s), e)| gac_score(*p, *s, *e)).collect()
            };
            add_each("gac_score", &gac(&psnr_v3, &ssim_v3, &edge_v3));
            add_each("gac_score_v2", &gac(&psnr_v2, &ssim_v2, &edge_v2));
            let conf = scalar(grounding_confidence(sar.clone()).mean());
            *sums.entry("sar_confidence").or_default() += conf * k;
            if let Some(l) = lpips.as_ref().filter(|_| self.config.data.compute_lpips) {
                let change = scalar(l.loss(rgb_from_s2(v3.clone()), rgb_from_s2(v2.clone())));
                *sums.entry("lpips_change").or_default() += change * k;
            }
            n += samples.len();
            if rows.len() < want_rows {
                let v3_host: Vec<f32> = v3.into_data().iter::<f32>().collect();
                for (i, s) in samples.iter().enumerate() {
                    if rows.len() == want_rows {
                        break;
                    }
                    let hw = s.tile.height * s.tile.width;
                    rows.push(grid::Row {
                        tile_id: s.tile.tile_id.clone(),
                        psnr_v2: psnr_v2[i],
                        psnr_v3: psnr_v3[i],
                        sar: s.tile.s1[..hw].to_vec(),
                        opt_v2: s.opt_v2.clone(),
                        opt_v3: v3_host[i * 4 * hw..(i + 1) * 4 * hw].to_vec(),
                        truth: s.tile.s2.clone(),
                        height: s.tile.height,
                        width: s.tile.width,
                    });
                }
            }
        }
        let nf = n.max(1) as f64;
        let mut m: Metrics = sums.into_iter().map(|(k, v)| (k.to_string(), v / nf)).collect();
        for (k, (sum, count)) in per_sample {
            m.insert(k.to_string(), if count > 0 { sum / count as f64 } else { f64::NAN });
        }
        m.insert("sar_agreement_improvement".into(), m["sar_agreement"] - m["sar_agreement_v2"]);
        m.insert("timesteps".into(), self.timesteps() as f64);
        let step = self.validation_step.load(Ordering::SeqCst);
        if !rows.is_empty() {
            let path = self.run_dir.join("validation").join(format!("step_{step}.png"));
            if let Err(e) = grid::write(&path, &rows) {
                tracing::warn!("could not write the example images {}: {e}", path.display());
            }
        }
        eprintln!("Val Loss: {:.4}", m["val_loss"]);
        eprintln!(
            "  SAR agreement: {:.4} (opt_v2 {:.4}, improvement {:+.4})",
            m["sar_agreement"], m["sar_agreement_v2"], m["sar_agreement_improvement"]
        );
        eprintln!(
            "  PSNR: {:.2} dB (opt_v2 {:.2} dB), SSIM: {:.4} (opt_v2 {:.4}), GAC: {:.4}",
            m["psnr"], m["psnr_v2"], m["ssim"], m["ssim_v2"], m["gac_score"]
        );
        if let Some(c) = m.get("lpips_change") {
            eprintln!("  LPIPS change: {c:.4}");
            if *c > self.config.data.lpips_threshold {
                tracing::warn!(
                    "lpips_change {c:.4} is above validation.lpips_threshold {}: opt_v3 departs far from opt_v2",
                    self.config.data.lpips_threshold
                );
            }
        }
        Ok(m)
    }
}

impl<B: AutodiffBackend> Task<B> for Stage3Task<B> {
    type Model = Stage3Model<B>;
    type Batch = Stage3Batch<B>;

    fn build_model(&self, device: &B::Device) -> Stage3Model<B> {
        let mut model = self.config.model.grounding().init::<B>(device);
        if let Some(base) = &self.base {
            model = base.apply(model);
        }
        let count = ParamCount::of::<B, _>(&model);
        // Seed 001's report: `✓ Total parameters: N` / `✓ Trainable parameters: M (p %)`.
        for line in count.to_string().lines() {
            eprintln!("✓ {line}");
        }
        if count.trainable_percent() > TRAINABLE_WARN_PERCENT {
            tracing::warn!(
                "{:.2} % of the parameters train (more than {TRAINABLE_WARN_PERCENT} %): LoRA may not be applied \
                 as intended (model.freeze_base_model: false trains the base too)",
                count.trainable_percent()
            );
        }
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

    fn train_batch(&self, indices: &[usize], device: &B::Device) -> TaskResult<Stage3Batch<B>> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let samples = load_samples(&self.train, indices, epoch, self.config.data.num_workers)?;
        Ok(collate(&samples, &self.standardization, device)?)
    }

    fn train_step(&self, model: &Stage3Model<B>, batch: &Stage3Batch<B>) -> TaskResult<StepOutput<B>> {
        let v3 = self.refine(model, batch);
        let (terms, parts) = self.terms(v3, batch, self.lpips.as_ref());
        let out = self.loss.combine(terms)?;
        let mut metrics: Metrics =
            out.components().into_iter().map(|(k, v)| (k.trim_start_matches("loss_").to_string(), v)).collect();
        metrics.remove("loss");
        for (name, t) in parts {
            metrics.insert(name.to_string(), scalar(t));
        }
        metrics.insert("sar_confidence".into(), scalar(grounding_confidence(batch.sar_db.clone()).mean()));
        Ok(StepOutput { loss: out.total, metrics })
    }

    fn validate(&self, model: &Stage3Model<B::InnerBackend>, device: &B::Device) -> TaskResult<Metrics> {
        Ok(self.evaluate(model, device)?)
    }

    fn selection(&self) -> Selection {
        Selection { metric: "sar_agreement".into(), mode: Mode::Max }
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
