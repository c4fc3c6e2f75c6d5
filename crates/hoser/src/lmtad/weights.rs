//! Upstream LM-TAD `state_dict` keys (safetensors, f32) and its `model_config`.
//!
//! burn module paths map onto upstream keys under `transformer.`: `wte.weight` →
//! `transformer.wte.weight`, `h.3.attn.c_attn.weight` → `transformer.h.3.attn.c_attn.weight`
//! (every linear weight transposed: PyTorch stores `[out, in]`, burn `[in, out]`), `ln_f.weight` →
//! `transformer.ln_f.weight`. The tied head is `lm_head.weight`, the same tensor as
//! `transformer.wte.weight`: it is written as a copy (PyTorch's strict `load_state_dict` wants
//! both keys) and on import must equal the embedding (an untied checkpoint is refused, not
//! half-loaded). Upstream buffers — `transformer.h.N.attn.bias` (the causal mask of PyTorch
//! without flash attention) and `transformer.wpe.pe` (the sinusoidal table) — are ignored; any other
//! key is an error, so weights of a deeper or different model are never loaded in part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use checkpoints::weights::{FileKey, WeightFile, load_module, module_tensors, save_tensors};
use serde::{Deserialize, Serialize};

use super::model::{LmTad, LmTadConfig, Positions};

pub use checkpoints::weights::WeightError;

/// Key of the tied head.
pub const HEAD_KEY: &str = "lm_head.weight";
/// Key of the token embedding.
pub const EMBEDDING_KEY: &str = "transformer.wte.weight";

/// The upstream key of the parameter at burn module path `parts` with rank `rank`.
fn upstream_key(parts: &[String], rank: usize) -> Option<FileKey> {
    let embedding = matches!(parts.first().map(String::as_str), Some("wte" | "wpe"));
    let key = format!("transformer.{}", parts.join("."));
    Some(if rank == 2 && !embedding { FileKey::transposed(key) } else { FileKey::same(key) })
}

/// Whether `key` is one of upstream LM-TAD's registered buffers (in its `state_dict`, not a
/// parameter here).
pub fn is_upstream_buffer(key: &str) -> bool {
    key == "transformer.wpe.pe"
        || key
            .strip_prefix("transformer.h.")
            .and_then(|rest| rest.strip_suffix(".attn.bias"))
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a teacher's weights could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LmTadWeightError {
    /// The file itself, or a key in it (missing, extra, mis-shaped, wrong dtype).
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// `lm_head.weight` differs from `transformer.wte.weight`: the model was not weight-tied.
    #[error(
        "{}: {HEAD_KEY} differs from {EMBEDDING_KEY} (first at value {index}: {head} vs {embedding}); LM-TAD ties \
         them, and this checkpoint is not tied",
        path.display()
    )]
    Untied {
        /// The file.
        path: PathBuf,
        /// First differing value (row-major).
        index: usize,
        /// Head's value.
        head: f32,
        /// Embedding's value.
        embedding: f32,
    },
}

impl<B: Backend> LmTad<B> {
    /// The parameters under their upstream keys, `lm_head.weight` included: `(key, PyTorch shape,
    /// row-major f32 values)`.
    pub fn state_dict(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut tensors = module_tensors(self, upstream_key);
        if let Some((_, shape, values)) = tensors.iter().find(|(k, _, _)| k == EMBEDDING_KEY) {
            let head = (HEAD_KEY.to_string(), shape.clone(), values.clone());
            tensors.push(head);
        }
        tensors
    }

    /// Writes [`LmTad::state_dict`] to a safetensors file, atomically; upstream's
    /// `model.load_state_dict(safetensors.torch.load_file(path))` reads it.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), LmTadWeightError> {
        Ok(save_tensors(path, self.state_dict())?)
    }

    /// Loads every parameter from an upstream state dict saved as safetensors (e.g. by
    /// `scripts/pth_to_safetensors.py` from LM-TAD's `ckpt_best.pt`). A missing key, a wrong
    /// shape or dtype, any key that is neither a parameter nor an upstream buffer, or a head
    /// that is not the embedding is an error naming the key(s) and the file.
    pub fn load_safetensors(self, path: &Path) -> Result<Self, LmTadWeightError> {
        let mut file = WeightFile::open(path)?;
        let model = load_module(self, &mut file, upstream_key)?;
        if file.keys().iter().any(|k| k == HEAD_KEY) {
            let [v, c] = model.wte.weight.dims();
            let head = file.read(HEAD_KEY, &[v, c])?;
            let embedding: Vec<f32> = model.wte.weight.val().into_data().convert::<f32>().to_vec().unwrap_or_default();
            if let Some(index) = head.iter().zip(&embedding).position(|(a, b)| a.to_bits() != b.to_bits()) {
                return Err(LmTadWeightError::Untied {
                    path: path.to_owned(),
                    index,
                    head: head[index],
                    embedding: embedding[index],
                });
            }
        }
        file.finish(is_upstream_buffer)?;
        Ok(model)
    }
}

