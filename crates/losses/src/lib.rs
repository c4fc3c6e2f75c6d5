//! Losses and metrics for images and sequences, generic over the burn backend (the same
//! code runs on CPU, wgpu and CUDA).
//!
//! - [`pixel`]: L1, MSE and their valid-mask variants.
//! - [`structure`]: SSIM and MS-SSIM.
//! - [`sar`]: Sobel edges, SAR-structure loss, SAR agreement metrics, texture, colour ratio,
//!   spectral indices, cycle / identity losses.
//! - [`grounding`]: stage-3 SAR-grounding terms (SAR-consistency edge / texture, identity,
//!   cycle, masked spectral L1) and metrics (SARedge, GAC score, PSNR, grounding confidence).
//! - [`lpips`]: LPIPS with AlexNet / VGG16 trunks loaded from safetensors.
//! - [`sequence`]: masked cross-entropy over candidate sets, HOSER time loss, distillation KL,
//!   next-step accuracy and time error.
//! - [`combined`]: a weighted sum from config that reports every named component.

pub mod combined;
pub mod grounding;
pub mod lpips;
pub mod pixel;
pub mod sar;
pub mod sequence;
pub mod structure;
