//! `cargo xtask`: project automation in Rust, so it runs the same on every machine.
//!
//! - `ci [--stage NAME]`: format check, clippy with warnings denied, tests, smoke runs.
//! - `smoke [--stage NAME]`: overfit one batch per stage on the CPU and check the loss drop.
//! - `demo [--stage NAME]`: train each stage on its demo config and print its validation metrics;
//!   `--stage tune` runs hoser-distill's reference hyper-parameter study on the bundled data.
//! - `check-features`: every stage package built alone resolves its dependencies' features as
//!   the workspace does (one build serves every stage); the first step of `ci`.
//! - `check-backends`: build the binaries with the `wgpu` and `cuda` features (own target dir).
//! - `bench [FILTER]`: criterion benchmarks of training steps.
//! - `tile -- ARGS`: build `trainyard-tile` in release and run it with ARGS (scenes or
//!   `--synthetic N` → NPZ tiles, sidecars, manifest; see `trainyard-tile --help`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use serde_json::Value;

mod features;

/// A stage registered with the automation: its package, binary and smoke config.
struct StageInfo {
    name: &'static str,
    package: &'static str,
    bin: &'static str,
    /// The binary's subcommand that runs the stage (`hoser-distill teacher`), if any.
    subcommand: Option<&'static str>,
    smoke_config: &'static str,
    /// The config `cargo xtask demo` trains with (the budget README's figures come from).
    demo_config: Option<&'static str>,
    /// Library crates this stage's CI job also tests (`ci --stage`).
    libraries: &'static [&'static str],
    /// Synthetic tiles the stage trains on in smoke and demo runs: `trainyard-tile` arguments for
    /// the training tiles and, for the demo, for held-out validation tiles of another seed.
    tiles: Option<Tiles>,
    /// Extra inputs a smoke or demo run needs beyond the tiles (stage 3: opt_v2 estimates and a
    /// stage-1 base; hoser-distill: a teacher): returns the flags that pass them.
    inputs: Option<Inputs>,
}

/// Prepares a stage's extra inputs for a run (over its tiles, for a stage that has some); returns
/// the flags passing them.
type Inputs = fn(Run, Option<&RunTiles>) -> Result<Vec<String>>;

/// Which kind of run [`StageInfo::inputs`] prepares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    Smoke,
    Demo,
}

/// The tile directories of a smoke or demo run.
struct RunTiles {
    train: PathBuf,
    val: Option<PathBuf>,
}

/// `trainyard-tile` arguments (without `--out`) for a stage's smoke and demo data.
struct Tiles {
    smoke: &'static [&'static str],
    demo_train: &'static [&'static str],
    demo_val: &'static [&'static str],
}

/// The synthetic tiles of the image stages (stage 1, and stage 3, which grounds stage 1's
/// predictions on the same scenes).
const IMAGE_TILES: Tiles = Tiles {
    smoke: &["--synthetic", "6", "--synthetic-size", "128", "128", "--size", "64"],
    demo_train: &["--synthetic", "12", "--synthetic-size", "256", "256", "--size", "64", "--synthetic-seed", "1"],
    demo_val: &["--synthetic", "3", "--synthetic-size", "256", "256", "--size", "64", "--synthetic-seed", "2"],
};

