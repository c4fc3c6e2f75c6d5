//! Import and export of upstream PyTorch `state_dict` tensors (safetensors, f32), through
//! [`checkpoints::weights`].
//!
//! burn module paths map onto upstream keys: `gamma`/`beta` of a LayerNorm become `weight`/`bias`,
//! the `l0`/`l2` fields of a two-layer MLP become the `nn.Sequential` indices `0`/`2`, and every
//! 2-D `weight` except an embedding table is transposed (PyTorch `Linear` stores `[out, in]`, burn
//! `[in, out]`). Upstream buffers (`road2zone`, `attn.bias`, the feature and graph buffers) are not
//! parameters here: they are ignored on import and not exported. Any other key in the file is an
//! error, so weights of a deeper or different model are never loaded in part.

use std::path::Path;

use burn::tensor::backend::Backend;
use checkpoints::weights::{FileKey, WeightFile, load_module, module_tensors, save_tensors};

use super::Hoser;

/// Failure to read or write a weights file: the shared [`checkpoints::weights::WeightError`].
pub use checkpoints::weights::WeightError;

/// Embedding tables: 2-D weights stored the same way in PyTorch and burn.
const EMBEDDINGS: [&str; 3] = ["road_id_emb", "type_emb", "zone_id_emb"];

/// Upstream `road_network_encoder` buffers (road features and graphs), not parameters here.
const ENCODER_BUFFERS: [&str; 8] = [
    "intersection_attr",
    "road_attr_lat",
    "road_attr_len",
    "road_attr_lon",
    "road_attr_type",
    "road_edge_index",
    "zone_edge_index",
    "zone_edge_weight",
];

/// The upstream key of the parameter at burn module path `parts` with rank `rank`.
fn upstream_key(parts: &[String], rank: usize) -> Option<FileKey> {
    let mut parts: Vec<&str> = parts
        .iter()
        .map(|p| match p.as_str() {
            "gamma" => "weight",
            "beta" => "bias",
            "l0" => "0",
            "l2" => "2",
            other => other,
        })
        .collect();
    let n = parts.len();
    let transpose = rank == 2 && parts.last() == Some(&"weight") && !(n >= 2 && EMBEDDINGS.contains(&parts[n - 2]));
    parts.retain(|p| !p.is_empty());
    let key = parts.join(".");
    Some(if transpose { FileKey::transposed(key) } else { FileKey::same(key) })
}

/// Whether `key` is one of upstream HOSER's registered buffers (in its `state_dict`, not a
/// parameter of this model).
pub fn is_upstream_buffer(key: &str) -> bool {
    if key == "road2zone" {
        return true;
    }
    if let Some(name) = key.strip_prefix("road_network_encoder.") {
        return ENCODER_BUFFERS.contains(&name);
    }
    // The causal mask of each block: `trajectory_encoder.transformer.h.{i}.attn.bias`.
    key.strip_prefix("trajectory_encoder.transformer.h.")
        .and_then(|rest| rest.strip_suffix(".attn.bias"))
        .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

impl<B: Backend> Hoser<B> {
    /// The parameters under their upstream keys: `(key, PyTorch shape, row-major f32 values)`.
    pub fn state_dict(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        module_tensors(self, upstream_key)
    }

    /// Writes [`Hoser::state_dict`] to a safetensors file (f32, upstream keys and layouts).
    pub fn save_safetensors(&self, path: &Path) -> Result<(), WeightError> {
        save_tensors(path, self.state_dict())
    }

    /// Loads every parameter from an upstream state dict saved as safetensors (f32; f16 and bf16
    /// are widened). Upstream buffers ([`is_upstream_buffer`]) are ignored; a missing key, a
    /// wrong shape or dtype, or any other key is an error naming the key(s) and the file.
    pub fn load_safetensors(self, path: &Path) -> Result<Self, WeightError> {
        let mut file = WeightFile::open(path)?;
        let model = load_module(self, &mut file, upstream_key)?;
        file.finish(is_upstream_buffer)?;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HoserConfig;
    use burn::backend::Flex;

    fn model() -> Hoser<Flex> {
        HoserConfig::upstream(6, 2, 2).init(&Default::default())
    }

    #[test]
    fn upstream_buffers_are_recognised_by_name() {
        for key in
            ["road2zone", "road_network_encoder.road_edge_index", "trajectory_encoder.transformer.h.12.attn.bias"]
        {
            assert!(is_upstream_buffer(key), "{key}");
        }
        for key in [
            "road_network_encoder.road_id_emb.weight",
            "trajectory_encoder.transformer.h..attn.bias",
            "trajectory_encoder.transformer.h.x.attn.bias",
            "trajectory_encoder.transformer.h.0.attn.c_attn.bias",
        ] {
            assert!(!is_upstream_buffer(key), "{key}");
        }
    }

    /// Weights of a deeper model (a third block) are refused by name instead of loading two
    /// of its three blocks; upstream buffers beside the parameters are fine.
    #[test]
    fn keys_that_are_neither_parameters_nor_buffers_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deeper.safetensors");
        let source = model();
        let mut tensors = source.state_dict();
        tensors.push(("road2zone".into(), vec![6], vec![0.0; 6]));
        tensors.push(("trajectory_encoder.transformer.h.0.attn.bias".into(), vec![1, 1, 2, 2], vec![1.0; 4]));
        save_tensors(&path, tensors.clone()).unwrap();
        let loaded = model().load_safetensors(&path).unwrap();
        assert_eq!(loaded.state_dict(), source.state_dict());

        tensors.push(("trajectory_encoder.transformer.h.2.ln_1.weight".into(), vec![4], vec![1.0; 4]));
        save_tensors(&path, tensors).unwrap();
        let err = model().load_safetensors(&path).unwrap_err();
        assert!(
            matches!(&err, WeightError::Unexpected { keys, .. } if keys == &["trajectory_encoder.transformer.h.2.ln_1.weight"]),
            "{err}"
        );
        assert!(err.to_string().contains("deeper.safetensors"), "{err}");
    }
}
