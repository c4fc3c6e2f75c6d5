//! LPIPS, the learned perceptual image distance of Zhang et al. (2018), as computed by the
//! `lpips` Python package (LPIPS v0.1), with an AlexNet or VGG16 trunk.
//!
//! # Definition
//!
//! For images `x`, `y` of shape `[batch, 3, H, W]` in **[−1, 1], RGB order**:
//!
//! 1. Scaling layer: `(x − shift) / scale` with shift [`LPIPS_SHIFT`] = (−0.030, −0.088, −0.188)
//!    and scale [`LPIPS_SCALE`] = (0.458, 0.448, 0.450) per RGB channel.
//! 2. Trunk features at five ReLU taps (torchvision layer structure):
//!    - AlexNet `features`: relu1 … relu5, i.e. conv1 (11×11, stride 4, pad 2) → ReLU |
//!      maxpool 3/2 → conv2 (5×5, pad 2) → ReLU | maxpool 3/2 → conv3 (3×3, pad 1) → ReLU |
//!      conv4 (3×3, pad 1) → ReLU | conv5 (3×3, pad 1) → ReLU; 64, 192, 384, 256, 256 channels.
//!    - VGG16 `features`: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (3×3 convs, pad 1; a 2×2
//!      max-pool before each block after the first); 64, 128, 256, 512, 512 channels.
//! 3. Per tap, unit-normalise along channels: `f / (sqrt(Σ_c f²) + 1e-10)` ([`LPIPS_EPS`]).
//! 4. Squared difference of the normalised features, a 1×1 linear head without bias
//!    (non-negative weights, as trained), spatial mean.
//! 5. Sum over the five taps. The result is one distance per sample; `LPIPS(x, x) = 0`.
//!
//! Inputs in [0, 1] (e.g. reflectance `clip(DN / 10000, 0, 1)`) must be mapped to [−1, 1]
//! first: set [`LpipsInputRange::ZeroToOne`] (what `lpips`' `normalize=True` does) or call
//! [`unit_to_signed_range`]. Feeding [0, 1] data as if it were [−1, 1] is a silent error that
//! shifts every feature; the reference pipeline did exactly that.
//!
//! **Sentinel-2 optical tensors** with bands (B2, B3, B4, B8) = (blue, green, red, NIR) must be
//! passed as RGB = (B4, B3, B2): use [`rgb_from_s2`]. Taking the first three channels feeds
//! B, G, R as if it were R, G, B (another bug of the reference pipeline).
//!
//! Minimum input size (height and width): 31 px for AlexNet, 16 px for VGG16
//! ([`LpipsNet::min_input_size`]); smaller inputs panic with a message saying so.
//!
//! Gradients flow to both inputs; the trunk and head weights are frozen (they never require
//! gradients). One deliberate numerical deviation keeps gradients finite: the squared channel
//! norm is clamped to at least 1e-20 before the square root, so a position where every channel
//! of a tap is zero gives a zero gradient instead of `0 · ∞ = NaN`. The value is unchanged
//! whenever the norm is at least 1e-10, i.e. in every case that matters.
//!
//! # Weights
//!
//! No weights ship with this crate: the ImageNet trunks cannot be redistributed here. A user
//! who can download them runs `scripts/export_lpips.py --net alex|vgg --out FILE`, which builds
//! `lpips.LPIPS(net=..., pretrained=True)` and writes the trunk and head tensors of its state
//! dict, float32, under the PyTorch names below. Load the file with [`LpipsWeights::load`] or
//! [`LpipsConfig::load`]. Other keys in the file (e.g. `scaling_layer.shift`, `lins.0.…`) are
//! ignored. PyTorch's conv layout `[out, in, kh, kw]` is burn's `Conv2d` layout, so tensors are
//! used as stored. The file is read by the project's one weights reader,
//! [`checkpoints::weights::WeightFile`].
//!
//! AlexNet (`net: alex`, 2,469,696 trunk + 1,152 head parameters):
//!
//! | key | shape |
//! |---|---|
//! | `net.slice1.0.weight` / `.bias` | `[64, 3, 11, 11]` / `[64]` |
//! | `net.slice2.3.weight` / `.bias` | `[192, 64, 5, 5]` / `[192]` |
//! | `net.slice3.6.weight` / `.bias` | `[384, 192, 3, 3]` / `[384]` |
//! | `net.slice4.8.weight` / `.bias` | `[256, 384, 3, 3]` / `[256]` |
//! | `net.slice5.10.weight` / `.bias` | `[256, 256, 3, 3]` / `[256]` |
//! | `lin0.model.1.weight` … `lin4.model.1.weight` | `[1, C, 1, 1]`, C = 64, 192, 384, 256, 256 |
//!
//! VGG16 (`net: vgg`, 14,714,688 trunk + 1,472 head parameters), every conv 3×3:
//!
//! | key | shape |
//! |---|---|
//! | `net.slice1.0.weight` / `.bias` | `[64, 3, 3, 3]` / `[64]` |
//! | `net.slice1.2.weight` / `.bias` | `[64, 64, 3, 3]` / `[64]` |
//! | `net.slice2.5.weight` / `.bias` | `[128, 64, 3, 3]` / `[128]` |
//! | `net.slice2.7.weight` / `.bias` | `[128, 128, 3, 3]` / `[128]` |
//! | `net.slice3.10.weight` / `.bias` | `[256, 128, 3, 3]` / `[256]` |
//! | `net.slice3.12.weight`, `net.slice3.14.weight` / `.bias` | `[256, 256, 3, 3]` / `[256]` |
//! | `net.slice4.17.weight` / `.bias` | `[512, 256, 3, 3]` / `[512]` |
//! | `net.slice4.19.weight`, `net.slice4.21.weight` / `.bias` | `[512, 512, 3, 3]` / `[512]` |
//! | `net.slice5.24.weight`, `.26.weight`, `.28.weight` / `.bias` | `[512, 512, 3, 3]` / `[512]` |
//! | `lin0.model.1.weight` … `lin4.model.1.weight` | `[1, C, 1, 1]`, C = 64, 128, 256, 512, 512 |
//!
//! Every tensor must be F32 (F16 and BF16 are widened to f32) and finite, and head weights must
//! be non-negative; anything else is an [`LpipsError`] naming the file and the key.
//! [`LpipsWeights::expected_tensors`] lists the keys and shapes programmatically.

