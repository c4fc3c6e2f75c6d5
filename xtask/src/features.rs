//! `cargo xtask check-features` (also the first step of `ci`): every stage package, built on its
//! own, must resolve every dependency with the features the whole workspace resolves it with.
//!
//! Cargo unifies features per package selection: when stage 1 alone asks less of a shared crate
//! (flate2, serde, half, …) than the workspace does, `cargo build -p stage1` builds another copy
//! of it and of everything above it (burn and its stack: minutes). `crates/workspace-hack`
//! holds the union; this check compares `cargo tree -e normal,build -f '{p}|{f}'` of each stage
//! with the workspace's and names what differs, so a dependency change cannot bring the second
//! build back unnoticed.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};

/// Each package (`name version`, with `(proc-macro)` or a path when cargo prints one) and the
/// feature sets it is built with (a crate used on the host and the target can appear with two).
pub type Resolution = BTreeMap<String, BTreeSet<String>>;

/// Parses `cargo tree --prefix none -f '{p}|{f}'` output.
pub fn parse(tree: &str) -> Resolution {
    let mut out = Resolution::new();
    for line in tree.lines() {
        let Some((package, features)) = line.trim().split_once('|') else { continue };
        let features = features.trim_end_matches(" (*)").trim();
        out.entry(package.trim_end_matches(" (*)").trim().to_string()).or_default().insert(features.to_string());
    }
    out
}

/// Which packages `selection` resolves otherwise than `workspace`: one line each.
///
/// `exact`: the package's feature sets must be the workspace's (normal edges: what the stage's
/// own code links, where one differing feature rebuilds everything above it). Otherwise each of
/// the selection's feature sets must be one the workspace builds (build-dependency edges: `cargo
/// tree` does not say which copy of a crate is the host one, and a selection that needs only
/// one of the workspace's copies reuses it).
pub fn differences(selection: &Resolution, workspace: &Resolution, exact: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (package, features) in selection {
        match workspace.get(package) {
            Some(ws) if (exact && features == ws) || (!exact && features.is_subset(ws)) => {}
            Some(ws) => {
                out.push(format!("{package}: built with [{}], the workspace with [{}]", show(features), show(ws)))
            }
            None => out.push(format!("{package}: not in the workspace's build")),
        }
    }
    out
}

fn show(sets: &BTreeSet<String>) -> String {
    sets.iter().map(|s| format!("{{{s}}}")).collect::<Vec<_>>().join(" ")
}

fn tree(edges: &str, selection: &[&str]) -> Result<Resolution> {
    let mut cmd = super::cargo();
    cmd.args(["tree", "--locked", "-e", edges, "--prefix", "none", "-f", "{p}|{f}"]).args(selection);
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Fails when a stage package, built alone, resolves any crate with other features than the
/// workspace does.
pub fn check(packages: &[&str]) -> Result<()> {
    let mut problems = Vec::new();
    for (edges, exact) in [("normal", true), ("normal,build", false)] {
        let workspace = tree(edges, &["--workspace"])?;
        for package in packages {
            for d in differences(&tree(edges, &["-p", package])?, &workspace, exact) {
                problems.push(format!("  cargo build -p {package} ({edges} dependencies): {d}"));
            }
        }
    }
    if problems.is_empty() {
        eprintln!("xtask: check-features: {} stage packages resolve as the workspace does", packages.len());
        return Ok(());
    }
    bail!(
        "a stage built on its own would rebuild shared crates with other features than the workspace:\n{}\n\
         add the workspace's features of these crates to crates/workspace-hack/Cargo.toml",
        problems.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSPACE: &str = "burn-core v0.21.0|default,flate2,std\nflate2 v1.1.10|any_impl,default,zlib-rs\n\
                             flate2 v1.1.10|any_impl,default,zlib-rs (*)\nserde v1.0.229|alloc,derive,std\n\
                             serde v1.0.229|alloc,derive\n";

    #[test]
    fn the_same_resolution_has_no_difference() {
        let ws = parse(WORKSPACE);
        assert_eq!(ws["flate2 v1.1.10"].len(), 1, "a repeated line (*) is the same build");
        assert_eq!(ws["serde v1.0.229"].len(), 2, "host and target builds are both kept");
        assert!(differences(&ws, &ws, true).is_empty());
        // A selection that builds fewer crates, each as the workspace does, is fine.
        let fewer = parse("serde v1.0.229|alloc,derive,std\nserde v1.0.229|alloc,derive\n");
        assert!(differences(&fewer, &ws, true).is_empty());
        // Over build edges, one of the workspace's two copies is enough; over normal edges it is not.
        let one = parse("serde v1.0.229|alloc,derive\n");
        assert!(differences(&one, &ws, false).is_empty());
        assert_eq!(differences(&one, &ws, true).len(), 1);
    }

    #[test]
    fn a_diverging_feature_is_named() {
        let ws = parse(WORKSPACE);
        let stage = parse("burn-core v0.21.0|default,flate2,std\nflate2 v1.1.10|any_impl,default\n");
        let d = differences(&stage, &ws, true);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("flate2 v1.1.10: built with [{any_impl,default}]"), "{}", d[0]);
        assert!(d[0].contains("{any_impl,default,zlib-rs}"), "{}", d[0]);
        // One of the two builds of serde missing a feature is a difference too.
        let stage = parse("serde v1.0.229|alloc,derive\nserde v1.0.229|alloc\n");
        assert_eq!(differences(&stage, &ws, false).len(), 1);
    }
}
