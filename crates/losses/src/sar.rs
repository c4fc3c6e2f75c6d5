//! SAR/optical structure losses and metrics, texture, colour-ratio and spectral-index losses,
//! and SAR-confidence-weighted cycle / identity losses.
//!
//! Every function is generic over the burn backend and built from tensor operations only,
//! so the same code runs on CPU, wgpu and CUDA. Created tensors (the Sobel kernels) take the
//! input's dtype, so `f64` inputs stay `f64` end to end. Run them in `f32` or wider: the
//! small `ε` constants (e.g. [`SOBEL_EPS`] = 1e-8) underflow in `f16`.
//!
//! # Channel conventions
//!
//! - **Optical** tensors are `[B, 4, H, W]` with the Sentinel-2 bands in the order
//!   **B2, B3, B4, B8** = (blue, green, red, near infrared): channel [`BLUE`] = 0,
//!   [`GREEN`] = 1, [`RED`] = 2, [`NIR`] = 3. Red is channel 2, *not* channel 0.
//! - **SAR** tensors are `[B, 2, H, W]` with the Sentinel-1 polarisations **VV, VH**:
//!   channel [`VV`] = 0, [`VH`] = 1. They may be in dB (negative values are fine): every SAR
//!   term here is invariant to an offset of the SAR values (Sobel, max-normalised edges) or
//!   standardises the SAR per sample and channel first (confidence weights).
//!
//! # Differences from the reference implementation (Axion-Sat), on purpose
//!
//! - Luminance uses `0.299·R + 0.587·G + 0.114·B` on the right channels (red = B4 = channel 2,
//!   green = B3 = channel 1, blue = B2 = channel 0); the reference weighted channels 0, 1, 2
//!   as if they were R, G, B.
//! - The SAR-structure loss compares soft, max-normalised Sobel magnitudes with an L1
//!   distance; the reference binarised them with hard thresholds (0.1 / 0.3), which has zero
//!   gradient almost everywhere.
//! - Edge maps are normalised by **each sample's own** maximum, never by the batch-global
//!   maximum, so a sample's loss and metric do not depend on the other samples in the batch;
//!   Sobel uses replicate padding by default, so the image border does not create edges.
//! - NDVI, EVI and SAM read the B2/B3/B4/B8 order (the reference's spectral term assumed
//!   R, G, B, NIR).
//! - SAR confidence is computed on per-sample, per-channel standardised SAR, so it works for
//!   dB inputs (the reference's `sigmoid(backscatter)` gives weights around 3e-7 for −15 dB).

mod cycle;
mod edges;
mod spectral;
mod texture;
mod util;

pub use cycle::{
    CONFIDENCE_WINDOW, STANDARDIZE_EPS, WEIGHT_EPS, cycle_loss, identity_loss, sar_confidence, standardize_per_sample,
    weighted_l1,
};
pub use edges::{
    AGREEMENT_EPS, LUMA_BLUE, LUMA_GREEN, LUMA_RED, NORMALIZE_EPS, Padding, SOBEL_EPS, luminance,
    normalize_per_sample_max, optical_edge_map, sar_agreement, sar_agreement_per_sample, sar_edge_agreement,
    sar_edge_agreement_per_sample, sar_edge_map, sar_mean, sar_structure_loss, sobel, sobel_magnitude,
};
pub use spectral::{
    EVI_EPS, EVI_MIN_DENOMINATOR, NDVI_EPS, RATIO_EPS, RMSE_EPS, SAM_CLAMP, SAM_NORM_EPS, colour_ratio_loss, evi,
    evi_rmse, ndvi, ndvi_rmse, sam, spectral_index_loss,
};
pub use texture::{TEXTURE_WINDOW, local_variance, texture_loss};

/// Optical channel index of Sentinel-2 band B2 (blue).
pub const BLUE: usize = 0;
/// Optical channel index of Sentinel-2 band B3 (green).
pub const GREEN: usize = 1;
/// Optical channel index of Sentinel-2 band B4 (red).
pub const RED: usize = 2;
/// Optical channel index of Sentinel-2 band B8 (near infrared).
pub const NIR: usize = 3;
/// Number of optical channels (B2, B3, B4, B8).
pub const OPTICAL_CHANNELS: usize = 4;

/// SAR channel index of the Sentinel-1 VV polarisation.
pub const VV: usize = 0;
/// SAR channel index of the Sentinel-1 VH polarisation.
pub const VH: usize = 1;
/// Number of SAR channels (VV, VH).
pub const SAR_CHANNELS: usize = 2;
