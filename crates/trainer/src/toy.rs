//! The toy task: a 2-layer MLP regressing a fixed random "teacher" network on deterministic
//! data. It exercises the whole loop in seconds on a CPU and is the first registered stage
//! (`trainyard-toy`, `configs/smoke/toy.yaml`).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigProblem, NoSection, RunConfig, Validate};
use crate::task::{Metrics, Mode, Selection, StepOutput, Task, TaskResult};

/// `model:` of the toy stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToyModelConfig {
    /// Width of the hidden layer.
    pub hidden: usize,
}

impl Default for ToyModelConfig {
    fn default() -> Self {
        Self { hidden: 32 }
    }
}

/// `data:` of the toy stage: sizes of the synthetic regression problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToyDataConfig {
    /// Training samples.
    pub train_samples: usize,
    /// Validation samples.
    pub val_samples: usize,
    /// Input features.
    pub input_dim: usize,
    /// Regression targets per sample.
    pub output_dim: usize,
    /// Seed of the dataset itself (the data is fixed like a file; the run seed orders it).
    pub seed: u64,
}

impl Default for ToyDataConfig {
    fn default() -> Self {
        Self { train_samples: 256, val_samples: 64, input_dim: 8, output_dim: 2, seed: 1234 }
    }
}

impl Validate for ToyModelConfig {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        if self.hidden == 0 {
            p.push(ConfigProblem {
                key: "model.hidden".into(),
                message: "expected a positive width".into(),
                origin: None,
            });
        }
    }
}

impl Validate for ToyDataConfig {
    fn validate(&self, p: &mut Vec<ConfigProblem>) {
        for (key, v) in [
            ("data.train_samples", self.train_samples),
            ("data.val_samples", self.val_samples),
            ("data.input_dim", self.input_dim),
            ("data.output_dim", self.output_dim),
        ] {
            if v == 0 {
                p.push(ConfigProblem { key: key.into(), message: "expected a positive number".into(), origin: None });
            }
        }
    }
}

/// Full config of the toy stage.
pub type ToyConfig = RunConfig<ToyModelConfig, ToyDataConfig, NoSection>;

/// Two linear layers with a ReLU between them.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    hidden: Linear<B>,
    output: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `[batch, input_dim] -> [batch, output_dim]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.output.forward(relu(self.hidden.forward(x)))
    }
}

/// Deterministic regression data: inputs uniform in [-1, 1], targets from a fixed random
/// one-hidden-layer tanh network, so an MLP can fit them well.
#[derive(Debug, Clone)]
pub struct ToyData {
    input_dim: usize,
    output_dim: usize,
    train_x: Vec<f32>,
    train_y: Vec<f32>,
    val_x: Vec<f32>,
    val_y: Vec<f32>,
}

impl ToyData {
    /// Generates the data described by `config`.
    pub fn generate(config: &ToyDataConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let (i, o, h) = (config.input_dim, config.output_dim, 16);
        let w1: Vec<f32> = (0..i * h).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w2: Vec<f32> = (0..h * o).map(|_| rng.random_range(-1.0..1.0) / (h as f32).sqrt()).collect();
        let mut sample = |n: usize| {
            let x: Vec<f32> = (0..n * i).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut y = vec![0.0f32; n * o];
            for s in 0..n {
                for k in 0..h {
                    let a: f32 = (0..i).map(|j| x[s * i + j] * w1[j * h + k]).sum::<f32>().tanh();
                    for t in 0..o {
                        y[s * o + t] += a * w2[k * o + t];
                    }
                }
            }
            (x, y)
        };
        let (train_x, train_y) = sample(config.train_samples);
        let (val_x, val_y) = sample(config.val_samples);
        Self { input_dim: i, output_dim: o, train_x, train_y, val_x, val_y }
    }

    fn rows<B: Backend>(&self, src: &[f32], width: usize, indices: &[usize], device: &B::Device) -> Tensor<B, 2> {
        let mut buf = Vec::with_capacity(indices.len() * width);
        for &r in indices {
            buf.extend_from_slice(&src[r * width..(r + 1) * width]);
        }
        Tensor::from_data(TensorData::new(buf, [indices.len(), width]), device)
    }
}

/// The toy task over [`ToyData`].
pub struct ToyTask {
    model: ToyModelConfig,
    data: ToyData,
    dataset_id: String,
}

impl ToyTask {
    /// Builds the task and its data from a toy config.
    pub fn new(config: &ToyConfig) -> Self {
        let spec = serde_json::to_string(&config.data).expect("data config serialises");
        Self {
            model: config.model.clone(),
            data: ToyData::generate(&config.data),
            dataset_id: format!("toy-{:08x}", crc32c::crc32c(spec.as_bytes())),
        }
    }
}

/// A micro-batch of the toy task.
pub struct ToyBatch<B: Backend> {
    x: Tensor<B, 2>,
    y: Tensor<B, 2>,
}

fn mse_and_mae<B: Backend>(pred: Tensor<B, 2>, y: Tensor<B, 2>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let diff = pred - y;
    (diff.clone().powi_scalar(2).mean(), diff.abs().mean())
}

impl<B: AutodiffBackend> Task<B> for ToyTask {
    type Model = Mlp<B>;
    type Batch = ToyBatch<B>;

    fn build_model(&self, device: &B::Device) -> Mlp<B> {
        Mlp {
            hidden: LinearConfig::new(self.data.input_dim, self.model.hidden).init(device),
            output: LinearConfig::new(self.model.hidden, self.data.output_dim).init(device),
        }
    }

    fn train_len(&self) -> usize {
        self.data.train_x.len() / self.data.input_dim
    }

    fn train_batch(&self, indices: &[usize], device: &B::Device) -> TaskResult<ToyBatch<B>> {
        Ok(ToyBatch {
            x: self.data.rows(&self.data.train_x, self.data.input_dim, indices, device),
            y: self.data.rows(&self.data.train_y, self.data.output_dim, indices, device),
        })
    }

    fn train_step(&self, model: &Mlp<B>, batch: &ToyBatch<B>) -> TaskResult<StepOutput<B>> {
        let (mse, mae) = mse_and_mae(model.forward(batch.x.clone()), batch.y.clone());
        let mae: f64 = mae.into_scalar().elem();
        Ok(StepOutput { loss: mse, metrics: Metrics::from([("mae".to_string(), mae)]) })
    }

    fn validate(&self, model: &Mlp<B::InnerBackend>, device: &B::Device) -> TaskResult<Metrics> {
        let n = self.data.val_x.len() / self.data.input_dim;
        let all: Vec<usize> = (0..n).collect();
        let x = self.data.rows::<B::InnerBackend>(&self.data.val_x, self.data.input_dim, &all, device);
        let y = self.data.rows::<B::InnerBackend>(&self.data.val_y, self.data.output_dim, &all, device);
        let (mse, mae) = mse_and_mae(model.forward(x), y);
        Ok(Metrics::from([
            ("val_loss".to_string(), mse.into_scalar().elem()),
            ("val_mae".to_string(), mae.into_scalar().elem()),
        ]))
    }

    fn selection(&self) -> Selection {
        Selection { metric: "val_loss".into(), mode: Mode::Min }
    }

    fn dataset_id(&self) -> String {
        self.dataset_id.clone()
    }
}
