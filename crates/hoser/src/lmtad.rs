//! LM-TAD, the teacher of HOSER's distillation: a nanoGPT-style decoder over road grid cells
//! (upstream `jonathankabala/LMTAD`, `code/models/LMTAD.py`).
//!
//! - [`tokens`]: one token per road, the 0.001° grid cell of its centroid, plus PAD, EOT, SOT;
//!   the road→token map saved with a teacher.
//! - [`model`]: the decoder (tied embedding / head, bias-free LayerNorm and linears, causal
//!   self-attention), its loss, scores and batched next-token inference.
//! - [`weights`]: import and export of upstream `state_dict` keys (safetensors).
//! - [`teacher`]: a teacher directory (weights, model config, token map) loaded as one.

pub mod model;
pub mod teacher;
pub mod tokens;
pub mod weights;
