//! `trainyard-toy`: the toy stage (a 2-layer MLP on deterministic regression data).
//! It runs the shared loop end to end in seconds and backs the smoke test and CLI tests.

use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use figment::value::Value;
use trainer::cli::{self, Stage};
use trainer::config::NoSection;
use trainer::interrupt::Interrupts;
use trainer::lr_find::{LrFindOptions, LrFindOutcome};
use trainer::toy::{ToyConfig, ToyDataConfig, ToyModelConfig, ToyTask};
use trainer::train::Trainer;
use trainer::{LoopState, StopReason, TrainError};

/// Flags of the toy stage.
#[derive(Debug, Clone, Args)]
struct ToyArgs {
    /// `model.hidden`: width of the hidden layer.
    #[arg(long)]
    hidden: Option<usize>,
}

struct Toy;

impl Stage for Toy {
    const NAME: &'static str = "toy";
    type Model = ToyModelConfig;
    type Data = ToyDataConfig;
    type Loss = NoSection;
    type Args = ToyArgs;

    fn overrides(args: &ToyArgs) -> Vec<(String, Value)> {
        args.hidden.map(|h| ("model.hidden".to_string(), Value::from(h as u64))).into_iter().collect()
    }

    fn train<B: AutodiffBackend>(
        config: &ToyConfig,
        device: &B::Device,
        interrupts: Interrupts,
    ) -> Result<(StopReason, LoopState), TrainError> {
        let task = ToyTask::new(config);
        let summary = Trainer::new(config.loop_config()).interrupts(interrupts).run::<B, _>(&task, device)?;
        Ok((summary.reason, summary.state))
    }

    fn lr_find<B: AutodiffBackend>(
        config: &ToyConfig,
        device: &B::Device,
        options: &LrFindOptions,
    ) -> Result<LrFindOutcome, TrainError> {
        Trainer::new(config.loop_config()).lr_find::<B, _>(&ToyTask::new(config), device, options)
    }
}

fn main() -> ExitCode {
    cli::main::<Toy>()
}
