//! Empty: a build script makes cargo resolve this crate's `[build-dependencies]`, which carry the
//! workspace's features for crates used by build scripts and proc-macros (see `Cargo.toml`).

fn main() {}
