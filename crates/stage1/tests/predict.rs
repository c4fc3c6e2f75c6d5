//! `stage1 predict` on a tiny trained run (test-size model with LoRA, CPU): one `opt_v2`
//! estimate per tile equal to the model's own prediction in reflectance, identical on re-run,
//! and every bad input (existing targets, no config, weights of another model, `--out` equal to
//! `--data-dir`) refused with exit 2 and a message naming the file, tensor or flag.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use checkpoints::format::CheckpointFile;
use stage1::Stage1Model;
use stage1::predict::{PredictReport, standardization, tile_seed};
use tiling::stage2::{estimate_path, read_estimate};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const LOWVR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/train/stage1.lowvr.yaml");

/// The tiny run: `(tmp, tile dir of the run, run dir, dir of 3 tiles to predict)`.
fn run() -> &'static (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let tiles = tmp.path().join("tiles");
        stage1::write_synthetic_tiles(&tiles, 6, 64, 32, 5).expect("synthetic tiles");
        let run = tmp.path().join("run");
        let out = Command::new(env!("CARGO_BIN_EXE_stage1"))
            .current_dir(ROOT)
            .args(["--config", LOWVR, "--data-dir"])
            .arg(&tiles)
            .args([
                "--set",
                "model.size=test",
                "--steps",
                "2",
                "--warmup-steps",
                "1",
                "--batch-size",
                "2",
                "--grad-accum",
                "1",
            ])
            .args(["--val-every", "2", "--set", "logging.progress=plain", "--set", "logging.tensorboard=false"])
            .args(["--set", "data.num_workers=1", "--set", "data.val_batch_size=2", "--set", "data.max_val_tiles=2"])
            .args(["--set", "model.timesteps=3", "--set", "model.min_timesteps=1", "--set", "data.grid_tiles=0"])
            .arg("--output-dir")
            .arg(&run)
            .output()
            .expect("stage1 starts");
        assert!(out.status.success(), "training failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(run.join("best_model.safetensors").is_file());
        // Three tiles (with their sidecars, no manifest) to predict.
        let few = tmp.path().join("few");
        std::fs::create_dir(&few).unwrap();
        let mut npz: Vec<PathBuf> = std::fs::read_dir(&tiles)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "npz"))
            .collect();
        npz.sort();
        for p in npz.iter().take(3) {
            std::fs::copy(p, few.join(p.file_name().unwrap())).unwrap();
            let json = p.with_extension("json");
            std::fs::copy(&json, few.join(json.file_name().unwrap())).unwrap();
        }
        (tmp, tiles, run, few)
    })
}

fn predict(args: &[&str], extra: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stage1"));
    c.current_dir(ROOT).arg("predict").args(args);
    for p in extra {
        c.arg(p);
    }
    c.output().expect("stage1 starts")
}

/// `predict --weights RUN/best_model.safetensors --data-dir DATA --out OUT` plus `flags`.
fn predict_into(data: &Path, out: &Path, flags: &[&str]) -> Output {
    let (_, _, run, _) = run();
    let mut c = Command::new(env!("CARGO_BIN_EXE_stage1"));
    c.current_dir(ROOT)
        .arg("predict")
        .arg("--weights")
        .arg(run.join("best_model.safetensors"))
        .arg("--data-dir")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(flags);
    c.output().expect("stage1 starts")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn npz_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npz"))
        .collect();
    v.sort();
    v
}