/// Every stage, in registration order. The toy task comes first; each later stage adds itself.
const STAGES: &[StageInfo] = &[
    StageInfo {
        name: "toy",
        package: "trainer",
        bin: "trainyard-toy",
        subcommand: None,
        smoke_config: "configs/smoke/toy.yaml",
        demo_config: None,
        libraries: &["checkpoints", "schedulers", "tune"],
        tiles: None,
        inputs: None,
    },
    StageInfo {
        name: "hoser-vanilla",
        package: "hoser-vanilla",
        bin: "hoser-vanilla",
        subcommand: None,
        smoke_config: "configs/smoke/hoser-vanilla.yaml",
        demo_config: Some("configs/hoser/helsinki_test.yaml"),
        libraries: &["hoser"],
        tiles: None,
        inputs: None,
    },
    StageInfo {
        name: "stage1",
        package: "stage1",
        bin: "stage1",
        subcommand: None,
        smoke_config: "configs/smoke/stage1.yaml",
        demo_config: Some("configs/demo/stage1.yaml"),
        libraries: &["sarmodels", "tiling", "losses"],
        tiles: Some(IMAGE_TILES),
        inputs: None,
    },
    StageInfo {
        name: "stage3",
        package: "stage3",
        bin: "stage3",
        subcommand: None,
        smoke_config: "configs/smoke/stage3.yaml",
        demo_config: Some("configs/demo/stage3.yaml"),
        libraries: &["sarmodels", "tiling", "losses"],
        // Stage 1's tiles: the demo grounds stage 1's own predictions on them.
        tiles: Some(IMAGE_TILES),
        inputs: Some(stage3_inputs),
    },
    StageInfo {
        name: "lmtad-teacher",
        package: "hoser-distill",
        bin: "hoser-distill",
        subcommand: Some("teacher"),
        smoke_config: "configs/smoke/lmtad-teacher.yaml",
        demo_config: Some("configs/lmtad/helsinki_test.yaml"),
        libraries: &["hoser"],
        tiles: None,
        inputs: None,
    },
    StageInfo {
        name: "hoser-distill",
        package: "hoser-distill",
        bin: "hoser-distill",
        subcommand: None,
        smoke_config: "configs/smoke/hoser-distill.yaml",
        demo_config: Some("configs/hoser/helsinki_test.yaml"),
        libraries: &["hoser", "hoser-vanilla"],
        tiles: None,
        inputs: Some(distill_inputs),
    },
];

/// Per-band offset (B2, B3, B4, B8) of stage 3's smoke estimates: a stage 2 whose colour
/// calibration is off, an error the grounding can learn to remove on one batch.
const SMOKE_OPT_V2_OFFSET: [f32; 4] = [0.05, 0.04, 0.06, 0.08];

/// Stage 3's inputs. Smoke: `opt_v2 = truth + SMOKE_OPT_V2_OFFSET` for every tile, written in the
/// stage-2 format (the smoke config trains on a random base). Demo: the honest pipeline — stage 1's
/// demo run (trained first unless `runs/demo/stage1` holds its outputs), `stage1 predict` on the
/// training and the held-out tiles, and its `base_model.safetensors` as `--pretrained`.
fn stage3_inputs(kind: Run, tiles: Option<&RunTiles>) -> Result<Vec<String>> {
    let tiles = tiles.context("stage 3 runs on tiles")?;
    match kind {
        Run::Smoke => {
            let dir = target_dir().join("tiles").join("stage3-smoke-opt_v2");
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut n = 0;
            for entry in
                std::fs::read_dir(&tiles.train).with_context(|| format!("reading {}", tiles.train.display()))?
            {
                let path = entry?.path();
                if path.extension().is_none_or(|e| e != "npz") {
                    continue;
                }
                let tile = tiling::npz::read_tile(&path).with_context(|| format!("reading {}", path.display()))?;
                let hw = tile.height * tile.width;
                let data: Vec<f32> = tile.s2.iter().enumerate().map(|(i, v)| v + SMOKE_OPT_V2_OFFSET[i / hw]).collect();
                let out = tiling::stage2::estimate_path(&dir, &path);
                tiling::stage2::write_estimate(&out, &data, tile.height, tile.width)
                    .with_context(|| format!("writing {}", out.display()))?;
                n += 1;
            }
            eprintln!(
                "xtask: smoke stage3: {n} estimates opt_v2 = truth + {SMOKE_OPT_V2_OFFSET:?} in {}",
                dir.display()
            );
            Ok(vec!["--stage2-dir".into(), dir.display().to_string()])
        }
        Run::Demo => {
            let stage1 = root().join("runs").join("demo").join("stage1");
            let (base, best) = (stage1.join("base_model.safetensors"), stage1.join("best_model.safetensors"));
            if !(base.is_file() && best.is_file()) {
                eprintln!("xtask: demo stage3: no stage-1 demo run in {}; training it first", stage1.display());
                demo(Some("stage1"))?;
            } else {
                build_stage_binaries(Some("stage1"))?;
            }
            let dir = root().join("runs").join("demo").join("stage3-opt_v2");
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
            }
            for from in std::iter::once(&tiles.train).chain(tiles.val.as_ref()) {
                let mut cmd = Command::new(target_dir().join("debug").join("stage1"));
                cmd.current_dir(root()).arg("predict").arg("--weights").arg(&best).arg("--data-dir").arg(from);
                cmd.arg("--out").arg(&dir);
                run(cmd, &format!("stage1 predict {}", from.display()))?;
            }
            Ok(vec![
                "--stage2-dir".into(),
                dir.display().to_string(),
                "--pretrained".into(),
                base.display().to_string(),
            ])
        }
    }
}