use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Tensor, TensorData};
use checkpoints::weights::{WeightError, WeightFile};
use serde::{Deserialize, Serialize};

/// Per-channel shift of the LPIPS scaling layer (RGB), applied as `(x − shift) / scale`.
pub const LPIPS_SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
/// Per-channel scale of the LPIPS scaling layer (RGB).
pub const LPIPS_SCALE: [f32; 3] = [0.458, 0.448, 0.450];
/// Epsilon added to the channel norm when unit-normalising features.
pub const LPIPS_EPS: f32 = 1e-10;

/// Lower bound of the squared channel norm, so the square root never sees 0 (finite gradients).
const MIN_SQUARED_NORM: f32 = 1e-20;

/// Which ImageNet trunk LPIPS runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LpipsNet {
    /// AlexNet `features` (the `lpips` default, `net='alex'`).
    #[default]
    Alex,
    /// VGG16 `features` (`net='vgg'`).
    #[serde(alias = "vgg16")]
    Vgg,
}

impl LpipsNet {
    /// Smallest height and width the trunk accepts (every max-pool needs a non-empty window).
    pub fn min_input_size(self) -> usize {
        match self {
            LpipsNet::Alex => 31,
            LpipsNet::Vgg => 16,
        }
    }

    /// Channels of the five feature taps, i.e. the input channels of the five linear heads.
    pub fn tap_channels(self) -> [usize; 5] {
        match self {
            LpipsNet::Alex => [64, 192, 384, 256, 256],
            LpipsNet::Vgg => [64, 128, 256, 512, 512],
        }
    }

    fn convs(self) -> &'static [ConvSpec] {
        match self {
            LpipsNet::Alex => &ALEX,
            LpipsNet::Vgg => &VGG16,
        }
    }
}

impl fmt::Display for LpipsNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LpipsNet::Alex => "alex",
            LpipsNet::Vgg => "vgg",
        })
    }
}

/// Value range of the images handed to [`Lpips::forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LpipsInputRange {
    /// Images are already in [−1, 1] (what LPIPS expects).
    #[default]
    MinusOneToOne,
    /// Images are in [0, 1] and are mapped to [−1, 1] with `2x − 1` first.
    ZeroToOne,
}