#[test]
fn estimates_equal_the_models_prediction_and_rerun_identically() {
    let (tmp, _, run, few) = run();
    let out = tmp.path().join("opt_v2_a");
    let o = predict_into(few, &out, &["--batch-size", "2"]);
    assert!(o.status.success(), "predict failed: {}", stderr(&o));
    assert!(stderr(&o).contains("predicted 3/3 tiles"), "plain progress lines: {}", stderr(&o));
    let tiles = npz_files(few);
    assert_eq!(tiles.len(), 3);
    let written: Vec<PathBuf> = npz_files(&out);
    assert_eq!(written, tiles.iter().map(|t| estimate_path(&out, t)).collect::<Vec<_>>(), "one file per tile");

    // The same model, loaded here from the same files, predicting each tile alone with its seed.
    let config_yaml = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    let config: stage1::Stage1Config = serde_yaml::from_str(&config_yaml).unwrap();
    assert!(config.model.lora.enabled, "the run trains adapters, so they are loaded too");
    let device = Default::default();
    let gc = config.model.generator();
    let fresh = Stage1Model::<Flex> { generator: gc.init(&device), denoiser: gc.init_denoiser(&device) };
    let weights = run.join("best_model.safetensors");
    let file = CheckpointFile::read(&weights).unwrap();
    let model = checkpoints::module::load_weights(fresh, file.tensors, None, &weights).unwrap();
    let std = standardization(&config);
    for tile in &tiles {
        let t = tiling::npz::read_tile(tile).unwrap();
        let (h, w) = (t.height, t.width);
        let hw = h * w;
        let mut s1 = t.s1.clone();
        std.apply_s1(&mut s1, hw);
        for v in &mut s1 {
            if !v.is_finite() {
                *v = 0.0;
            }
        }
        let sar = Tensor::<Flex, 4>::from_data(TensorData::new(s1, [1, 2, h, w]), &device);
        let name = tile.file_name().unwrap().to_string_lossy();
        let (_, refined) = model.predict(sar, config.model.timesteps, tile_seed(config.seed, &name));
        let mut expect: Vec<f32> = refined.into_data().iter::<f32>().collect();
        std.invert_s2(&mut expect, hw);
        let e = read_estimate(&estimate_path(&out, tile)).unwrap();
        assert_eq!((e.height, e.width), (h, w));
        let worst = e.data.iter().zip(&expect).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "{}: off by {worst}", tile.display());
        assert!(e.data.iter().all(|v| v.is_finite()));
    }

    // Provenance.
    let report: PredictReport = serde_json::from_slice(&std::fs::read(out.join("predict.json")).unwrap()).unwrap();
    let r = &report.runs[0];
    assert_eq!((r.tiles, r.timesteps, r.batch_size), (3, config.model.timesteps, 2));
    assert_eq!(r.weights, weights);
    assert_eq!(r.config, run.join("config.yaml"));
    assert_eq!(r.weights_crc32c, format!("{:08x}", crc32c::crc32c(&std::fs::read(&weights).unwrap())));

    // Re-run with another batch size and --overwrite: byte-identical files.
    let before: Vec<Vec<u8>> = written.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let o = predict_into(few, &out, &["--batch-size", "3", "--overwrite"]);
    assert!(o.status.success(), "re-run failed: {}", stderr(&o));
    let after: Vec<Vec<u8>> = written.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before == after, "a re-run changed the estimates");
    let report: PredictReport = serde_json::from_slice(&std::fs::read(out.join("predict.json")).unwrap()).unwrap();
    assert_eq!(report.runs.len(), 2, "each run is recorded");
}

#[test]
fn existing_estimates_are_never_overwritten_without_the_flag() {
    let (tmp, _, _, few) = run();
    let out = tmp.path().join("opt_v2_b");
    std::fs::create_dir(&out).unwrap();
    let tiles = npz_files(few);
    let existing = estimate_path(&out, &tiles[1]);
    std::fs::write(&existing, b"an older estimate").unwrap();
    let o = predict_into(few, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(&existing.display().to_string()), "names the file: {}", stderr(&o));
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&existing).unwrap(), b"an older estimate", "file unchanged");
    assert_eq!(npz_files(&out), [existing], "nothing else written");
}

#[test]
fn a_missing_config_names_both_paths() {
    let (tmp, _, run, few) = run();
    let lonely = tmp.path().join("lonely");
    std::fs::create_dir_all(&lonely).unwrap();
    let weights = lonely.join("best_model.safetensors");
    std::fs::copy(run.join("best_model.safetensors"), &weights).unwrap();
    let out = tmp.path().join("opt_v2_c");
    let o = predict(&["--weights"], &[&weights, Path::new("--data-dir"), few, Path::new("--out"), &out]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&weights.display().to_string()), "{e}");
    assert!(e.contains(&lonely.join("config.yaml").display().to_string()), "{e}");
    assert!(e.contains("--config"), "{e}");
    let missing = tmp.path().join("nope.yaml");
    let o = predict(
        &["--weights"],
        &[&weights, Path::new("--data-dir"), few, Path::new("--out"), &out, Path::new("--config"), &missing],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(&missing.display().to_string()), "{}", stderr(&o));
    assert!(!out.exists(), "nothing written");
}