/// Upstream's `LMTADConfig` as `scripts/pth_to_safetensors.py` writes it (`model_config.json`),
/// and as a trained teacher's directory holds it. Fields upstream has and the model does not need
/// (`log_file`, `logging`, ...) are kept in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamModelConfig {
    /// Longest input.
    pub block_size: usize,
    /// Tokens.
    pub vocab_size: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Heads.
    pub n_head: usize,
    /// Width.
    pub n_embd: usize,
    /// Dropout of training.
    #[serde(default)]
    pub dropout: f64,
    /// Biases in linears and LayerNorms (LM-TAD: false; true is not supported).
    #[serde(default)]
    pub bias: bool,
    /// The PAD token id.
    #[serde(default)]
    pub pad_token: Option<u32>,
    /// Upstream's inverted name for sinusoidal positions.
    #[serde(default)]
    pub integer_poe: bool,
    /// Other upstream fields, kept as read.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Why a `model_config` does not describe a model this crate can run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelConfigError {
    /// Biases are not modelled.
    #[error("bias: true (GPT-2-style biases) is not supported; LM-TAD trains with bias: false")]
    Bias,
    /// Upstream's sinusoidal positions are applied by batch row, not by position.
    #[error(
        "integer_poe: true is not imported: upstream adds its sinusoidal table by batch row (its PositionalEncoding \
         expects [T, B, C] and is given [B, T, C]), so such weights were trained without real positions; retrain with \
         positions: sinusoidal here"
    )]
    IntegerPoe,
    /// A dimension that cannot work.
    #[error("{key}: {message}")]
    Invalid {
        /// The field.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl UpstreamModelConfig {
    /// Upstream's config of `model` trained with `dropout`, PAD = `pad`.
    pub fn of(config: &LmTadConfig, pad: u32) -> Self {
        let mut other = BTreeMap::new();
        if config.positions == Positions::Sinusoidal {
            // Not upstream's buggy `integer_poe`: say what the weights expect.
            other.insert("positions".to_string(), serde_json::Value::from("sinusoidal"));
        }
        Self {
            block_size: config.block_size,
            vocab_size: config.vocab_size,
            n_layer: config.n_layer,
            n_head: config.n_head,
            n_embd: config.n_embd,
            dropout: config.dropout,
            bias: false,
            pad_token: Some(pad),
            integer_poe: false,
            other,
        }
    }

    /// The model this describes.
    pub fn model(&self) -> Result<LmTadConfig, ModelConfigError> {
        if self.bias {
            return Err(ModelConfigError::Bias);
        }
        if self.integer_poe {
            return Err(ModelConfigError::IntegerPoe);
        }
        let positions = match self.other.get("positions").and_then(|v| v.as_str()) {
            Some("sinusoidal") => Positions::Sinusoidal,
            _ => Positions::Learned,
        };
        let config = LmTadConfig {
            vocab_size: self.vocab_size,
            block_size: self.block_size,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            dropout: self.dropout,
            positions,
        };
        match config.problems().into_iter().next() {
            Some((key, message)) => Err(ModelConfigError::Invalid { key, message }),
            None => Ok(config),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;

    fn config() -> LmTadConfig {
        LmTadConfig {
            vocab_size: 11,
            block_size: 6,
            n_layer: 2,
            n_head: 2,
            n_embd: 4,
            dropout: 0.0,
            positions: Positions::Learned,
        }
    }

    fn model() -> LmTad<Flex> {
        config().init(&Default::default())
    }

    fn keys(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<String> {
        tensors.iter().map(|(k, _, _)| k.clone()).collect()
    }

    #[test]
    fn state_dict_has_upstream_keys_and_layouts() {
        let sd = model().state_dict();
        let mut k = keys(&sd);
        k.sort();
        let mut expected = vec![
            "lm_head.weight".to_string(),
            "transformer.ln_f.weight".into(),
            "transformer.wpe.weight".into(),
            "transformer.wte.weight".into(),
        ];
        for i in 0..2 {
            for name in [
                "ln_1.weight",
                "attn.c_attn.weight",
                "attn.c_proj.weight",
                "ln_2.weight",
                "mlp.c_fc.weight",
                "mlp.c_proj.weight",
            ] {
                expected.push(format!("transformer.h.{i}.{name}"));
            }
        }
        expected.sort();
        assert_eq!(k, expected);
        let shape = |key: &str| sd.iter().find(|(k, _, _)| k == key).unwrap().1.clone();
        assert_eq!(shape("transformer.h.0.attn.c_attn.weight"), vec![12, 4]); // [3C, C] as PyTorch
        assert_eq!(shape("transformer.h.1.mlp.c_fc.weight"), vec![16, 4]);
        assert_eq!(shape("transformer.wte.weight"), vec![11, 4]);
        assert_eq!(shape("lm_head.weight"), vec![11, 4]);
    }

    #[test]
    fn round_trip_and_buffers_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let source = model();
        let mut sd = source.state_dict();
        sd.push(("transformer.h.1.attn.bias".into(), vec![1, 1, 6, 6], vec![1.0; 36]));
        save_tensors(&path, sd).unwrap();
        let loaded = model().load_safetensors(&path).unwrap();
        assert_eq!(loaded.state_dict(), source.state_dict());
    }

    #[test]
    fn missing_extra_misshaped_and_untied_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let sd = model().state_dict();

        let without: Vec<_> = sd.iter().filter(|(k, _, _)| k != "transformer.h.1.mlp.c_proj.weight").cloned().collect();
        save_tensors(&path, without).unwrap();
        let e = model().load_safetensors(&path).unwrap_err().to_string();
        assert!(e.contains("missing key transformer.h.1.mlp.c_proj.weight") && e.contains("bad.safetensors"), "{e}");

        let mut extra = sd.clone();
        extra.push(("transformer.h.2.ln_1.weight".into(), vec![4], vec![1.0; 4]));
        save_tensors(&path, extra).unwrap();
        let e = model().load_safetensors(&path).unwrap_err().to_string();
        assert!(e.contains("unexpected key") && e.contains("transformer.h.2.ln_1.weight"), "{e}");

        let mut wide = sd.clone();
        for t in wide.iter_mut().filter(|(k, _, _)| k == "transformer.ln_f.weight") {
            *t = (t.0.clone(), vec![5], vec![1.0; 5]);
        }
        save_tensors(&path, wide).unwrap();
        let e = model().load_safetensors(&path).unwrap_err().to_string();
        assert!(e.contains("transformer.ln_f.weight") && e.contains("[5]") && e.contains("[4]"), "{e}");

        let mut untied = sd;
        for t in untied.iter_mut().filter(|(k, _, _)| k == HEAD_KEY) {
            t.2[7] += 1.0;
        }
        save_tensors(&path, untied).unwrap();
        let e = model().load_safetensors(&path).unwrap_err();
        assert!(matches!(e, LmTadWeightError::Untied { index: 7, .. }), "{e}");
    }

    #[test]
    fn upstream_config_round_trips_and_refuses_what_is_not_modelled() {
        let c = config();
        let u = UpstreamModelConfig::of(&c, 8);
        let json = serde_json::to_string(&u).unwrap();
        let back: UpstreamModelConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.model().unwrap(), c);
        let upstream = r#"{"block_size": 16, "vocab_size": 29, "n_layer": 2, "n_head": 2, "n_embd": 16,
            "dropout": 0.0, "bias": false, "pad_token": 26, "log_file": "", "logging": false, "integer_poe": false}"#;
        let u: UpstreamModelConfig = serde_json::from_str(upstream).unwrap();
        assert_eq!(u.model().unwrap().n_embd, 16);
        assert_eq!(u.other.get("log_file"), Some(&serde_json::Value::from("")));
        let poe = UpstreamModelConfig { integer_poe: true, ..u.clone() };
        assert_eq!(poe.model().unwrap_err(), ModelConfigError::IntegerPoe);
        let bias = UpstreamModelConfig { bias: true, ..u.clone() };
        assert_eq!(bias.model().unwrap_err(), ModelConfigError::Bias);
        let odd = UpstreamModelConfig { n_head: 3, ..u };
        assert!(matches!(odd.model().unwrap_err(), ModelConfigError::Invalid { key: "n_embd", .. }));
    }
}