/// One trunk convolution, in the torchvision `features` numbering that the key names use.
#[derive(Debug, Clone, Copy)]
struct ConvSpec {
    /// lpips slice (1..=5); a feature tap follows the last conv of each slice.
    slice: usize,
    /// Index in torchvision's `features` Sequential.
    index: usize,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    /// Max-pool (kernel, stride) applied before this conv.
    pool_before: Option<(usize, usize)>,
}

const fn conv(
    slice: usize,
    index: usize,
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    pool_before: Option<(usize, usize)>,
) -> ConvSpec {
    ConvSpec { slice, index, in_channels: channels[0], out_channels: channels[1], kernel, stride, padding, pool_before }
}

const ALEX: [ConvSpec; 5] = [
    conv(1, 0, [3, 64], 11, 4, 2, None),
    conv(2, 3, [64, 192], 5, 1, 2, Some((3, 2))),
    conv(3, 6, [192, 384], 3, 1, 1, Some((3, 2))),
    conv(4, 8, [384, 256], 3, 1, 1, None),
    conv(5, 10, [256, 256], 3, 1, 1, None),
];

const P2: Option<(usize, usize)> = Some((2, 2));
const VGG16: [ConvSpec; 13] = [
    conv(1, 0, [3, 64], 3, 1, 1, None),
    conv(1, 2, [64, 64], 3, 1, 1, None),
    conv(2, 5, [64, 128], 3, 1, 1, P2),
    conv(2, 7, [128, 128], 3, 1, 1, None),
    conv(3, 10, [128, 256], 3, 1, 1, P2),
    conv(3, 12, [256, 256], 3, 1, 1, None),
    conv(3, 14, [256, 256], 3, 1, 1, None),
    conv(4, 17, [256, 512], 3, 1, 1, P2),
    conv(4, 19, [512, 512], 3, 1, 1, None),
    conv(4, 21, [512, 512], 3, 1, 1, None),
    conv(5, 24, [512, 512], 3, 1, 1, P2),
    conv(5, 26, [512, 512], 3, 1, 1, None),
    conv(5, 28, [512, 512], 3, 1, 1, None),
];

impl ConvSpec {
    fn weight_key(&self) -> String {
        format!("net.slice{}.{}.weight", self.slice, self.index)
    }

    fn bias_key(&self) -> String {
        format!("net.slice{}.{}.bias", self.slice, self.index)
    }

    fn weight_shape(&self) -> Vec<usize> {
        vec![self.out_channels, self.in_channels, self.kernel, self.kernel]
    }
}

fn head_key(tap: usize) -> String {
    format!("lin{tap}.model.1.weight")
}

/// LPIPS section of a loss config: which trunk, where its weights are, and the input range.
///
/// ```yaml
/// net: alex              # alex | vgg
/// weights: lpips_alex.safetensors
/// input_range: zero_to_one   # or minus_one_to_one (default)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LpipsConfig {
    /// Trunk network.
    #[serde(default)]
    pub net: LpipsNet,
    /// safetensors file with trunk and head weights (see the module docs for the keys).
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Range of the images the loss is given.
    #[serde(default)]
    pub input_range: LpipsInputRange,
}

impl LpipsConfig {
    /// Checks this config against the weight the LPIPS term gets in the total loss.
    ///
    /// A positive weight with no weights file (or one that does not exist) is an error: LPIPS is
    /// never silently replaced by zero. A weight of 0 disables the term and needs no file.
    pub fn validate(&self, weight: f64) -> Result<(), String> {
        if !weight.is_finite() || weight < 0.0 {
            return Err(format!("the LPIPS weight must be a finite number >= 0, got {weight}"));
        }
        if weight == 0.0 {
            return Ok(());
        }
        match &self.weights {
            None => Err(format!(
                "the LPIPS weight is {weight} but no LPIPS weights file is configured (`weights`, net `{}`); \
                 LPIPS is never silently skipped: export the weights with scripts/export_lpips.py \
                 --net {} --out FILE and set `weights: FILE`, or set the LPIPS weight to 0",
                self.net, self.net
            )),
            Some(path) if !path.is_file() => Err(format!(
                "the LPIPS weights file `{}` does not exist (the LPIPS weight is {weight}); export it with \
                 scripts/export_lpips.py --net {} --out {}",
                path.display(),
                self.net,
                path.display()
            )),
            Some(_) => Ok(()),
        }
    }

    /// Loads the configured weights file into a ready LPIPS model on `device`.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<Lpips<B>, LpipsError> {
        let path = self.weights.as_deref().ok_or(LpipsError::NoWeightsFile { net: self.net })?;
        Ok(LpipsWeights::load::<B>(path, self.net, device)?.with_input_range(self.input_range))
    }
}

