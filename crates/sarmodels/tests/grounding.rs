//! The stage-3 grounding model at its public boundary: identity at initialisation, merge, gradients
//! and frozen bases under real AdamW steps, parameter counts, config validation and stage-1 loading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use checkpoints::weights::{WeightFile, save_tensors};
use sarmodels::{GeneratorConfig, GroundingConfig, GroundingModel, ModelError, ModelSize, ParamCount, WeightError};

type B = Flex;
type AB = Autodiff<Flex>;

fn host<BK: Backend, const D: usize>(t: Tensor<BK, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A random stage-1 generator (test size, LoRA on, random adapters folded in by `save_base`) saved as
/// a base file in `dir`.
fn stage1_file(dir: &Path, name: &str, size: ModelSize) -> PathBuf {
    let path = dir.join(name);
    let c = GeneratorConfig { size, ..GeneratorConfig::default() };
    c.init::<B>(&Default::default()).save_base(&path).unwrap();
    path
}

/// Rewrites a safetensors file through `edit` on `(key → (shape, f32 values))`.
fn rewrite(path: &Path, edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) {
    let mut file = WeightFile::open(path).unwrap();
    let mut map = BTreeMap::new();
    for key in file.keys() {
        let shape = file.shape(&key).unwrap().to_vec();
        let values = file.read(&key, &shape).unwrap();
        map.insert(key, (shape, values));
    }
    edit(&mut map);
    save_tensors(path, map.into_iter().map(|(k, (s, v))| (k, s, v)).collect()).unwrap();
}

fn file_tensor(path: &Path, key: &str) -> Vec<f32> {
    let mut file = WeightFile::open(path).unwrap();
    let shape = file.shape(key).unwrap().to_vec();
    file.read(key, &shape).unwrap()
}

fn inputs<BK: Backend>(seed: u64) -> (Tensor<BK, 4>, Tensor<BK, 4>, Tensor<BK, 4>) {
    BK::seed(&Default::default(), seed);
    let device = Default::default();
    let n = Distribution::Normal(0.0, 1.0);
    (
        Tensor::random([2, 2, 16, 16], n, &device),
        Tensor::random([2, 4, 16, 16], n, &device),
        Tensor::random([2, 4, 16, 16], n, &device),
    )
}

/// Every float parameter as `(dotted path, values)`, in module order.
fn params<BK: Backend, M: Module<BK>>(m: &M) -> Vec<(String, Vec<f32>)> {
    struct V(Vec<String>, Vec<(String, Vec<f32>)>);
    impl<BK: Backend> ModuleVisitor<BK> for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<BK, D>>) {
            self.1.push((self.0.join("."), host(p.val())));
        }
    }
    let mut v = V(Vec::new(), Vec::new());
    m.visit(&mut v);
    v.1
}

/// `(dotted path, sum |grad| or None)` for every float parameter.
fn grads_by_path(m: &GroundingModel<AB>, grads: &<AB as AutodiffBackend>::Gradients) -> Vec<(String, Option<f32>)> {
    struct V<'a>(Vec<String>, Vec<(String, Option<f32>)>, &'a <AB as AutodiffBackend>::Gradients);
    impl ModuleVisitor<AB> for V<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AB, D>>) {
            let g = p.val().grad(self.2).map(|g| g.abs().sum().into_scalar());
            self.1.push((self.0.join("."), g));
        }
    }
    let mut v = V(Vec::new(), Vec::new(), grads);
    m.visit(&mut v);
    v.1
}

/// Replaces every adapter matrix with N(0, 0.3²) values (trainable).
fn randomize_adapters<BK: Backend>(m: GroundingModel<BK>) -> GroundingModel<BK> {
    struct R(Vec<String>);
    impl<BK: Backend> ModuleMapper<BK> for R {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<BK, D>>) -> Param<Tensor<BK, D>> {
            if !self.0.iter().any(|s| s == "adapter") {
                return p;
            }
            let (id, t, mapper) = p.consume();
            let r = Tensor::random(t.shape(), Distribution::Normal(0.0, 0.3), &t.device()).require_grad();
            Param::from_mapped_value(id, r, mapper)
        }
    }
    m.map(&mut R(Vec::new()))
}