#[test]
fn weights_of_another_model_are_refused_naming_a_tensor() {
    let (tmp, _, run, few) = run();
    // The run's config with another model size: the weights no longer fit.
    let yaml = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    assert!(yaml.contains("size: test"), "{yaml}");
    let other = tmp.path().join("tiny.yaml");
    std::fs::write(&other, yaml.replace("size: test", "size: tiny")).unwrap();
    let out = tmp.path().join("opt_v2_d");
    let o = predict_into(few, &out, &["--config", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("best_model.safetensors"), "{e}");
    assert!(e.contains("weights do not fit the model") && e.contains("weight"), "names tensors: {e}");
    assert!(!out.exists(), "nothing written");

    // Not a checkpoint at all.
    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not weights").unwrap();
    let o = predict(
        &["--weights"],
        &[
            &garbage,
            Path::new("--data-dir"),
            few,
            Path::new("--out"),
            &out,
            Path::new("--config"),
            &run.join("config.yaml"),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(&garbage.display().to_string()), "{}", stderr(&o));
}

#[test]
fn out_equal_to_the_tile_directory_is_refused() {
    let (_, _, _, few) = run();
    let before = npz_files(few);
    let o = predict_into(few, few, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--out") && stderr(&o).contains("--data-dir"), "{}", stderr(&o));
    // The same directory spelled differently.
    let o = predict_into(few, &few.join("."), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(npz_files(few), before);
    assert!(!few.join("predict.json").exists());
}

#[test]
fn the_split_flag_selects_manifest_splits() {
    let (tmp, tiles, _, _) = run();
    let manifest = tiling::tiler::Manifest::read(&tiles.join("manifest.json")).unwrap();
    let test: Vec<&str> =
        manifest.tiles.iter().filter(|t| t.split == tiling::Split::Test).map(|t| t.npz.as_str()).collect();
    assert!(!test.is_empty());
    let out = tmp.path().join("opt_v2_e");
    let o = predict_into(tiles, &out, &["--split", "test", "--timesteps", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> =
        npz_files(&out).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let mut expect: Vec<String> = test.iter().map(|s| s.to_string()).collect();
    expect.sort();
    assert_eq!(names, expect);
    let report: PredictReport = serde_json::from_slice(&std::fs::read(out.join("predict.json")).unwrap()).unwrap();
    assert_eq!(report.runs[0].timesteps, 1);
    // More DDIM steps than the denoiser was trained with is a config error naming the key.
    let o = predict_into(tiles, &tmp.path().join("opt_v2_f"), &["--timesteps", "100000"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("model.timesteps"), "{}", stderr(&o));
}

#[test]
fn help_lists_predict_next_to_lr_find() {
    let o = Command::new(env!("CARGO_BIN_EXE_stage1")).arg("--help").output().unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    let commands = help.split("Commands:").nth(1).unwrap_or_else(|| panic!("no command list:\n{help}"));
    assert!(commands.contains("lr-find") && commands.contains("predict"), "{help}");
    // Training flags are not predict's: a flag of the training command line is refused.
    let o = predict(&["--steps", "3"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn pixels_with_non_finite_inputs_keep_their_prediction() {
    let (tmp, _, _, few) = run();
    let data = tmp.path().join("holes");
    std::fs::create_dir(&data).unwrap();
    let first = &npz_files(few)[0];
    let mut tile = tiling::npz::read_tile(first).unwrap();
    // A NaN block in VV and an infinite one in B4: the estimate is still finite there.
    let w = tile.width;
    for r in 0..8 {
        for c in 0..8 {
            tile.s1[r * w + c] = f32::NAN;
            tile.s2[2 * tile.height * w + (r + 10) * w + c] = f32::INFINITY;
        }
    }
    let path = tiling::npz::write_tile(&data, &tile, tiling::npz::Dtype::F32).unwrap();
    let out = tmp.path().join("opt_v2_holes");
    let o = predict_into(&data, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = read_estimate(&estimate_path(&out, &path)).unwrap();
    assert_eq!(e.data.len(), 4 * tile.height * w);
    assert!(e.data.iter().all(|v| v.is_finite()), "every pixel predicted");
}

#[test]
fn a_damaged_tile_is_named_before_anything_is_written() {
    let (tmp, _, _, few) = run();
    let data = tmp.path().join("damaged");
    std::fs::create_dir(&data).unwrap();
    for e in std::fs::read_dir(few).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
    }
    let victim = npz_files(&data)[2].clone();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp.path().join("opt_v2_damaged");
    let o = predict_into(&data, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(&victim.display().to_string()), "{}", stderr(&o));
    assert!(!out.exists(), "headers are checked before the first estimate is written");
}

#[test]
fn a_config_in_the_seed_layout_is_read_with_its_aliases() {
    let (tmp, _, _, few) = run();
    // configs/train/stage1.lowvr.yaml at test size with another `system.seed` (an alias of `seed`).
    let yaml = std::fs::read_to_string(LOWVR).unwrap();
    assert!(yaml.contains("size: tiny") && yaml.contains("seed: 42"));
    let cfg = tmp.path().join("lowvr_test.yaml");
    std::fs::write(&cfg, yaml.replace("size: tiny", "size: test").replace("seed: 42", "seed: 7")).unwrap();
    let out = tmp.path().join("opt_v2_lowvr");
    let o = predict_into(few, &out, &["--config", cfg.to_str().unwrap(), "--batch-size", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: PredictReport = serde_json::from_slice(&std::fs::read(out.join("predict.json")).unwrap()).unwrap();
    let r = &report.runs[0];
    assert_eq!((r.seed, r.timesteps, r.tiles), (7, 10, 3), "system.seed and model.timesteps of the file");
    assert_eq!(r.config, cfg);
}