/// Why LPIPS weights could not be loaded. Every variant names the file, and the key where one
/// tensor is at fault.
#[derive(Debug, thiserror::Error)]
pub enum LpipsError {
    /// The weights file does not exist.
    #[error(
        "LPIPS weights file `{}` does not exist; export one with scripts/export_lpips.py --net {net} --out FILE",
        .path.display()
    )]
    NotFound {
        /// The missing file.
        path: PathBuf,
        /// The trunk it was meant to hold.
        net: LpipsNet,
    },
    /// The file exists but could not be read.
    #[error("could not read LPIPS weights file `{}`: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("LPIPS weights file `{}` is not a valid safetensors file: {reason}", .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What the safetensors parser reported.
        reason: String,
    },
    /// A required tensor is absent.
    #[error(
        "LPIPS weights file `{}` has no tensor `{key}` (expected shape {expected:?} for the {net} trunk)",
        .path.display()
    )]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The missing key.
        key: String,
        /// Its expected shape.
        expected: Vec<usize>,
        /// The trunk being loaded.
        net: LpipsNet,
    },
    /// A tensor has the wrong shape.
    #[error(
        "tensor `{key}` in LPIPS weights file `{}` has shape {found:?}, expected {expected:?} for the {net} trunk",
        .path.display()
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// The shape this trunk needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
        /// The trunk being loaded.
        net: LpipsNet,
    },
    /// A tensor is stored in a dtype that is not read (F32, F16 and BF16 are).
    #[error(
        "tensor `{key}` in LPIPS weights file `{}` has dtype {found}, expected F32 (scripts/export_lpips.py writes float32)",
        .path.display()
    )]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// The dtype in the file.
        found: String,
    },
    /// A tensor holds NaN or an infinity.
    #[error("tensor `{key}` in LPIPS weights file `{}` has a non-finite value at flat index {index}", .path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// Row-major index of the first bad value.
        index: usize,
    },
    /// A linear head has a negative weight; trained LPIPS heads are clamped to be non-negative.
    #[error(
        "linear head `{key}` in LPIPS weights file `{}` has a negative weight {value} at channel {index}; \
         LPIPS heads are non-negative as trained",
        .path.display()
    )]
    NegativeHead {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// Channel of the first negative weight.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// [`LpipsConfig::load`] was called without a weights file.
    #[error("no LPIPS weights file configured for the {net} trunk; export one with scripts/export_lpips.py")]
    NoWeightsFile {
        /// The configured trunk.
        net: LpipsNet,
    },
}

impl LpipsError {
    /// The LPIPS error for a problem the shared weights reader found in the `net` file.
    fn from_weights(e: WeightError, net: LpipsNet) -> Self {
        match e {
            WeightError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                LpipsError::NotFound { path, net }
            }
            WeightError::Io { path, source } => LpipsError::Io { path, source },
            WeightError::Format { path, message } => LpipsError::Format { path, reason: message },
            WeightError::Missing { path, key, expected, .. } => LpipsError::MissingKey { path, key, expected, net },
            WeightError::Mismatch { path, key, found, expected } => {
                LpipsError::Shape { path, key, expected, found, net }
            }
            WeightError::Dtype { path, key, found } => LpipsError::Dtype { path, key, found },
            // `LpipsWeights::read` never asks the reader for its unread keys.
            WeightError::Unexpected { path, keys } => {
                LpipsError::Format { path, reason: format!("unexpected keys {}", keys.join(", ")) }
            }
        }
    }
}

/// One named tensor read from a weights file.
#[derive(Debug, Clone)]
struct HostTensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// LPIPS weights read and checked on the host, ready to be put on any device.
#[derive(Debug, Clone)]
pub struct LpipsWeights {
    net: LpipsNet,
    /// In [`LpipsWeights::expected_tensors`] order.
    tensors: Vec<HostTensor>,
}