fn loss(m: &GroundingModel<AB>, (sar, opt, target): &(Tensor<AB, 4>, Tensor<AB, 4>, Tensor<AB, 4>)) -> Tensor<AB, 1> {
    let y = m.forward(sar.clone(), opt.clone(), 2);
    (y - target.clone()).powi_scalar(2).mean()
}

/// `steps` AdamW steps on the loss, with the gradients the way the trainer passes them.
fn adamw_steps(
    mut m: GroundingModel<AB>,
    data: &(Tensor<AB, 4>, Tensor<AB, 4>, Tensor<AB, 4>),
    steps: usize,
) -> GroundingModel<AB> {
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init::<AB, GroundingModel<AB>>();
    for _ in 0..steps {
        let grads = GradientsParams::from_grads(loss(&m, data).backward(), &m);
        m = optim.step(1e-2, m, grads);
    }
    m
}

fn loaded_model(dir: &Path) -> GroundingModel<AB> {
    let file = stage1_file(dir, "base_model.safetensors", ModelSize::Test);
    GroundingConfig::default().init::<AB>(&Default::default()).load_base(&file).unwrap()
}

#[test]
fn at_initialisation_the_output_is_the_input_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = loaded_model(dir.path());
    let (sar, opt, _) = inputs::<AB>(1);
    let want = host(opt.clone());
    for passes in [1, 3] {
        assert_eq!(host(model.forward(sar.clone(), opt.clone(), passes)), want, "{passes} passes");
    }
    // Whatever the base: a second random stage-1 file gives the identity too.
    let other = stage1_file(dir.path(), "other.safetensors", ModelSize::Test);
    let model = model.load_base(&other).unwrap();
    assert_eq!(host(model.forward(sar, opt, 2)), want);
}

#[test]
fn merged_model_matches_the_adapted_one_after_adamw_steps() {
    let dir = tempfile::tempdir().unwrap();
    let data = inputs::<AB>(2);
    let trained = adamw_steps(loaded_model(dir.path()), &data, 5);
    let (sar, opt, _) = &data;
    let adapted = host(trained.forward(sar.clone(), opt.clone(), 3));
    assert!(max_abs_diff(&adapted, &host(opt.clone())) > 1e-3, "training moved the output");
    let merged = trained.clone().merge_lora();
    assert!(merged.adapter_names().is_empty());
    let got = host(merged.forward(sar.clone(), opt.clone(), 3));
    let scale = adapted.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&adapted, &got);
    assert!(diff < 1e-5 * scale, "merged differs by {diff} at output scale {scale}");

    // Random (large) adapters too.
    let random = randomize_adapters(trained);
    let adapted = host(random.forward(sar.clone(), opt.clone(), 1));
    let got = host(random.merge_lora().forward(sar.clone(), opt.clone(), 1));
    let scale = adapted.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    assert!(max_abs_diff(&adapted, &got) < 1e-5 * scale);
}

#[test]
fn only_cross_attention_adapters_train_and_the_base_stays_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data = inputs::<AB>(3);
    let model = loaded_model(dir.path());
    assert_eq!(
        model.adapter_names(),
        ["grounding.0.cross_attn.q", "grounding.0.cross_attn.kv", "grounding.0.cross_attn.proj"]
    );
    let base =
        |m: &GroundingModel<AB>| params(m).into_iter().filter(|(k, _)| !k.contains(".adapter.")).collect::<Vec<_>>();
    let before = base(&model);
    let adapters_before: Vec<_> = params(&model).into_iter().filter(|(k, _)| k.contains(".adapter.")).collect();

    // Three steps: the first moves proj's B, the second q/kv's B, after which every A and B has a gradient.
    let model = adamw_steps(model, &data, 3);
    let after = base(&model);
    assert_eq!(before.len(), after.len());
    for ((k, a), (_, b)) in before.iter().zip(&after) {
        assert!(a == b, "base parameter {k} changed");
    }
    let adapters_after: Vec<_> = params(&model).into_iter().filter(|(k, _)| k.contains(".adapter.")).collect();
    for ((k, a), (_, b)) in adapters_before.iter().zip(&adapters_after) {
        assert!(a != b, "adapter {k} did not move");
    }

    let grads = loss(&model, &data).backward();
    let by_path = grads_by_path(&model, &grads);
    let adapter_paths: Vec<&str> =
        by_path.iter().filter(|(k, _)| k.contains(".adapter.")).map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        adapter_paths,
        [
            "grounding.0.cross_attn.q.adapter.lora_a",
            "grounding.0.cross_attn.q.adapter.lora_b",
            "grounding.0.cross_attn.kv.adapter.lora_a",
            "grounding.0.cross_attn.kv.adapter.lora_b",
            "grounding.0.cross_attn.proj.adapter.lora_a",
            "grounding.0.cross_attn.proj.adapter.lora_b",
        ]
    );
    for (k, g) in &by_path {
        if k.contains(".adapter.") {
            assert!(g.is_some_and(|s| s > 0.0), "{k}: {g:?}");
        } else {
            assert!(g.is_none(), "frozen {k} got a gradient");
        }
    }
}

