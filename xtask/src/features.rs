//! `cargo xtask check-features` (also the first step of `ci`): building one stage package must
//! not compile anything the workspace's build did not — every unit (package, target, mode,
//! features, profile) of `cargo build -p STAGE` must be a unit of `cargo build` of the workspace,
//! in the dev and the release profile.
//!
//! Cargo unifies features per package selection, for target code and for host code (build
//! scripts, proc-macros) separately: when stage 1 alone asks less of a shared crate (flate2,
//! memchr, …) than the workspace does, `cargo build -p stage1` compiles another copy of it and of
//! everything above it (burn and its stack: minutes). `crates/workspace-hack` holds the union;
//! this check reads cargo's unit graph (`--unit-graph`, the exact list of compilations, computed
//! without building; an unstable flag, enabled with `RUSTC_BOOTSTRAP=1` for this read-only query)
//! and names the first units a stage would compile anew.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One compilation: package id, target name and kinds, mode, features, profile (as JSON).
pub type Unit = (String, String, String, String, String, String);

/// The units of a `--unit-graph` document, workspace members' own units left out (a stage's own
/// crates are the ones it is expected to compile).
pub fn units(graph: &Value) -> Result<BTreeSet<Unit>> {
    let list = graph["units"].as_array().context("a unit graph has `units`")?;
    let text = |v: &Value| v.to_string();
    Ok(list
        .iter()
        .filter(|u| !u["pkg_id"].as_str().unwrap_or("").starts_with("path+"))
        .map(|u| {
            (
                u["pkg_id"].as_str().unwrap_or("").to_string(),
                u["target"]["name"].as_str().unwrap_or("").to_string(),
                text(&u["target"]["kind"]),
                text(&u["mode"]),
                text(&u["features"]),
                text(&u["profile"]),
            )
        })
        .collect())
}

/// The units of `selection` that are not units of `workspace`, one line each.
pub fn differences(selection: &BTreeSet<Unit>, workspace: &BTreeSet<Unit>) -> Vec<String> {
    selection
        .difference(workspace)
        .map(|(pkg, target, kind, mode, features, profile)| {
            let name = pkg.rsplit(['#', '/']).next().unwrap_or(pkg);
            let opt = serde_json::from_str::<Value>(profile).map(|p| p["opt_level"].to_string()).unwrap_or_default();
            format!("{name} ({target} {kind} {mode}, opt-level {opt}) with features {features}")
        })
        .collect()
}

fn unit_graph(profile: &[&str], selection: &[&str]) -> Result<BTreeSet<Unit>> {
    let mut cmd = super::cargo();
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .args(["build", "--locked", "-Z", "unstable-options", "--unit-graph"])
        .args(profile)
        .args(selection);
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let graph: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("reading the output of {cmd:?}"))?;
    units(&graph)
}

/// Fails when building one of `packages` alone would compile a unit the workspace's build does not.
pub fn check(packages: &[&str]) -> Result<()> {
    let mut problems = Vec::new();
    for (name, profile) in [("dev", &[][..]), ("release", &["--release"][..])] {
        let workspace = unit_graph(profile, &[])?;
        for package in packages {
            let extra = differences(&unit_graph(profile, &["-p", package])?, &workspace);
            let shown = extra.len().min(5);
            for d in &extra[..shown] {
                problems.push(format!("  cargo build --profile {name} -p {package}: {d}"));
            }
            if extra.len() > shown {
                problems.push(format!("  cargo build --profile {name} -p {package}: … {} more", extra.len() - shown));
            }
        }
    }
    if problems.is_empty() {
        eprintln!(
            "xtask: check-features: {} stage packages, each built alone, compile only units of the workspace's build \
             (dev and release)",
            packages.len()
        );
        return Ok(());
    }
    bail!(
        "a stage built on its own would compile shared crates the workspace's build does not (other features):\n{}\n\
         add the workspace's features of these crates to crates/workspace-hack/Cargo.toml ([dependencies] for \
         target code, [build-dependencies] for build scripts and proc-macros)",
        problems.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(units: &[(&str, &[&str], u8)]) -> Value {
        let units: Vec<Value> = units
            .iter()
            .map(|(pkg, features, opt)| {
                serde_json::json!({
                    "pkg_id": pkg, "target": {"name": pkg.rsplit('#').next().unwrap().split('@').next().unwrap(), "kind": ["lib"]},
                    "mode": "build", "features": features, "profile": {"name": "release", "opt_level": opt.to_string()},
                    "dependencies": []
                })
            })
            .collect();
        serde_json::json!({"version": 1, "units": units, "roots": []})
    }

    const MEMCHR: &str = "registry+https://github.com/rust-lang/crates.io-index#memchr@2.8.3";
    const FLATE2: &str = "registry+https://github.com/rust-lang/crates.io-index#flate2@1.1.10";

    #[test]
    fn a_selection_of_the_workspaces_units_has_no_difference() {
        let ws = units(&graph(&[
            (MEMCHR, &["alloc", "std"], 0),
            (MEMCHR, &["alloc", "default", "std"], 3),
            (FLATE2, &["zlib-rs"], 3),
        ]))
        .unwrap();
        assert!(differences(&ws, &ws).is_empty());
        let fewer = units(&graph(&[(MEMCHR, &["alloc", "std"], 0)])).unwrap();
        assert!(differences(&fewer, &ws).is_empty());
        // Members' own units are the stage's to compile.
        let own = units(&graph(&[("path+file:///work/main/crates/stage1#0.1.0", &[], 3)])).unwrap();
        assert!(own.is_empty());
    }

    #[test]
    fn another_feature_set_or_the_host_copy_with_the_target_features_is_named() {
        let ws = units(&graph(&[(MEMCHR, &["alloc", "std"], 0), (MEMCHR, &["alloc", "default", "std"], 3)])).unwrap();
        // The host (opt-level 0) copy without features: what stage 1 compiled before the fix.
        let stage = units(&graph(&[(MEMCHR, &[], 0)])).unwrap();
        let d = differences(&stage, &ws);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].starts_with("memchr@2.8.3 (memchr [\"lib\"] \"build\", opt-level \"0\") with features []"),
            "{}",
            d[0]
        );
        // Target features on the host copy are another compilation too.
        let mixed = units(&graph(&[(MEMCHR, &["alloc", "default", "std"], 0)])).unwrap();
        assert_eq!(differences(&mixed, &ws).len(), 1);
    }
}
