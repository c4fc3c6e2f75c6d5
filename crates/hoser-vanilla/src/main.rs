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
use trainer::cli::{self, Stage};
use trainer::interrupt::Interrupts;
use trainer::lr_find::{LrFindOptions, LrFindOutcome};
use trainer::train::Trainer;
use trainer::{LoopState, StopReason, TrainError};

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
    VanillaTask::new(config).map_err(|e| TrainError::Io(std::io::Error::other(e)))
}

impl Stage for Vanilla {
    const NAME: &'static str = hoser_vanilla::NAME;
    type Model = ModelSection;
    type Data = DataSection;
    type Loss = LossSection;
    type Args = VanillaArgs;

    fn overrides(args: &VanillaArgs) -> Vec<(String, Value)> {
        let mut o = Vec::new();
        if let Some(d) = &args.dataset {
            o.push(("data.dataset".to_string(), Value::from(d.clone())));
        }
        if let Some(d) = &args.data_dir {
            o.push(("data.data_dir".to_string(), Value::from(d.display().to_string())));
        }
        o
    }

    fn train<B: AutodiffBackend>(
        config: &VanillaConfig,
        device: &B::Device,
        interrupts: Interrupts,
    ) -> Result<(StopReason, LoopState), TrainError> {
        let task = task(config)?;
        let summary = Trainer::new(config.loop_config()).interrupts(interrupts).run::<B, _>(&task, device)?;
        Ok((summary.reason, summary.state))
    }

    fn lr_find<B: AutodiffBackend>(
        config: &VanillaConfig,
        device: &B::Device,
        options: &LrFindOptions,
    ) -> Result<LrFindOutcome, TrainError> {
        Trainer::new(config.loop_config()).lr_find::<B, _>(&task(config)?, device, options)
    }
}

fn main() -> ExitCode {
    cli::main::<Vanilla>()
}