#[test]
fn trainable_count_equals_the_count_from_the_config() {
    let device = Default::default();
    let c = GroundingConfig::default();
    let model = c.init::<AB>(&device);
    let count = ParamCount::of(&model);
    assert_eq!(count.trainable, c.lora_parameter_count());
    // Written out: rank 8, d 32, one block with q (32 → 32), kv (32 → 64), proj (32 → 32).
    assert_eq!(count.trainable, 8 * (64 + 96 + 64));
    // And every trainable parameter is an adapter parameter.
    let adapter_sum: usize = params(&model).iter().filter(|(k, _)| k.contains(".adapter.")).map(|(_, v)| v.len()).sum();
    assert_eq!(adapter_sum, count.trainable);

    let full = GroundingConfig { freeze_base_model: false, ..c.clone() }.init::<AB>(&device);
    let full_count = ParamCount::of(&full);
    assert_eq!(full_count, ParamCount { total: count.total, trainable: count.total });

    let mut rank4 = c.clone();
    rank4.lora.rank = 4;
    rank4.lora.target_modules = vec!["cross_attn.proj".into(), "cross_attn.kv".into()];
    assert_eq!(ParamCount::of(&rank4.init::<AB>(&device)).trainable, 4 * (96 + 64));
    assert_eq!(rank4.lora_parameter_count(), 4 * (96 + 64));
}

/// The figure the issue asks for: trainable share at `size: small`, rank 8 (printed with `--nocapture`).
#[test]
fn small_size_trainable_share() {
    let c = GroundingConfig { size: ModelSize::Small, ..GroundingConfig::default() };
    let count = ParamCount::of(&c.init::<AB>(&Default::default()));
    assert_eq!(count.trainable, c.lora_parameter_count());
    assert_eq!(count.trainable, 129_024);
    println!("size small, rank 8:\n{count}");
    assert!((0.3..1.5).contains(&count.trainable_percent()), "{count}");
}

