//! The LR range test (`<stage> lr-find`) on a stage's own task.
//!
//! The sweep runs on clones of the model and the optimizer: the caller's model and
//! optimizer state are never touched (burn tensors are immutable values; the optimizer
//! steps the clones). Each sweep step is one optimizer step over the same effective batch
//! as training (`batch_size × gradient_accumulation_steps`, gradient clipping as configured),
//! drawn from the seeded training order. The sweep, smoothing, divergence stop and
//! suggestion are [`schedulers::finder`].

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use schedulers::finder::{FinderConfig, Flow, LrFinder};

use crate::grads;
use crate::task::Task;
use crate::train::{INIT_LOCK, LoopConfig, TrainError, Trainer, adamw, epoch_order, init_model, step_seed};

/// What `lr-find` was asked for.
#[derive(Debug, Clone)]
pub struct LrFindOptions {
    /// Sweep range, length, smoothing and suggestion settings.
    pub finder: FinderConfig,
    /// Draw the sweep's batches from this many training samples (a seeded subset); all if `None`.
    pub num_samples: Option<usize>,
    /// Where `lr_find.csv` and `lr_find.png` go.
    pub out_dir: PathBuf,
}

/// The finished sweep and where its files were written.
pub struct LrFindOutcome {
    /// The recorded sweep (points, suggestion, report).
    pub finder: LrFinder,
    /// `lr_find.csv`.
    pub csv: PathBuf,
    /// `lr_find.png`.
    pub png: PathBuf,
}

/// Runs the LR range test on clones of `model` and `optim`; both are left exactly as they were.
pub fn range_test<B, T, O>(
    cfg: &LoopConfig<'_>,
    task: &T,
    model: &T::Model,
    optim: &O,
    device: &B::Device,
    finder: &FinderConfig,
    num_samples: Option<usize>,
) -> Result<LrFinder, TrainError>
where
    B: AutodiffBackend,
    T: Task<B>,
    O: Optimizer<T::Model, B> + Clone,
{
    let t = cfg.training;
    let pool: Vec<usize> = {
        let all = epoch_order(cfg.seed, 0, task.train_len());
        let n = num_samples.unwrap_or(all.len()).min(all.len());
        all[..n].to_vec()
    };
    if pool.is_empty() {
        return Err(TrainError::EmptyDataset);
    }
    let mut model = model.clone();
    let mut optim = optim.clone();
    let mut sweep = LrFinder::new(finder.clone());
    let (mut pass, mut cursor) = (0u64, 0usize);
    let mut order = pool.clone();
    let mut k = 0u64;
    while let Some(lr) = sweep.next_lr() {
        {
            let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            B::seed(device, step_seed(cfg.seed, k));
        }
        // One optimizer step = `accum` micro-batches of `batch_size`, cycling over the pool
        // in a fresh seeded order on every pass.
        let mut window = Vec::with_capacity(t.gradient_accumulation_steps);
        for _ in 0..t.gradient_accumulation_steps {
            if cursor >= order.len() {
                pass += 1;
                cursor = 0;
                order = epoch_order(cfg.seed, pass, pool.len()).into_iter().map(|i| pool[i]).collect();
            }
            let end = (cursor + t.batch_size).min(order.len());
            window.push(order[cursor..end].to_vec());
            cursor = end;
        }
        let samples: usize = window.iter().map(Vec::len).sum();
        let mut accumulator = GradientsAccumulator::<T::Model>::new();
        let mut loss = 0.0;
        for indices in &window {
            let failed = |what: &str, e: crate::task::TaskError| TrainError::Task {
                what: format!("{what} (LR range test)"),
                step: k + 1,
                epoch: pass,
                message: e.to_string(),
                checkpoint: None,
            };
            let batch = task.train_batch(indices, device).map_err(|e| failed("assembling a training batch", e))?;
            let out = task.train_step(&model, &batch).map_err(|e| failed("running a training step", e))?;
            let weight = indices.len() as f64 / samples as f64;
            let value: f64 = out.loss.clone().into_scalar().elem();
            loss += value * weight;
            let grads = out.loss.mul_scalar(weight).backward();
            accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
        }
        let mut gradients = accumulator.grads();
        if let Some(bound) = t.gradient_clip_value {
            grads::clamp::<B, T::Model>(&model, &mut gradients, bound);
        }
        if let Some(max_norm) = t.gradient_clip_norm {
            let norm = grads::global_norm::<B, T::Model>(&model, &mut gradients);
            grads::clip_global_norm::<B, T::Model>(&model, &mut gradients, norm, max_norm);
        }
        model = optim.step(lr, model, gradients);
        k += 1;
        if sweep.record(loss) != Flow::Continue {
            break;
        }
    }
    Ok(sweep)
}

impl Trainer<'_> {
    /// The LR range test on `task` from the model the run would start from (same seed, same
    /// initialisation) and a fresh optimizer; writes `lr_find.csv` and `lr_find.png` to
    /// `options.out_dir` and prints the suggestion.
    pub fn lr_find<B, T>(
        &self,
        task: &T,
        device: &B::Device,
        options: &LrFindOptions,
    ) -> Result<LrFindOutcome, TrainError>
    where
        B: AutodiffBackend,
        T: Task<B>,
        T::Model: AutodiffModule<B>,
    {
        let cfg = self.config();
        let model = init_model::<B, T>(task, cfg.seed, device);
        let optim = adamw::<B, T::Model>(cfg.optimizer, cfg.optimizer.betas[0]);
        tracing::info!(
            "LR range test: {} steps from {:e} to {:e} ({:?}), batch {} x {} accumulation",
            options.finder.num_steps,
            options.finder.min_lr,
            options.finder.max_lr,
            options.finder.mode,
            cfg.training.batch_size,
            cfg.training.gradient_accumulation_steps
        );
        let finder = range_test::<B, T, _>(cfg, task, &model, &optim, device, &options.finder, options.num_samples)?;
        std::fs::create_dir_all(&options.out_dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", options.out_dir.display())))?;
        let csv = options.out_dir.join("lr_find.csv");
        let png = options.out_dir.join("lr_find.png");
        finder.write_csv(&csv).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", csv.display())))?;
        finder.plot_png(&png).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(LrFindOutcome { finder, csv, png })
    }
}
