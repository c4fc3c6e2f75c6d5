//! Checkpoints that survive crashes: atomic writes, self-describing verified files,
//! composable retention, and the search for the newest valid checkpoint to resume from.
//!
//! A checkpoint is one safetensors file (weights under their module paths, opaque state as
//! `U8` blobs, a JSON description and a CRC-32C in the header), written to a temporary file,
//! fsynced, renamed into place, with the directory fsynced. See `format` for the layout and
//! `store` for the directory and its retention policies.

pub mod atomic;
pub mod format;
pub mod module;
pub mod retention;
pub mod store;
pub mod weights;

pub use format::{CheckpointError, CheckpointFile, Kind, Meta, Metric, RunIdentity, SCHEMA_VERSION};
pub use retention::{Mode, RetentionConfig, TopK};
pub use store::{CheckpointStore, SaveReport, Trigger};