#[test]
fn load_base_uses_the_file_and_lists_the_unused_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file_a = stage1_file(dir.path(), "a.safetensors", ModelSize::Test);
    let file_b = stage1_file(dir.path(), "b.safetensors", ModelSize::Test);
    let device = Default::default();
    let fresh = GroundingConfig::default().init::<AB>(&device);
    let optical_before = host(fresh.optical_embed.proj.weight.val());
    let (model, unused) = randomize_adapters(fresh).load_base_with_unused(&file_a).unwrap();
    let mut want_unused: Vec<String> = [
        "norm1.gamma",
        "norm2.gamma",
        "self_attn.qkv.weight",
        "self_attn.qkv.bias",
        "self_attn.proj.weight",
        "self_attn.proj.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ]
    .iter()
    .map(|k| format!("decoder.0.{k}"))
    .chain(["mask_token", "decoder_norm.gamma", "head.bias"].map(String::from))
    .collect();
    want_unused.sort();
    assert_eq!(unused, want_unused);

    // Loaded from the file under their stage-1 names.
    let g = &model.grounding[0];
    assert_eq!(host(g.cross_attn.q.weight.val()), file_tensor(&file_a, "decoder.0.cross_attn.q.weight"));
    assert_eq!(
        host(g.cross_attn.kv.bias.as_ref().unwrap().val()),
        file_tensor(&file_a, "decoder.0.cross_attn.kv.bias")
    );
    assert_eq!(host(g.context_norm.gamma.val()), file_tensor(&file_a, "decoder.0.context_norm.gamma"));
    assert_eq!(host(model.head.weight.val()), file_tensor(&file_a, "head.weight"));
    assert_eq!(host(model.encoder[1].mlp.fc2.weight.val()), file_tensor(&file_a, "encoder.1.mlp.fc2.weight"));
    assert_eq!(host(model.output_modality_embed.val()), file_tensor(&file_a, "output_modality_embed"));
    assert_eq!(host(g.cross_attn.proj.weight.val()), file_tensor(&file_a, "decoder.0.cross_attn.proj.weight"));
    // Not loaded: the new optical embedding; trainability re-applied.
    assert_eq!(host(model.optical_embed.proj.weight.val()), optical_before);
    assert!(!model.head.weight.is_require_grad() && !g.cross_attn.q.weight.is_require_grad());
    assert!(g.cross_attn.q.adapter.as_ref().unwrap().lora_a.is_require_grad());

    // The output depends on the file (with non-zero adapters).
    let (sar, opt, _) = inputs::<AB>(4);
    let out_a = host(model.forward(sar.clone(), opt.clone(), 1));
    let model_b = model.load_base(&file_b).unwrap();
    let out_b = host(model_b.forward(sar.clone(), opt.clone(), 1));
    assert!(max_abs_diff(&out_a, &out_b) > 1e-3, "the base file changes the output");
    assert!(max_abs_diff(&out_a, &host(opt)) > 1e-3);
}

