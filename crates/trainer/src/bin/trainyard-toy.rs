//! `trainyard-toy`: the toy stage (a 2-layer MLP on deterministic regression data).
//! It runs the shared loop end to end in seconds and backs the smoke test and CLI tests.

use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use figment::value::Value;
use trainer::TrainError;
use trainer::cli::{self, Stage};
use trainer::config::NoSection;
use trainer::toy::{ToyConfig, ToyDataConfig, ToyModelConfig, ToyTask};

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

    type Task<B: AutodiffBackend> = ToyTask;

    fn task<B: AutodiffBackend>(config: &ToyConfig, _device: &B::Device) -> Result<ToyTask, TrainError> {
        Ok(ToyTask::new(config))
    }
}

fn main() -> ExitCode {
    cli::main::<Toy>()
}
