//! A teacher directory: what `hoser-distill teacher` leaves and what scoring and distillation
//! read — `teacher.safetensors` (upstream LM-TAD `state_dict` keys), `model_config.json`
//! (upstream's `LMTADConfig` fields) and `token_map.json` (the road → token map and grid the
//! teacher was trained with).
//!
//! An upstream checkpoint becomes one with `scripts/pth_to_safetensors.py ckpt_best.pt
//! DIR/teacher.safetensors` (which also writes `DIR/model_config.json`) plus a token map of the
//! dataset it was trained on (`hoser-distill teacher-map`).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use super::model::{LmTad, LmTadConfig};
use super::tokens::{TokenError, TokenMap};
use super::weights::{LmTadWeightError, ModelConfigError, UpstreamModelConfig};

/// The weights file of a teacher directory.
pub const WEIGHTS_FILE: &str = "teacher.safetensors";
/// The model config file of a teacher directory.
pub const MODEL_CONFIG_FILE: &str = "model_config.json";
/// The token map file of a teacher directory.
pub const TOKEN_MAP_FILE: &str = "token_map.json";

/// Why a teacher directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// A file of the directory is absent.
    #[error("{}: no {file} in the teacher directory ({hint})", dir.display())]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// The missing file's name.
        file: &'static str,
        /// How such a file is made.
        hint: &'static str,
    },
    /// `model_config.json` could not be read or parsed.
    #[error("{}: {message}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `model_config.json` describes a model that is not supported.
    #[error("{}: {source}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ModelConfigError,
    },
    /// The token map is unreadable or does not fit the model.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// The token map and the model disagree on the vocabulary.
    #[error(
        "{}: the token map has {map} tokens ({cells} grid cells + PAD, EOT, SOT) but {} says vocab_size {model}: \
         they are not from the same teacher",
        map_path.display(),
        config_path.display()
    )]
    Vocab {
        /// The token map file.
        map_path: PathBuf,
        /// The model config file.
        config_path: PathBuf,
        /// The map's vocabulary.
        map: usize,
        /// The map's grid cells.
        cells: usize,
        /// The model's vocabulary.
        model: usize,
    },
    /// `model_config.json`'s PAD is not the map's.
    #[error("{}: pad_token {config} but the token map's PAD is {map}", path.display())]
    Pad {
        /// The model config file.
        path: PathBuf,
        /// The config's PAD.
        config: u32,
        /// The map's PAD.
        map: u32,
    },
    /// The weights do not fit the config.
    #[error(transparent)]
    Weights(#[from] LmTadWeightError),
}

/// A loaded teacher: the model in eval form, its config and its token map.
#[derive(Debug)]
pub struct Teacher<B: Backend> {
    /// The decoder.
    pub model: LmTad<B>,
    /// Its dimensions.
    pub config: LmTadConfig,
    /// Its road → token map.
    pub map: TokenMap,
    /// The directory it came from.
    pub dir: PathBuf,
}

/// Reads and checks `model_config.json` and `token_map.json` of `dir` (no weights).
pub fn read_dir_configs(dir: &Path) -> Result<(LmTadConfig, TokenMap), TeacherError> {
    let config_path = dir.join(MODEL_CONFIG_FILE);
    let map_path = dir.join(TOKEN_MAP_FILE);
    for (path, file, hint) in [
        (&config_path, MODEL_CONFIG_FILE, "written by `hoser-distill teacher`, or by scripts/pth_to_safetensors.py"),
        (&map_path, TOKEN_MAP_FILE, "written by `hoser-distill teacher`, or by `hoser-distill teacher-map`"),
        (
            &dir.join(WEIGHTS_FILE),
            WEIGHTS_FILE,
            "written by `hoser-distill teacher`, or by scripts/pth_to_safetensors.py",
        ),
    ] {
        if !path.is_file() {
            return Err(TeacherError::Missing { dir: dir.to_owned(), file, hint });
        }
    }
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| TeacherError::ConfigFile { path: config_path.clone(), message: e.to_string() })?;
    let upstream: UpstreamModelConfig = serde_json::from_str(&text).map_err(|e| TeacherError::ConfigFile {
        path: config_path.clone(),
        message: format!("not an LM-TAD model_config: {e}"),
    })?;
    let config = upstream.model().map_err(|source| TeacherError::Config { path: config_path.clone(), source })?;
    let map = TokenMap::load(&map_path)?;
    if map.vocab_size() != config.vocab_size {
        return Err(TeacherError::Vocab {
            map_path,
            config_path,
            map: map.vocab_size(),
            cells: map.grid().num_cells(),
            model: config.vocab_size,
        });
    }
    if let Some(pad) = upstream.pad_token
        && pad != map.pad()
    {
        return Err(TeacherError::Pad { path: config_path, config: pad, map: map.pad() });
    }
    Ok((config, map))
}

impl<B: Backend> Teacher<B> {
    /// Loads the teacher in `dir` onto `device`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, TeacherError> {
        let (config, map) = read_dir_configs(dir)?;
        let model = config.init::<B>(device).load_safetensors(&dir.join(WEIGHTS_FILE))?;
        Ok(Self { model, config, map, dir: dir.to_owned() })
    }
}