/// Epochs of the smoke run's teacher (on the teacher's demo config): enough to beat the unigram
/// baseline (validation perplexity 41 against 139), a few seconds.
const SMOKE_TEACHER_EPOCHS: &str = "10";

/// hoser-distill's teacher, trained by the `lmtad-teacher` stage beside the distilled run's
/// outputs and passed as `--teacher`. Smoke: the teacher's demo config for
/// [`SMOKE_TEACHER_EPOCHS`] epochs (in `target/smoke/hoser-distill-teacher`). Demo: the teacher's
/// whole demo run (in `runs/demo/hoser-distill-teacher`).
fn distill_inputs(kind: Run, _tiles: Option<&RunTiles>) -> Result<Vec<String>> {
    let teacher = stages(Some("lmtad-teacher"))?[0];
    let config = teacher.demo_config.context("the lmtad-teacher stage has a demo config")?;
    let (dir, epochs) = match kind {
        Run::Smoke => (target_dir().join("smoke").join("hoser-distill-teacher"), Some(SMOKE_TEACHER_EPOCHS)),
        Run::Demo => (root().join("runs").join("demo").join("hoser-distill-teacher"), None),
    };
    let mut cmd = stage_run(teacher, config, &dir)?;
    cmd.args(["--set", "logging.log_dir=null", "--set", "logging.tensorboard_dir=null"]);
    if let Some(n) = epochs {
        cmd.args(["--epochs", n]);
    }
    run(cmd, "hoser-distill teacher")?;
    Ok(vec!["--teacher".into(), dir.display().to_string()])
}

#[derive(Parser)]
#[command(about = "trainyard project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Format check, clippy (warnings denied), tests and smoke runs: what CI runs.
    Ci {
        /// Only this stage's packages (for per-stage CI jobs).
        #[arg(long)]
        stage: Option<String>,
    },
    /// Overfit one batch per stage on the CPU and check the loss falls by the configured factor.
    Smoke {
        /// Only this stage.
        #[arg(long)]
        stage: Option<String>,
    },
    /// Train each stage on its demo config (CPU, minutes) into runs/demo/<stage> and print the
    /// final and best validation metrics: the figures README quotes.
    Demo {
        /// Only this stage (`tune`: hoser-distill's reference hyper-parameter study, a few minutes).
        #[arg(long)]
        stage: Option<String>,
    },
    /// Check that every stage package built on its own resolves each dependency with the
    /// workspace's features (so one build serves every stage; also run by `ci`).
    CheckFeatures,
    /// Build every binary with the wgpu and cuda features, in target/backends.
    CheckBackends,
    /// Run the criterion benchmarks (training steps, checkpoint save/load), optionally filtered by name.
    Bench {
        /// Benchmark name filter passed to criterion.
        filter: Option<String>,
    },
    /// Cut scenes into NPZ tiles: builds `trainyard-tile` in release and runs it with the arguments
    /// after `--`, e.g. `cargo xtask tile -- --synthetic 3 --out tiles` or
    /// `cargo xtask tile -- --scenes scenes.csv --out tiles` (`cargo xtask tile -- --help` for all).
    #[command(trailing_var_arg = true)]
    Tile {
        /// Arguments passed to trainyard-tile (relative paths are resolved from the current directory).
        #[arg(allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

/// The workspace root: the nearest directory above the current one whose `Cargo.toml` has a
/// `[workspace]` table. Found at run time, not from the path xtask was compiled at: with a
/// target directory shared between checkouts, that path can be another checkout's.
fn root() -> PathBuf {
    let start = std::env::current_dir().expect("a current directory");
    start
        .ancestors()
        .find(|d| std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]")))
        .unwrap_or(&start)
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let start = Instant::now();
    eprintln!("xtask: {what}: {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    eprintln!("xtask: {what} took {:.1}s", start.elapsed().as_secs_f64());
    ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

fn stages(filter: Option<&str>) -> Result<Vec<&'static StageInfo>> {
    let chosen: Vec<_> = STAGES.iter().filter(|s| filter.is_none_or(|f| s.name == f)).collect();
    if chosen.is_empty() {
        let names: Vec<_> = STAGES.iter().map(|s| s.name).collect();
        bail!("unknown stage {:?}; registered stages: {}", filter.unwrap_or(""), names.join(", "));
    }
    Ok(chosen)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// The cargo package arguments of a stage's share of CI: `-p` for its package and its libraries,
/// or `--workspace` for every stage.
fn package_args(stage: Option<&str>) -> Result<Vec<String>> {
    let chosen = stages(stage)?;
    Ok(match stage {
        None => vec!["--workspace".into()],
        Some(_) => {
            let mut v: Vec<String> = Vec::new();
            for p in chosen.iter().flat_map(|s| std::iter::once(s.package).chain(s.libraries.iter().copied())) {
                if !v.iter().any(|x| x == p) {
                    v.extend(["-p".to_string(), p.to_string()]);
                }
            }
            v
        }
    })
}

fn ci(stage: Option<&str>) -> Result<()> {
    let package_args = package_args(stage)?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt, "format check")?;
    features::check(&stage_packages(stage)?)?;

    let mut clippy = cargo();
    clippy.args(["clippy", "--locked", "--all-targets"]).args(&package_args).args(["--", "-D", "warnings"]);
    run(clippy, "clippy")?;

    let mut test = cargo();
    test.args(["test", "--locked"]).args(&package_args);
    let (passed, failed) = run_tests(test)?;

    let smoked = smoke(stage)?;
    // One plain closing line for whoever reads the log's end.
    println!("ci: {} passed, {failed} failed", passed + smoked);
    Ok(())
}

/// The distinct packages of the chosen stages (each builds a stage binary).
fn stage_packages(stage: Option<&str>) -> Result<Vec<&'static str>> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in stages(stage)? {
        if !out.contains(&s.package) {
            out.push(s.package);
        }
    }
    Ok(out)
}