impl LpipsWeights {
    /// Every key the `net` trunk needs with its shape, in state-dict order: trunk convs
    /// (weight, then bias) then heads `lin0` … `lin4`.
    pub fn expected_tensors(net: LpipsNet) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for c in net.convs() {
            out.push((c.weight_key(), c.weight_shape()));
            out.push((c.bias_key(), vec![c.out_channels]));
        }
        for (tap, channels) in net.tap_channels().into_iter().enumerate() {
            out.push((head_key(tap), vec![1, channels, 1, 1]));
        }
        out
    }

    /// Reads and checks the `net` weights in the safetensors file at `path` (F32 as exported;
    /// F16 and BF16 are widened to f32, other dtypes refused).
    pub fn read(path: impl AsRef<Path>, net: LpipsNet) -> Result<Self, LpipsError> {
        let path = path.as_ref();
        let weight_error = |e: WeightError| LpipsError::from_weights(e, net);
        let mut file = WeightFile::open(path).map_err(weight_error)?;
        let mut tensors = Vec::new();
        for (key, expected) in Self::expected_tensors(net) {
            let values = file.read(&key, &expected).map_err(weight_error)?;
            if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                return Err(LpipsError::NonFinite { path: path.to_path_buf(), key, index });
            }
            if key.starts_with("lin")
                && let Some(index) = values.iter().position(|&v| v < 0.0)
            {
                return Err(LpipsError::NegativeHead { path: path.to_path_buf(), key, index, value: values[index] });
            }
            tensors.push(HostTensor { shape: expected, values });
        }
        // Other keys (the scaling layer's buffers, the `lins.N` aliases of the heads) are the
        // rest of the `lpips` state dict: not read, by design.
        Ok(Self { net, tensors })
    }

    /// Reads the `net` weights at `path` and builds the LPIPS model on `device`.
    pub fn load<B: Backend>(path: impl AsRef<Path>, net: LpipsNet, device: &B::Device) -> Result<Lpips<B>, LpipsError> {
        Ok(Self::read(path, net)?.into_model(device))
    }

    /// The trunk these weights are for.
    pub fn net(&self) -> LpipsNet {
        self.net
    }

    /// Builds the (frozen) LPIPS model on `device`, for inputs in [−1, 1].
    pub fn into_model<B: Backend>(self, device: &B::Device) -> Lpips<B> {
        let net = self.net;
        let mut tensors = self.tensors.into_iter();
        let mut next = || tensors.next().expect("LpipsWeights holds every expected tensor");
        let convs = net
            .convs()
            .iter()
            .map(|c| {
                let (weight, bias) = (next(), next());
                let mut layer = Conv2dConfig::new([c.in_channels, c.out_channels], [c.kernel, c.kernel])
                    .with_stride([c.stride, c.stride])
                    .with_padding(PaddingConfig2d::Explicit(c.padding, c.padding, c.padding, c.padding))
                    .with_initializer(Initializer::Zeros)
                    .init::<B>(device);
                layer.weight = Param::from_tensor(host_to_device::<B, 4>(weight, device));
                layer.bias = Some(Param::from_tensor(host_to_device::<B, 1>(bias, device)));
                layer
            })
            .collect();
        let heads = net
            .tap_channels()
            .iter()
            .map(|&channels| {
                let mut layer = Conv2dConfig::new([channels, 1], [1, 1])
                    .with_bias(false)
                    .with_initializer(Initializer::Zeros)
                    .init::<B>(device);
                layer.weight = Param::from_tensor(host_to_device::<B, 4>(next(), device));
                layer
            })
            .collect();
        Lpips { convs, heads, net, input_range: LpipsInputRange::MinusOneToOne }.no_grad()
    }
}

fn host_to_device<B: Backend, const D: usize>(t: HostTensor, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.values, t.shape), device)
}

/// The LPIPS distance with a frozen AlexNet or VGG16 trunk; build it with [`LpipsWeights`] or
/// [`LpipsConfig::load`]. See the module docs for the definition and input conventions.
#[derive(Module, Debug)]
pub struct Lpips<B: Backend> {
    /// Trunk convolutions in torchvision order (each followed by a ReLU).
    convs: Vec<Conv2d<B>>,
    /// 1×1 linear heads without bias, one per feature tap.
    heads: Vec<Conv2d<B>>,
    net: LpipsNet,
    input_range: LpipsInputRange,
}

impl<B: Backend> Lpips<B> {
    /// The trunk this model runs.
    pub fn net(&self) -> LpipsNet {
        self.net
    }

    /// The input range [`Lpips::forward`] assumes.
    pub fn input_range(&self) -> LpipsInputRange {
        self.input_range
    }

    /// The same model for inputs in `range` (e.g. [`LpipsInputRange::ZeroToOne`]).
    pub fn with_input_range(mut self, range: LpipsInputRange) -> Self {
        self.input_range = range;
        self
    }

