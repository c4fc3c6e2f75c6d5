//! No code: this crate exists for its `Cargo.toml`, which gives every build of a stage the
//! workspace's features for the shared crates listed there (see that file and
//! `cargo xtask check-features`).