#[test]
fn a_file_of_another_size_names_a_key_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = stage1_file(dir.path(), "tiny.safetensors", ModelSize::Tiny);
    let e = GroundingConfig::default().init::<B>(&Default::default()).load_base(&tiny).unwrap_err();
    match &e {
        WeightError::Mismatch { key, found, expected, .. } => {
            assert_eq!(key, "patch_embed.proj.weight");
            assert_eq!((found.as_slice(), expected.as_slice()), ([512, 192].as_slice(), [128, 32].as_slice()));
        }
        other => panic!("expected a shape error, got {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("tiny.safetensors") && msg.contains("[512, 192]") && msg.contains("[128, 32]"), "{msg}");
}

#[test]
fn missing_and_foreign_keys_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = stage1_file(dir.path(), "base.safetensors", ModelSize::Test);
    rewrite(&file, |m| {
        m.remove("decoder.0.cross_attn.kv.bias");
    });
    let model = || GroundingConfig::default().init::<B>(&Default::default());
    let e = model().load_base(&file).unwrap_err();
    assert!(
        matches!(&e, WeightError::Missing { key, expected, .. } if key == "decoder.0.cross_attn.kv.bias" && expected == &[64]),
        "{e}"
    );
    assert!(e.to_string().contains("decoder.0.cross_attn.kv.bias") && e.to_string().contains("base.safetensors"));

    // A file without the unused keys loads; a key no stage-1 generator of this size has does not.
    let file = stage1_file(dir.path(), "base.safetensors", ModelSize::Test);
    rewrite(&file, |m| {
        m.retain(|k, _| !k.contains("mlp") || k.starts_with("encoder"));
    });
    let (_, unused) = model().load_base_with_unused(&file).unwrap();
    assert!(unused.iter().all(|k| !k.contains("mlp")), "{unused:?}");
    rewrite(&file, |m| {
        m.insert("decoder.1.norm1.gamma".into(), (vec![32], vec![1.0; 32]));
    });
    match model().load_base(&file).unwrap_err() {
        WeightError::Unexpected { keys, .. } => assert_eq!(keys, ["decoder.1.norm1.gamma"]),
        other => panic!("expected unexpected keys, got {other}"),
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let device = Default::default();
    let model = GroundingConfig::default().init::<B>(&device);
    let t = |c: usize, h: usize, w: usize| Tensor::<B, 4>::zeros([1, c, h, w], &device);
    let err = |sar, opt, passes| model.try_forward(sar, opt, passes).unwrap_err();
    let e = err(t(2, 16, 16), t(4, 16, 16), 0);
    assert_eq!(e, ModelError::Passes { passes: 0 });
    assert!(e.to_string().contains("at least 1"), "{e}");
    assert!(err(t(3, 16, 16), t(4, 16, 16), 1).to_string().contains("SAR input has 3 channels"));
    assert!(err(t(2, 16, 16), t(3, 16, 16), 1).to_string().contains("optical input has 3 channels"));
    let e = err(t(2, 16, 16), t(4, 16, 24), 1);
    assert!(matches!(e, ModelError::GroundingShapes { .. }), "{e}");
    assert!(e.to_string().contains("[1, 4, 16, 24]"), "{e}");
    assert_eq!(err(t(2, 12, 16), t(4, 12, 16), 1), ModelError::PatchMultiple { height: 12, width: 16, patch: 8 });
    assert!(model.check_input(16, 24).is_ok() && GroundingConfig::default().check_input(16, 20).is_err());
    assert_eq!(model.try_forward(t(2, 16, 24), t(4, 16, 24), 2).unwrap().dims(), [1, 4, 16, 24]);
}

#[test]
#[should_panic(expected = "passes (timesteps) must be at least 1")]
fn forward_with_zero_passes_is_a_clear_panic() {
    let device = Default::default();
    let model = GroundingConfig::default().init::<B>(&device);
    model.forward(Tensor::zeros([1, 2, 16, 16], &device), Tensor::zeros([1, 4, 16, 16], &device), 0);
}

/// Every block of a deeper size maps to its stage-1 decoder block; the model is still the identity.
#[test]
fn tiny_size_loads_every_block_and_starts_as_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let file = stage1_file(dir.path(), "tiny.safetensors", ModelSize::Tiny);
    let c = GroundingConfig { size: ModelSize::Tiny, ..GroundingConfig::default() };
    let (model, unused) = c.init::<B>(&Default::default()).load_base_with_unused(&file).unwrap();
    assert_eq!(model.grounding.len(), 4);
    assert_eq!(model.adapter_names().len(), 12);
    assert_eq!(unused.len(), 3 + 4 * 10, "{unused:?}");
    for k in 0..4 {
        let key = format!("decoder.{k}.cross_attn.kv.weight");
        assert_eq!(host(model.grounding[k].cross_attn.kv.weight.val()), file_tensor(&file, &key), "{key}");
    }
    let (sar, opt) = (
        Tensor::<B, 4>::random([1, 2, 32, 32], Distribution::Normal(0.0, 1.0), &Default::default()),
        Tensor::<B, 4>::random([1, 4, 32, 32], Distribution::Normal(0.0, 1.0), &Default::default()),
    );
    assert_eq!(host(model.forward(sar, opt.clone(), 2)), host(opt));
}

/// `freeze_base_model: false` trains the base too (both paths share it): still the identity at
/// initialisation, and the base weights receive gradients once the adapters have moved.
#[test]
fn an_unfrozen_base_trains_with_the_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let file = stage1_file(dir.path(), "base.safetensors", ModelSize::Test);
    let c = GroundingConfig { freeze_base_model: false, ..GroundingConfig::default() };
    let model = randomize_adapters(c.init::<AB>(&Default::default()).load_base(&file).unwrap());
    let count = ParamCount::of(&model);
    assert_eq!(count.trainable, count.total);
    let data = inputs::<AB>(5);
    let grads = loss(&model, &data).backward();
    let proj = model.grounding[0].cross_attn.proj.weight.val().grad(&grads).unwrap();
    assert!(proj.abs().sum().into_scalar() > 0.0);
    assert!(model.encoder[0].attn.qkv.weight.val().grad(&grads).is_some());

    // Without adapters both paths are the same function: nothing could ever move, so it is refused.
    let mut off = c.clone();
    off.lora.enabled = false;
    assert!(off.validate().iter().any(|(k, m)| k == "lora.enabled" && m.contains("adapters")), "{:?}", off.validate());
}
