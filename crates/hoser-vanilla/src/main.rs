//! `hoser-vanilla`: HOSER trained from scratch (upstream `train.py`) on the shared trainer.
//!
//! `hoser-vanilla --config configs/hoser/helsinki_test.yaml` trains on the bundled simulated trips;
//! `--dataset NAME` reads `data/NAME` unless `--data-dir` says otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use figment::value::Value;
use hoser_vanilla::{DataSection, LossSection, ModelSection, VanillaConfig, VanillaTask};
use trainer::TrainError;
use trainer::cli::{self, Stage, set_if};

/// Flags of the hoser-vanilla stage.
#[derive(Debug, Clone, Args)]
struct VanillaArgs {
    /// `data.dataset`: dataset name (default data directory `data/<NAME>`).
    #[arg(long, value_name = "NAME")]
    dataset: Option<String>,
    /// `data.data_dir`: directory of the LibCity files.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

struct Vanilla;

fn task(config: &VanillaConfig) -> Result<VanillaTask, TrainError> {
    VanillaTask::new(config).map_err(|e| TrainError::Data(e.to_string()))
}

impl Stage for Vanilla {
    const NAME: &'static str = hoser_vanilla::NAME;
    type Model = ModelSection;
    type Data = DataSection;
    type Loss = LossSection;
    type Args = VanillaArgs;

    fn overrides(args: &VanillaArgs) -> Vec<(String, Value)> {
        let mut o = Vec::new();
        set_if(&mut o, "data.dataset", args.dataset.clone());
        set_if(&mut o, "data.data_dir", args.data_dir.as_ref().map(|d| d.display().to_string()));
        o
    }

    /// Upstream `train.py`'s settings: AdamW lr 1e-3, weight decay 0.1, linear warm-up over
    /// 10 % of the run then cosine, gradient-norm clip 1.0, batch 256; every epoch kept and the
    /// best by validation next-step accuracy exported as `best`; seed 002's layout of three
    /// roots: checkpoints in `save/{dataset}/seed{seed}`, `training.jsonl` and `metrics.csv` in
    /// `log/{dataset}/seed{seed}`, TensorBoard in `tensorboard_log/{dataset}/seed{seed}`. The budget (`training.epochs`, upstream 25) comes from the
    /// config file or `--epochs`.
    fn defaults() -> Vec<(String, Value)> {
        vec![
            ("output_dir".into(), Value::from("save/{dataset}/seed{seed}")),
            ("logging.log_dir".into(), Value::from("log/{dataset}/seed{seed}")),
            ("logging.tensorboard_dir".into(), Value::from("tensorboard_log/{dataset}/seed{seed}")),
            // Seed 002 / upstream: `save/{dataset}/seed{seed}/epoch_N` and `best` side by side.
            ("checkpoint.dir".into(), Value::from(".")),
            ("checkpoint.per_epoch".into(), Value::from(true)),
            ("checkpoint.export_best".into(), Value::from("best")),
        ]
        .into_iter()
        .chain(hoser_vanilla::upstream_training_defaults())
        .collect()
    }

    /// `--dataset NAME` without `--config` reads `configs/hoser/NAME.yaml` when it exists (upstream
    /// reads `config/NAME.yaml`), so `hoser-vanilla --dataset Porto --seed 42` has upstream's budget.
    fn config_file(args: &VanillaArgs) -> Option<PathBuf> {
        hoser_vanilla::dataset_config_file(args.dataset.as_deref())
    }

    fn output_dir_vars(config: &VanillaConfig) -> Vec<(&'static str, String)> {
        vec![("dataset", config.data.dataset.clone())]
    }

    type Task<B: AutodiffBackend> = VanillaTask;

    fn task<B: AutodiffBackend>(config: &VanillaConfig, _device: &B::Device) -> Result<VanillaTask, TrainError> {
        task(config)
    }
}

fn main() -> ExitCode {
    cli::main::<Vanilla>()
}
