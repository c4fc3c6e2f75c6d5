//! Helpers shared by the trainer's test crates (included with `#[path]`): reading a run's
//! event log, starting the toy binary with a clean environment, reading model weights.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::Path;
use std::process::Command;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde_json::Value;

/// Events of `dir/training.jsonl`, optionally only those of one kind. A line cut short by a
/// killed process is skipped.
pub fn events(dir: &Path, kind: Option<&str>) -> Vec<Value> {
    std::fs::read_to_string(dir.join("training.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| kind.is_none_or(|k| e["event"] == k))
        .collect()
}

/// The toy stage binary, run from the workspace root, without the caller's `TRAINYARD_*`
/// variables (they are config keys) and with warnings-only logging.
pub fn toy() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainyard-toy"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    for (k, _) in std::env::vars() {
        if k.starts_with("TRAINYARD_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

/// Every parameter value of a module, in visiting order.
pub fn weights<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<Bk: Backend> ModuleVisitor<Bk> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
            self.0.extend(p.val().into_data().convert::<f32>().to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}