    /// LPIPS distance per sample, shape `[batch]`, between `x` and `y` of shape
    /// `[batch, 3, H, W]` (RGB, in the configured [`LpipsInputRange`]).
    pub fn forward(&self, x: Tensor<B, 4>, y: Tensor<B, 4>) -> Tensor<B, 1> {
        self.forward_per_layer(x, y).into_iter().reduce(|a, b| a + b).expect("five feature taps")
    }

    /// The five per-tap contributions to [`Lpips::forward`], each of shape `[batch]`.
    pub fn forward_per_layer(&self, x: Tensor<B, 4>, y: Tensor<B, 4>) -> Vec<Tensor<B, 1>> {
        let [batch, channels, height, width] = x.dims();
        assert_eq!(x.dims(), y.dims(), "LPIPS inputs must have the same shape, got {:?} and {:?}", x.dims(), y.dims());
        assert_eq!(
            channels, 3,
            "LPIPS takes 3-channel RGB input, got {channels} channels (for S2 B2/B3/B4/B8 tensors use rgb_from_s2)"
        );
        let min = self.net.min_input_size();
        assert!(
            height >= min && width >= min,
            "LPIPS with the {} trunk needs inputs of at least {min}×{min} px, got {height}×{width}",
            self.net
        );
        // One trunk pass over both images.
        let both = self.scale(Tensor::cat(vec![x, y], 0));
        self.features(both)
            .into_iter()
            .zip(&self.heads)
            .map(|(features, head)| {
                let features = unit_normalize(features);
                let diff = features.clone().narrow(0, 0, batch) - features.narrow(0, batch, batch);
                let per_position = head.forward(diff.clone() * diff);
                per_position.mean_dims(&[2, 3]).reshape([batch])
            })
            .collect()
    }

    /// Mean LPIPS over the batch, shape `[1]`: the loss term for a prediction and its target.
    pub fn loss(&self, prediction: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
        self.forward(prediction, target).mean()
    }

    /// Maps the input range and applies the LPIPS scaling layer.
    fn scale(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = match self.input_range {
            LpipsInputRange::MinusOneToOne => x,
            LpipsInputRange::ZeroToOne => unit_to_signed_range(x),
        };
        let device = x.device();
        let shift = Tensor::<B, 1>::from_data(TensorData::from(LPIPS_SHIFT), &device).reshape([1, 3, 1, 1]);
        let scale = Tensor::<B, 1>::from_data(TensorData::from(LPIPS_SCALE), &device).reshape([1, 3, 1, 1]);
        (x - shift) / scale
    }

    /// Trunk activations at the five ReLU taps.
    fn features(&self, mut h: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let specs = self.net.convs();
        let mut taps = Vec::with_capacity(5);
        for (i, (spec, conv)) in specs.iter().zip(&self.convs).enumerate() {
            if let Some((kernel, stride)) = spec.pool_before {
                h = max_pool2d(h, [kernel, kernel], [stride, stride], [0, 0], [1, 1], false);
            }
            h = relu(conv.forward(h));
            if specs.get(i + 1).is_none_or(|next| next.slice != spec.slice) {
                taps.push(h.clone());
            }
        }
        taps
    }
}

/// `f / (‖f‖₂ + eps)` along the channel axis, with the squared norm clamped away from 0.
fn unit_normalize<B: Backend>(f: Tensor<B, 4>) -> Tensor<B, 4> {
    let norm = (f.clone() * f.clone()).sum_dim(1).clamp_min(MIN_SQUARED_NORM).sqrt();
    f / (norm + LPIPS_EPS)
}

/// Maps images from [0, 1] to the [−1, 1] range LPIPS expects: `2x − 1`.
pub fn unit_to_signed_range<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x * 2.0 - 1.0
}

/// RGB view of a Sentinel-2 tensor with bands (B2, B3, B4, B8) = (blue, green, red, NIR):
/// `[batch, 4, H, W]` → `[batch, 3, H, W]` holding (B4, B3, B2).
///
/// # Panics
/// If `x` does not have exactly 4 channels.
pub fn rgb_from_s2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let channels = x.dims()[1];
    assert_eq!(channels, 4, "rgb_from_s2 expects 4 channels (B2, B3, B4, B8), got {channels}");
    Tensor::cat(vec![x.clone().narrow(1, 2, 1), x.clone().narrow(1, 1, 1), x.narrow(1, 0, 1)], 1)
}