/// Runs `cargo test`, echoing its output, and adds up its `test result:` lines.
fn run_tests(mut cmd: Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let start = Instant::now();
    eprintln!("xtask: tests: {cmd:?}");
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().context("starting tests")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait().context("waiting for tests")?;
    eprintln!("xtask: tests took {:.1}s", start.elapsed().as_secs_f64());
    ensure!(status.success(), "tests failed ({status}): {passed} passed, {failed} failed");
    Ok((passed, failed))
}

/// Builds the binaries of `stage` (every stage: `None`) the way `ci`'s `cargo test` does (same
/// packages, same feature unification, dev-dependencies included), so after the tests this is a
/// no-op instead of a second build of burn's dependency tree with other features, and a one-stage
/// run builds only that stage's packages.
fn build_stage_binaries(stage: Option<&str>) -> Result<()> {
    let mut build = cargo();
    build.args(["test", "--locked", "--no-run"]).args(package_args(stage)?);
    run(build, "build stage binaries")
}

/// The debug binary of stage `s` with `config`, writing into `out` (cleared first), plain progress.
fn stage_run(s: &StageInfo, config: &str, out: &Path) -> Result<Command> {
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let mut cmd = Command::new(target_dir().join("debug").join(s.bin));
    cmd.current_dir(root());
    cmd.args(s.subcommand);
    cmd.arg("--config").arg(config).arg("--output-dir").arg(out);
    cmd.args(["--set", "logging.progress=plain"]);
    Ok(cmd)
}

/// Runs the smoke configs; returns how many stages passed.
fn smoke(stage: Option<&str>) -> Result<u64> {
    build_stage_binaries(stage)?;
    let mut passed = 0;
    for s in stages(stage)? {
        let out = target_dir().join("smoke").join(s.name);
        let mut cmd = stage_run(s, s.smoke_config, &out)?;
        let mut tiles = None;
        if let Some(t) = &s.tiles {
            let dir = synthetic_tiles(&format!("{}-smoke", s.name), t.smoke)?;
            cmd.args(["--set", &format!("data.data_dir={}", dir.display())]);
            tiles = Some(RunTiles { train: dir, val: None });
        }
        if let Some(inputs) = s.inputs {
            cmd.args(inputs(Run::Smoke, tiles.as_ref())?);
        }
        run(cmd, &format!("smoke {}", s.name))?;
        check_smoke(s, &out)?;
        passed += 1;
    }
    Ok(passed)
}

/// Renders synthetic tiles with the debug `trainyard-tile` (built with the tests) into
/// `target/tiles/<name>` unless a manifest from the same arguments is already there.
fn synthetic_tiles(name: &str, args: &[&str]) -> Result<PathBuf> {
    let dir = target_dir().join("tiles").join(name);
    let stamp = dir.join("xtask-args.txt");
    let wanted = args.join(" ");
    if dir.join("manifest.json").is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let mut cmd = Command::new(target_dir().join("debug").join("trainyard-tile"));
    cmd.args(args).arg("--out").arg(&dir).stdout(std::process::Stdio::null());
    run(cmd, &format!("synthetic tiles {name}"))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(dir)
}

/// The study `cargo xtask demo --stage tune` runs: hoser-distill's reference search
/// (`configs/hoser/tune_distill.yaml`: CMA-ES, Hyperband(5, epochs, 3), 12 trials) over the
/// Helsinki trips with the reference tuner's 8 epochs per trial.
const TUNE_DEMO_EPOCHS: &str = "8";

/// `demo --stage tune`: the demo teacher, then the study in `runs/demo/tune` (cleared first).
fn tune_demo() -> Result<()> {
    build_stage_binaries(Some("hoser-distill"))?;
    let distill = stages(Some("hoser-distill"))?[0];
    let teacher = distill_inputs(Run::Demo, None)?;
    let study = root().join("runs").join("demo").join("tune");
    if study.exists() {
        std::fs::remove_dir_all(&study).with_context(|| format!("clearing {}", study.display()))?;
    }
    let mut cmd = Command::new(target_dir().join("debug").join(distill.bin));
    cmd.current_dir(root())
        .args(["tune", "--config", distill.demo_config.context("hoser-distill has a demo config")?])
        .args(["--epochs", TUNE_DEMO_EPOCHS, "--space", "configs/hoser/tune_distill.yaml", "--study"])
        .arg(&study)
        .args(teacher);
    let start = Instant::now();
    run(cmd, "demo tune")?;
    let journal = study.join("journal.jsonl");
    let text = std::fs::read_to_string(&journal).with_context(|| format!("reading {}", journal.display()))?;
    let events: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    let best = events
        .iter()
        .filter(|e| e["event"] == "completed")
        .filter_map(|e| e["value"].as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    eprintln!(
        "xtask: demo tune: {} trials ({} complete, {} pruned, {} failed), best val_next_step_acc {best:.4}, {:.0} s; \
         results in {}",
        count("trial_started"),
        count("completed"),
        count("pruned"),
        count("failed"),
        start.elapsed().as_secs_f64(),
        study.display()
    );
    Ok(())
}

/// Trains every stage that has a demo config and prints its validation metrics.
fn demo(stage: Option<&str>) -> Result<()> {
    if stage == Some("tune") {
        return tune_demo();
    }
    build_stage_binaries(stage)?;
    for s in stages(stage)? {
        let Some(config) = s.demo_config else {
            eprintln!("xtask: demo: {} has no demo config", s.name);
            continue;
        };
        let out = root().join("runs").join("demo").join(s.name);
        let mut cmd = stage_run(s, config, &out)?;
        cmd.args(["--set", "logging.log_dir=null", "--set", "logging.tensorboard_dir=null"]);
        let mut tiles = None;
        if let Some(t) = &s.tiles {
            let train = synthetic_tiles(&format!("{}-demo-train", s.name), t.demo_train)?;
            let val = synthetic_tiles(&format!("{}-demo-val", s.name), t.demo_val)?;
            cmd.args(["--set", &format!("data.data_dir={}", train.display())]);
            cmd.args(["--set", &format!("data.val_dir={}", val.display())]);
            tiles = Some(RunTiles { train, val: Some(val) });
        }
        if let Some(inputs) = s.inputs {
            cmd.args(inputs(Run::Demo, tiles.as_ref())?);
        }
        let start = Instant::now();
        run(cmd, &format!("demo {}", s.name))?;
        let secs = start.elapsed().as_secs_f64();
        let jsonl = out.join("training.jsonl");
        let text = std::fs::read_to_string(&jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
        let validations: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "validation")
            .collect();
        let show = |e: &Value| {
            let metrics = e["metrics"].as_object().map(|m| {
                m.iter().map(|(k, v)| format!("{k}={:.4}", v.as_f64().unwrap_or(f64::NAN))).collect::<Vec<_>>()
            });
            format!("step {}: {}", e["step"], metrics.unwrap_or_default().join(" "))
        };
        ensure!(!validations.is_empty(), "demo {}: no validation in {}", s.name, jsonl.display());
        eprintln!("xtask: demo {} ({config}, {secs:.0} s, outputs in {})", s.name, out.display());
        if let Some(best) = validations.iter().rev().find(|e| e["is_best"] == true) {
            eprintln!("xtask: demo {}: best  {}", s.name, show(best));
        }
        eprintln!("xtask: demo {}: final {}", s.name, show(validations.last().expect("non-empty")));
        // Stage 3: the grounded output against its input, on the held-out tiles.
        let last = &validations.last().expect("non-empty")["metrics"];
        if last.get("psnr_v2").is_some() {
            let m = |k: &str| last[k].as_f64().unwrap_or(f64::NAN);
            eprintln!(
                "xtask: demo {}: opt_v2 -> opt_v3 on held-out tiles: PSNR {:.2} -> {:.2} dB, SSIM {:.4} -> {:.4}, \
                 SAR agreement {:.4} -> {:.4} ({:+.4})",
                s.name,
                m("psnr_v2"),
                m("psnr"),
                m("ssim_v2"),
                m("ssim"),
                m("sar_agreement_v2"),
                m("sar_agreement"),
                m("sar_agreement_improvement")
            );
        }
    }
    Ok(())
}

/// Reads the run's own outputs and checks the loss fell by the factor its config states.
fn check_smoke(s: &StageInfo, out: &Path) -> Result<()> {
    let config_path = out.join("config.yaml");
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let config: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    let expected = config["debug"]["expected_loss_drop"]
        .as_f64()
        .with_context(|| format!("{}: smoke config must set debug.expected_loss_drop", s.smoke_config))?;
    let jsonl = out.join("training.jsonl");
    let text = std::fs::read_to_string(&jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
    let losses: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "train_step")
        .filter_map(|e| e["loss"].as_f64())
        .collect();
    ensure!(losses.len() >= 2, "{}: fewer than two train steps logged", jsonl.display());
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    let factor = first / last;
    eprintln!(
        "xtask: smoke {}: loss {first:.6} -> {last:.6} over {} steps (x{factor:.1}, needs x{expected})",
        s.name,
        losses.len()
    );
    ensure!(factor >= expected, "smoke {}: loss fell only x{factor:.2}, config expects x{expected}", s.name);
    Ok(())
}

fn check_backends() -> Result<()> {
    let dir = target_dir().join("backends");
    let mut packages: Vec<&str> = STAGES.iter().map(|s| s.package).collect();
    packages.dedup();
    let mut build = cargo();
    build.env("CARGO_TARGET_DIR", &dir).env("CUDARC_CUDA_VERSION", "13000");
    build.args(["build", "--locked", "--release", "--bins"]);
    for p in packages {
        build.args(["-p", p]);
    }
    build.args(["--features", "trainer/wgpu,trainer/cuda"]);
    run(build, "build with wgpu + cuda")?;
    eprintln!("xtask: binaries with every backend are in {}", dir.join("release").display());
    Ok(())
}

fn bench(filter: Option<&str>) -> Result<()> {
    let mut b = cargo();
    b.args(["bench", "--locked", "-p", "trainer", "-p", "checkpoints"]);
    if let Some(f) = filter {
        b.args(["--", f]);
    }
    run(b, "benchmarks")
}

/// `cargo run --release -p tiling --bin trainyard-tile -- ARGS`, from the caller's directory (so
/// relative paths in ARGS mean what they say), exiting with the tiler's own status (2: bad input,
/// 1: cannot write the output).
fn tile(args: &[String]) -> Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("run").arg("--locked").arg("--release").arg("--manifest-path").arg(root().join("Cargo.toml"));
    cmd.args(["-p", "tiling", "--bin", "trainyard-tile", "--"]).args(args);
    eprintln!("xtask: tile: {cmd:?}");
    let status = cmd.status().context("starting cargo run for trainyard-tile")?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Ci { stage } => ci(stage.as_deref()),
        Cmd::Smoke { stage } => smoke(stage.as_deref()).map(drop),
        Cmd::Demo { stage } => demo(stage.as_deref()),
        Cmd::CheckFeatures => features::check(&stage_packages(None)?),
        Cmd::CheckBackends => check_backends(),
        Cmd::Bench { filter } => bench(filter.as_deref()),
        Cmd::Tile { args } => tile(&args),
    }
}
