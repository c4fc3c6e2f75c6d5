//! Synthetic scenes (determinism, labelling, class statistics, speckle) and the tile dataset /
//! loader (standardisation, paired augmentation, ordering, cursor, prefetch bound, errors).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tiling::dataset::{
    Augment, Cursor, DatasetConfig, LoaderConfig, MemorySource, NpzSource, Sample, Standardization, TileDataset,
    TileSource, collate,
};
use tiling::npz::{self, Dtype};
use tiling::synthetic::{
    BACKSCATTER_DB, LandCover, REFLECTANCE, SyntheticConfig, SyntheticScene, split_for_scene, synthetic_tiles,
};
use tiling::{Sidecar, Split, Tile, TilingError};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn sidecar(id: &str, h: usize, w: usize, split: Option<Split>) -> Sidecar {
    Sidecar {
        tile_id: id.into(),
        height: h,
        width: w,
        split,
        scene: None,
        row: None,
        col: None,
        geotransform: None,
        crs: None,
        source_files: vec![],
        synthetic: true,
        valid_fraction: None,
        checksum: None,
        extra: Default::default(),
    }
}

fn tile(id: &str, h: usize, w: usize, s1: Vec<f32>, s2: Vec<f32>, split: Option<Split>) -> Tile {
    Tile { id: id.into(), height: h, width: w, s1, s2, sidecar: sidecar(id, h, w, split) }
}

/// Tiles whose channels are known functions of the pixel: VV = `base + y·W + x`, VH = 2·VV,
/// S2 band b = (b + 1)·VV + 0.5.
fn patterned(n: usize, h: usize, w: usize, split: Split) -> Vec<Tile> {
    (0..n)
        .map(|t| {
            let hw = h * w;
            let vv: Vec<f32> = (0..hw).map(|p| (t * 1000 + p) as f32).collect();
            let mut s1 = vv.clone();
            s1.extend(vv.iter().map(|v| 2.0 * v));
            let mut s2 = Vec::new();
            for b in 0..4 {
                s2.extend(vv.iter().map(|v| (b + 1) as f32 * v + 0.5));
            }
            tile(&format!("t{t:03}"), h, w, s1, s2, Some(split))
        })
        .collect()
}

fn plain(split: Split, seed: u64) -> DatasetConfig {
    DatasetConfig { standardization: Standardization::none(), ..DatasetConfig::new(split, seed) }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n as f64
}

// ---------------------------------------------------------------------------------------------
// Synthetic scenes

#[test]
fn synthetic_is_deterministic_and_seed_dependent() {
    let cfg = SyntheticConfig { cloud_count: 2, ..SyntheticConfig::new(96, 80, 42) };
    let a = SyntheticScene::generate(&cfg, 0);
    let b = SyntheticScene::generate(&cfg, 0);
    assert_eq!(a.classes, b.classes);
    assert_eq!(bits(&a.s1.data), bits(&b.s1.data));
    assert_eq!(bits(&a.s2.data), bits(&b.s2.data));
    assert_eq!((a.s1.width, a.s1.height, a.s1.bands, a.s2.bands), (96, 80, 2, 4));

    let other_seed = SyntheticScene::generate(&SyntheticConfig { seed: 43, ..cfg.clone() }, 0);
    assert_ne!(a.classes, other_seed.classes);
    assert_ne!(bits(&a.s1.data), bits(&other_seed.s1.data));
    let other_scene = SyntheticScene::generate(&cfg, 1);
    assert_ne!(a.classes, other_scene.classes);

    // Separate streams: the number of looks changes the speckle only.
    let more_looks = SyntheticScene::generate(&SyntheticConfig { looks: 9.0, ..cfg.clone() }, 0);
    assert_eq!(a.classes, more_looks.classes);
    assert_eq!(bits(&a.s2.data), bits(&more_looks.s2.data));
    assert_ne!(bits(&a.s1.data), bits(&more_looks.s1.data));

    let t1 = synthetic_tiles(6, 32, 5);
    let t2 = synthetic_tiles(6, 32, 5);
    assert_eq!(t1.len(), 6);
    for (x, y) in t1.iter().zip(&t2) {
        assert_eq!((&x.id, bits(&x.s1), bits(&x.s2), &x.sidecar), (&y.id, bits(&y.s1), bits(&y.s2), &y.sidecar));
    }
    let t3 = synthetic_tiles(6, 32, 6);
    assert_ne!(bits(&t1[0].s1), bits(&t3[0].s1));
}

#[test]
fn everything_produced_is_labelled_synthetic() {
    let cfg = SyntheticConfig::new(64, 64, 42);
    let scene = SyntheticScene::generate(&cfg, 0);
    assert_eq!(scene.s1.source, PathBuf::from("synthetic://seed-42/scene-0/s1"));
    assert_eq!(scene.s2.source, PathBuf::from("synthetic://seed-42/scene-0/s2"));
    assert!(scene.s1_db().source.to_string_lossy().starts_with("synthetic://"));
    assert!(scene.id.starts_with("synthetic-"));
    assert!(scene.to_scene().s1.source.to_string_lossy().starts_with("synthetic://"));

    let tiles = synthetic_tiles(9, 16, 42);
    let dir = tempfile::tempdir().unwrap();
    for t in &tiles {
        assert!(t.id.starts_with("synthetic-"), "{}", t.id);
        let sc = &t.sidecar;
        assert!(sc.synthetic, "{}", t.id);
        assert!(!sc.source_files.is_empty());
        assert!(sc.source_files.iter().all(|f| f.starts_with("synthetic://")), "{:?}", sc.source_files);
        assert!(sc.scene.as_deref().is_some_and(|s| s.starts_with("synthetic://")));
        assert_eq!(sc.extra.get("generator").and_then(|g| g.as_str()), Some("tiling::synthetic"));
        let json: serde_json::Value = serde_json::to_value(sc).unwrap();
        assert_eq!(json["synthetic"], serde_json::Value::Bool(true));
        // The label survives the real tile format.
        let path = npz::write_tile(dir.path(), t, Dtype::F32).unwrap();
        let back = npz::read_tile(&path).unwrap();
        assert!(back.sidecar.synthetic);
        assert_eq!(back.sidecar.source_files, sc.source_files);
    }
}

#[test]
fn tiles_are_split_by_scene() {
    let tiles = synthetic_tiles(16, 16, 1);
    assert_eq!((split_for_scene(0), split_for_scene(1), split_for_scene(3)), (Split::Train, Split::Val, Split::Test));
    for t in &tiles {
        let scene = t.sidecar.scene.clone().unwrap();
        let index: u64 = scene.rsplit('-').next().unwrap().parse().unwrap();
        assert_eq!(t.sidecar.split, Some(split_for_scene(index)), "{}", t.id);
    }
    let splits: Vec<_> = tiles.iter().map(|t| t.sidecar.split.unwrap()).collect();
    assert!(splits.contains(&Split::Train) && splits.contains(&Split::Val) && splits.contains(&Split::Test));
}

#[test]
fn class_mean_backscatter_matches_the_table() {
    let cfg = SyntheticConfig::new(512, 512, 11);
    let scene = SyntheticScene::generate(&cfg, 0);
    let n = scene.width * scene.height;
    // Per-pixel dB mean is biased by 10/ln10·(ψ(L) − ln L); for L = 4, ψ(4) = 11/6 − γ.
    let psi4 = 11.0 / 6.0 - 0.577_215_664_901_532_9;
    let bias = 10.0 / std::f64::consts::LN_10 * (psi4 - 4f64.ln());
    let mut checked = 0;
    for class in LandCover::ALL {
        let px: Vec<usize> = (0..n).filter(|&i| scene.classes[i] == class.code()).collect();
        if px.len() < 2000 {
            continue;
        }
        checked += 1;
        for (band, &want) in BACKSCATTER_DB[class as usize].iter().enumerate() {
            let lin = mean(px.iter().map(|&i| f64::from(scene.s1.data[band * n + i])));
            let db = 10.0 * lin.log10();
            let want = f64::from(want);
            assert!((db - want).abs() < 0.5, "{} band {band}: {db:.2} dB vs {want}", class.name());
            let db_mean = mean(px.iter().map(|&i| 10.0 * f64::from(scene.s1.data[band * n + i]).log10()));
            assert!((db_mean - (want + bias)).abs() < 0.2, "{}: per-pixel dB mean {db_mean:.2}", class.name());
        }
    }
    assert!(checked >= 5, "only {checked} classes large enough");
}

#[test]
fn speckle_coefficient_of_variation_is_one_over_sqrt_looks() {
    for looks in [1.0, 4.0, 9.0] {
        let cfg = SyntheticConfig { looks, ..SyntheticConfig::new(192, 192, 3) };
        let n = cfg.width * cfg.height;
        let scene = SyntheticScene::render(&cfg, 0, vec![LandCover::Forest.code(); n]);
        for band in 0..2 {
            let v = &scene.s1.data[band * n..(band + 1) * n];
            let m = mean(v.iter().map(|&x| f64::from(x)));
            let var = mean(v.iter().map(|&x| (f64::from(x) - m).powi(2)));
            let cv = var.sqrt() / m;
            let want = 1.0 / looks.sqrt();
            assert!((cv / want - 1.0).abs() < 0.10, "looks {looks} band {band}: cv {cv:.3} vs {want:.3}");
        }
    }
}

#[test]
fn optical_reflectance_follows_the_class_table() {
    let cfg = SyntheticConfig::new(384, 384, 5);
    let scene = SyntheticScene::generate(&cfg, 0);
    let n = scene.width * scene.height;
    let class_mean = |class: LandCover, band: usize| {
        mean((0..n).filter(|&i| scene.classes[i] == class.code()).map(|i| f64::from(scene.s2.data[band * n + i])))
            / 10000.0
    };
    let water_nir = class_mean(LandCover::Water, 3);
    for veg in [LandCover::Forest, LandCover::Cereal, LandCover::Maize] {
        assert!(water_nir + 0.1 < class_mean(veg, 3), "water NIR {water_nir} vs {}", veg.name());
    }
    for class in [LandCover::Water, LandCover::Forest, LandCover::Urban, LandCover::Bare] {
        for (band, &want) in REFLECTANCE[class as usize].iter().enumerate() {
            let got = class_mean(class, band);
            let want = f64::from(want);
            assert!((got - want).abs() < 0.003, "{} B{band}: {got:.4} vs {want}", class.name());
        }
    }
    // DN are integers ≥ 1 (0 is nodata) and no clouds by default.
    assert!(scene.s2.data.iter().all(|&v| v >= 1.0 && v.fract() == 0.0));
}

#[test]
fn clouds_become_nan_in_every_band_of_the_tiles() {
    let cfg = SyntheticConfig { cloud_count: 3, ..SyntheticConfig::new(64, 64, 8) };
    let scene = SyntheticScene::generate(&cfg, 0);
    let clouded = scene.s2.data[..64 * 64].iter().filter(|&&v| v == 0.0).count();
    assert!(clouded > 0);
    let tiles = scene.tiles(32, Split::Train);
    let nan_px: usize =
        tiles.iter().map(|t| (0..32 * 32).filter(|&p| (0..6).all(|b| channel(t, b)[p].is_nan())).count()).sum();
    assert_eq!(nan_px, clouded);
    for t in &tiles {
        let nan_any = (0..32 * 32).filter(|&p| (0..6).any(|b| channel(t, b)[p].is_nan())).count();
        let vf = t.sidecar.valid_fraction.unwrap();
        assert!((vf - (1.0 - nan_any as f64 / 1024.0)).abs() < 1e-12);
    }
}

fn channel(t: &Tile, b: usize) -> &[f32] {
    let hw = t.height * t.width;
    if b < 2 { &t.s1[b * hw..(b + 1) * hw] } else { &t.s2[(b - 2) * hw..(b - 1) * hw] }
}

#[test]
fn scene_tiles_match_what_the_tiler_writes() {
    let cfg = SyntheticConfig { cloud_count: 1, ..SyntheticConfig::new(64, 64, 21) };
    let scene = SyntheticScene::generate(&cfg, 0);
    let direct = scene.tiles(32, Split::Train);
    let dir = tempfile::tempdir().unwrap();
    let tcfg = tiling::tiler::TilerConfig { size: 32, min_valid_fraction: 0.0, ..Default::default() };
    let manifest = tiling::tiler::tile_scenes(dir.path(), vec![scene.to_scene()], tcfg).unwrap();
    assert_eq!(manifest.tiles.len(), direct.len());
    for m in &manifest.tiles {
        let ours = direct.iter().find(|t| (t.sidecar.row, t.sidecar.col) == (Some(m.window.row), Some(m.window.col)));
        let ours = ours.unwrap();
        let theirs = npz::read_tile(&dir.path().join(&m.npz)).unwrap();
        assert_eq!(bits(&ours.s1), bits(&theirs.s1), "{}", m.tile_id);
        assert_eq!(bits(&ours.s2), bits(&theirs.s2), "{}", m.tile_id);
        assert!(m.source_files.iter().all(|f| f.starts_with("synthetic://")), "{:?}", m.source_files);
        assert!(theirs.sidecar.synthetic, "{}: a synthetic scene's tiles say so in their sidecar", m.tile_id);
    }
    // And the manifest drives an NPZ source.
    let all = NpzSource::from_manifest(&dir.path().join("manifest.json"), None).unwrap();
    assert_eq!(all.len(), manifest.tiles.len());
    let split = manifest.tiles[0].split;
    let some = NpzSource::from_manifest(&dir.path().join("manifest.json"), Some(split)).unwrap();
    assert_eq!(some.len(), manifest.tiles.iter().filter(|t| t.split == split).count());
}

// ---------------------------------------------------------------------------------------------
// Standardisation

#[test]
fn terramind_v1_statistics_by_hand() {
    let st = Standardization::terramind_v1();
    assert_eq!(st.s1_mean, [-12.599, -20.293]);
    assert_eq!(st.s1_std, [5.195, 5.890]);
    let s2_mean = [0.150_331_7, 0.171_819_7, 0.185_391, 0.308_323_4];
    let s2_std = [0.214_110_7, 0.203_897_3, 0.213_413_8, 0.187_191_8];
    for b in 0..4 {
        assert!((st.s2_mean[b] - s2_mean[b]).abs() < 1e-7);
        assert!((st.s2_std[b] - s2_std[b]).abs() < 1e-7);
    }
    assert_eq!(Standardization::default(), st);

    // One pixel, hand values: VV = mean + 1 std, VH = mean − 2 std, B2 = the mean, B3 = 0,
    // B4 = 2000 DN, B8 = mean + 2 std (in reflectance).
    let s1 = vec![-12.599 + 5.195, -20.293 - 2.0 * 5.890];
    let s2 = vec![0.150_331_7, 0.0, 0.2, 0.308_323_4 + 2.0 * 0.187_191_8];
    let ds = TileDataset::new(
        MemorySource::new(vec![tile("a", 1, 1, s1, s2, Some(Split::Val))]),
        DatasetConfig::new(Split::Val, 0),
    )
    .unwrap();
    let s = ds.sample(0, 0).unwrap();
    let want_s1 = [1.0, -2.0];
    let want_s2 = [0.0, -1718.197 / 2038.973, (2000.0 - 1853.91) / 2134.138, 2.0];
    for (g, w) in s.s1.iter().zip(want_s1).chain(s.s2.iter().zip(want_s2)) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }

    // Reflectance with scaled statistics equals DN with the published DN statistics.
    let dn = [123.0f32, 4567.0, 890.0, 10000.0];
    let mut refl: Vec<f32> = dn.iter().map(|d| d / 10000.0).collect();
    st.apply_s2(&mut refl, 1);
    for b in 0..4 {
        let by_dn = (dn[b] - tiling::dataset::TERRAMIND_V1_S2_MEAN_DN[b]) / tiling::dataset::TERRAMIND_V1_S2_STD_DN[b];
        assert!((refl[b] - by_dn).abs() < 1e-5);
    }
    st.invert_s2(&mut refl, 1);
    for b in 0..4 {
        assert!((refl[b] - dn[b] / 10000.0).abs() < 1e-6);
    }

    // Serde, and the identity.
    let json = serde_json::to_string(&st).unwrap();
    assert_eq!(serde_json::from_str::<Standardization>(&json).unwrap(), st);
    assert!(Standardization::none().is_none() && !st.is_none());
    let mut x = vec![3.0, -4.0];
    Standardization::none().apply_s1(&mut x, 1);
    assert_eq!(x, [3.0, -4.0]);
}

#[test]
fn invalid_pixels_are_masked_and_zeroed() {
    let mut s2 = vec![0.1; 4 * 4];
    s2[2 * 4 + 3] = f32::NAN; // B4 at pixel 3
    let mut s1 = vec![-10.0; 2 * 4];
    s1[1] = f32::INFINITY; // VV at pixel 1
    let ds = TileDataset::new(
        MemorySource::new(vec![tile("m", 2, 2, s1, s2, Some(Split::Val))]),
        DatasetConfig::new(Split::Val, 0),
    )
    .unwrap();
    let s = ds.sample(0, 0).unwrap();
    assert_eq!(s.valid, [1.0, 0.0, 1.0, 0.0]);
    assert_eq!(s.s1[1], 0.0);
    assert_eq!(s.s2[2 * 4 + 3], 0.0);
    assert!(s.s1.iter().chain(&s.s2).all(|v| v.is_finite()));
}

// ---------------------------------------------------------------------------------------------
// Augmentation

#[test]
fn rot90_and_flips_on_a_3x3_example() {
    let m: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let aug = |hflip, vflip, rot90| Augment { hflip, vflip, rot90 }.apply(&m, 1, 3, 3);
    let f = |v: [i32; 9]| v.map(|x| x as f32).to_vec();
    assert_eq!(aug(false, false, 0), f([1, 2, 3, 4, 5, 6, 7, 8, 9]));
    assert_eq!(aug(true, false, 0), f([3, 2, 1, 6, 5, 4, 9, 8, 7]));
    assert_eq!(aug(false, true, 0), f([7, 8, 9, 4, 5, 6, 1, 2, 3]));
    // numpy: np.rot90([[1,2,3],[4,5,6],[7,8,9]], k)
    assert_eq!(aug(false, false, 1), f([3, 6, 9, 2, 5, 8, 1, 4, 7]));
    assert_eq!(aug(false, false, 2), f([9, 8, 7, 6, 5, 4, 3, 2, 1]));
    assert_eq!(aug(false, false, 3), f([7, 4, 1, 8, 5, 2, 9, 6, 3]));
    // hflip first, then rot90: a transpose.
    assert_eq!(aug(true, false, 1), f([1, 4, 7, 2, 5, 8, 3, 6, 9]));
    // Both flips = rot180.
    assert_eq!(aug(true, true, 0), aug(false, false, 2));

    // Non-square 2×3 with rot90 k = 1 (numpy: [[3,6],[2,5],[1,4]]), channels kept apart.
    let r: Vec<f32> = (1..=6).map(|v| v as f32).chain((1..=6).map(|v| 10.0 * v as f32)).collect();
    let a = Augment { hflip: false, vflip: false, rot90: 1 };
    assert_eq!(a.output_shape(2, 3), (3, 2));
    assert_eq!(a.apply(&r, 2, 2, 3), [3.0, 6.0, 2.0, 5.0, 1.0, 4.0, 30.0, 60.0, 20.0, 50.0, 10.0, 40.0]);
}

#[test]
fn augmentation_is_identical_across_modalities() {
    let (h, w) = (5, 5);
    let mut tiles = patterned(6, h, w, Split::Train);
    // An invalid pixel at (0, 1) of tile 0 (VV value 1): after any augmentation the mask must be 0
    // exactly where VV is 1.
    tiles[0].s2[3 * h * w + 1] = f32::NAN;
    let ds = TileDataset::new(MemorySource::new(tiles), plain(Split::Train, 7)).unwrap();
    let mut seen = std::collections::HashSet::new();
    for epoch in 0..8 {
        for i in 0..ds.len() {
            let s = ds.sample(i, epoch).unwrap();
            seen.insert(s.augment);
            let hw = s.height * s.width;
            for p in 0..hw {
                let vv = s.s1[p];
                assert_eq!(s.s1[hw + p], 2.0 * vv);
                let invalid = i == 0 && vv == 1.0;
                assert_eq!(s.valid[p], if invalid { 0.0 } else { 1.0 }, "epoch {epoch} tile {i} pixel {p}");
                for b in 0..4 {
                    let want = if invalid && b == 3 { 0.0 } else { (b + 1) as f32 * vv + 0.5 };
                    assert_eq!(s.s2[b * hw + p], want);
                }
            }
            // And it is the advertised augmentation of the original planes.
            let orig = patterned(i + 1, h, w, Split::Train).pop().unwrap();
            assert_eq!(s.s1, s.augment.apply(&orig.s1, 2, h, w));
        }
    }
    assert!(seen.len() >= 8, "only {} distinct augmentations", seen.len());
}

#[test]
fn validation_and_test_are_never_augmented_or_shuffled() {
    for split in [Split::Val, Split::Test] {
        let tiles = patterned(5, 4, 4, split);
        let cfg = DatasetConfig { augment: true, shuffle: true, ..plain(split, 9) };
        assert!(!cfg.augments() && !cfg.shuffles());
        let ds = TileDataset::new(MemorySource::new(tiles.clone()), cfg).unwrap();
        for epoch in 0..4 {
            assert_eq!(ds.epoch_order(epoch), (0..5).collect::<Vec<_>>());
            let got: Vec<Sample> =
                ds.loader(Cursor::start(epoch), LoaderConfig::default()).map(Result::unwrap).collect();
            for (s, t) in got.iter().zip(&tiles) {
                assert_eq!(s.augment, Augment::IDENTITY);
                assert_eq!((&s.tile_id, &s.s1, &s.s2), (&t.id, &t.s1, &t.s2));
            }
        }
    }
}

#[test]
fn augmentation_is_deterministic_per_seed_epoch_index() {
    let ds = TileDataset::new(MemorySource::new(patterned(4, 6, 6, Split::Train)), plain(Split::Train, 3)).unwrap();
    let again = TileDataset::new(MemorySource::new(patterned(4, 6, 6, Split::Train)), plain(Split::Train, 3)).unwrap();
    for epoch in 0..3 {
        for i in 0..4 {
            assert_eq!(ds.sample(i, epoch).unwrap(), again.sample(i, epoch).unwrap());
            assert_eq!(ds.sample(i, epoch).unwrap().augment, Augment::draw(3, epoch, i as u64, true));
        }
    }
    // It varies across epochs (and seeds) for a fixed tile.
    let per_epoch: std::collections::HashSet<_> = (0..16).map(|e| Augment::draw(3, e, 2, true)).collect();
    assert!(per_epoch.len() >= 4, "{per_epoch:?}");
    let per_seed: std::collections::HashSet<_> = (0..16).map(|s| Augment::draw(s, 0, 2, true)).collect();
    assert!(per_seed.len() >= 4);
    // Epoch orders are seeded shuffles that differ across epochs.
    let big = TileDataset::new(MemorySource::new(patterned(20, 2, 2, Split::Train)), plain(Split::Train, 3)).unwrap();
    let o0 = big.epoch_order(0);
    assert_eq!(o0, big.epoch_order(0));
    assert_ne!(o0, big.epoch_order(1));
    let mut sorted = o0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>());
}

#[test]
fn non_square_tiles_rotate_by_half_turns_only() {
    for e in 0..64 {
        assert_eq!(Augment::draw(1, e, 0, false).rot90 % 2, 0);
    }
    let ds = TileDataset::new(MemorySource::new(patterned(3, 4, 6, Split::Train)), plain(Split::Train, 1)).unwrap();
    for epoch in 0..8 {
        for i in 0..3 {
            let s = ds.sample(i, epoch).unwrap();
            assert_eq!((s.height, s.width), (4, 6));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loader

/// Wraps a source, counting loads, optionally failing or panicking on one index and sleeping.
struct Instrumented {
    inner: MemorySource,
    loads: Arc<AtomicUsize>,
    fail: Option<usize>,
    panic_on: Option<usize>,
    delay: Duration,
}

impl TileSource for Instrumented {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn tile_id(&self, index: usize) -> &str {
        self.inner.tile_id(index)
    }
    fn path(&self, index: usize) -> PathBuf {
        PathBuf::from(format!("tiles/{}.npz", self.tile_id(index)))
    }
    fn load(&self, index: usize) -> Result<Tile, TilingError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        if self.fail == Some(index) {
            return Err(TilingError::Format { path: self.path(index), message: "not a readable NPZ".into() });
        }
        assert!(self.panic_on != Some(index), "boom on {index}");
        self.inner.load(index)
    }
}

fn instrumented(
    n: usize,
    fail: Option<usize>,
    panic_on: Option<usize>,
    delay_ms: u64,
) -> (Instrumented, Arc<AtomicUsize>) {
    let loads = Arc::new(AtomicUsize::new(0));
    let src = Instrumented {
        inner: MemorySource::new(patterned(n, 4, 4, Split::Train)),
        loads: Arc::clone(&loads),
        fail,
        panic_on,
        delay: Duration::from_millis(delay_ms),
    };
    (src, loads)
}

#[test]
fn loader_order_equals_sequential_order_for_every_worker_count() {
    let tiles = synthetic_tiles(24, 16, 4);
    let ds = TileDataset::new(
        MemorySource::with_split(tiles, Split::Train),
        DatasetConfig { seed: 17, ..DatasetConfig::new(Split::Train, 17) },
    )
    .unwrap();
    assert!(ds.len() >= 12);
    for epoch in [0, 5] {
        let want: Vec<Sample> = ds.epoch_order(epoch).into_iter().map(|i| ds.sample(i, epoch).unwrap()).collect();
        for workers in [0, 1, 2, 4] {
            for prefetch in [1, 3, 16] {
                let got: Vec<Sample> =
                    ds.loader(Cursor::start(epoch), LoaderConfig { workers, prefetch }).map(Result::unwrap).collect();
                assert_eq!(got, want, "workers {workers} prefetch {prefetch}");
            }
        }
    }
}

#[test]
fn cursor_resume_yields_exactly_the_rest_of_the_epoch() {
    let ds = TileDataset::new(MemorySource::new(patterned(13, 4, 4, Split::Train)), plain(Split::Train, 5)).unwrap();
    let cfg = LoaderConfig { workers: 2, prefetch: 4 };
    let full: Vec<Sample> = ds.loader(Cursor::start(3), cfg).map(Result::unwrap).collect();
    assert_eq!(full.len(), 13);
    for k in [0, 1, 6, 12, 13] {
        let mut first = ds.loader(Cursor::start(3), cfg);
        let head: Vec<Sample> = first.by_ref().take(k).map(Result::unwrap).collect();
        let cursor = first.cursor();
        assert_eq!(cursor, Cursor { epoch: 3, position: k });
        drop(first);
        // Through serde, as a checkpoint would store it.
        let cursor: Cursor = serde_json::from_str(&serde_json::to_string(&cursor).unwrap()).unwrap();
        let rest = ds.loader(cursor, LoaderConfig { workers: 1, prefetch: 2 });
        assert_eq!(rest.len(), 13 - k);
        let tail: Vec<Sample> = rest.map(Result::unwrap).collect();
        assert_eq!([head, tail].concat(), full, "resume at {k}");
    }
    assert_eq!(Cursor { epoch: 3, position: 13 }.next_epoch(), Cursor::start(4));
    assert_eq!(ds.loader(Cursor { epoch: 3, position: 99 }, cfg).count(), 0);
}

#[test]
fn prefetch_bound_is_respected() {
    for (workers, prefetch) in [(4, 3), (2, 2), (3, 8), (1, 1), (1, 4)] {
        let (src, loads) = instrumented(24, None, None, 1);
        let ds = TileDataset::new(src, plain(Split::Train, 0)).unwrap();
        let mut loader = ds.loader(Cursor::start(0), LoaderConfig { workers, prefetch });
        // The workers fill the queue up to the bound (waiting for that is not a timing assertion:
        // the deadline only keeps a broken loader from hanging the test).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while loads.load(Ordering::SeqCst) < prefetch {
            assert!(std::time::Instant::now() < deadline, "workers {workers}: queue never filled");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut consumed = 0;
        loop {
            // Give the workers time to run past the bound if they could.
            std::thread::sleep(Duration::from_millis(3));
            let held = loads.load(Ordering::SeqCst) - consumed;
            assert!(held <= prefetch, "workers {workers}: {held} held > prefetch {prefetch}");
            match loader.next() {
                Some(s) => {
                    s.unwrap();
                    consumed += 1;
                }
                None => break,
            }
        }
        assert_eq!((consumed, loads.load(Ordering::SeqCst)), (24, 24));
    }
}

#[test]
fn a_failing_tile_surfaces_in_order_as_an_error_naming_the_file() {
    for workers in [0, 1, 3] {
        let (src, _) = instrumented(8, Some(5), Some(2), 0);
        // Training split without shuffling: positions are source indices.
        let ds = TileDataset::new(src, DatasetConfig { shuffle: false, ..plain(Split::Train, 0) }).unwrap();
        let got: Vec<_> = ds.loader(Cursor::start(0), LoaderConfig { workers, prefetch: 4 }).collect();
        assert_eq!(got.len(), 8);
        for (i, r) in got.iter().enumerate() {
            match (i, r) {
                (5, Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains("tiles/t005.npz") && msg.contains("not a readable NPZ"), "{msg}");
                }
                (2, Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains("tiles/t002.npz") && msg.contains("boom on 2"), "{msg}");
                }
                (_, Ok(s)) => assert_eq!(s.tile_id, format!("t{i:03}")),
                (_, r) => panic!("position {i}: {r:?}"),
            }
        }
    }
}

#[test]
fn npz_directory_source_and_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let tiles = synthetic_tiles(12, 16, 2);
    for t in &tiles {
        npz::write_tile(dir.path(), t, Dtype::F32).unwrap();
    }
    let all = NpzSource::from_dir(dir.path()).unwrap();
    assert_eq!(all.len(), 12);
    let train = NpzSource::from_dir_split(dir.path(), Split::Train).unwrap();
    let mem = MemorySource::with_split(tiles.clone(), Split::Train);
    assert_eq!(train.len(), mem.len());
    // Same samples from disk as from memory (sorted ids = generation order here).
    let cfg = DatasetConfig::new(Split::Train, 1);
    let from_disk = TileDataset::new(train, cfg.clone()).unwrap();
    let from_mem = TileDataset::new(mem, cfg).unwrap();
    let a: Vec<Sample> = from_disk.loader(Cursor::start(2), LoaderConfig::default()).map(Result::unwrap).collect();
    let b: Vec<Sample> = from_mem.loader(Cursor::start(2), LoaderConfig::default()).map(Result::unwrap).collect();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.tile_id, bits(&x.s1), bits(&x.s2), &x.valid), (&y.tile_id, bits(&y.s1), bits(&y.s2), &y.valid));
    }

    // Corrupt one NPZ: its position yields an error naming it; the others still load.
    let victim = from_disk.source().paths().nth(1).unwrap().to_path_buf();
    std::fs::write(&victim, b"not a zip").unwrap();
    let results: Vec<_> = from_disk.loader(Cursor::start(0), LoaderConfig { workers: 2, prefetch: 2 }).collect();
    let order = from_disk.epoch_order(0);
    for (pos, r) in results.iter().enumerate() {
        if order[pos] == 1 {
            let msg = r.as_ref().unwrap_err().to_string();
            assert!(msg.contains(&victim.display().to_string()), "{msg}");
        } else {
            assert!(r.is_ok());
        }
    }
}

#[test]
fn split_leaks_and_wrong_sizes_are_errors() {
    let tiles = patterned(2, 4, 4, Split::Val);
    let ds = TileDataset::new(MemorySource::new(tiles.clone()), plain(Split::Train, 0)).unwrap();
    let msg = ds.sample(0, 0).unwrap_err().to_string();
    assert!(msg.contains("Val") && msg.contains("t000"), "{msg}");
    let ds =
        TileDataset::new(MemorySource::new(tiles), DatasetConfig { tile_size: Some((8, 8)), ..plain(Split::Val, 0) })
            .unwrap();
    assert!(ds.sample(1, 0).unwrap_err().to_string().contains("expected 8x8"));
    let bad = Standardization { s1_std: [0.0, 1.0], ..Standardization::none() };
    assert!(
        TileDataset::new(MemorySource::default(), DatasetConfig { standardization: bad, ..plain(Split::Val, 0) })
            .is_err()
    );
}

#[test]
fn collate_stacks_samples() {
    let ds = TileDataset::new(MemorySource::new(patterned(3, 2, 3, Split::Val)), plain(Split::Val, 0)).unwrap();
    let samples: Vec<Sample> = (0..3).map(|i| ds.sample(i, 0).unwrap()).collect();
    let b = collate(&samples).unwrap();
    assert_eq!((b.batch, b.height, b.width), (3, 2, 3));
    assert_eq!(b.ids, ["t000", "t001", "t002"]);
    assert_eq!((b.s1.len(), b.s2.len(), b.valid.len()), (3 * 2 * 6, 3 * 4 * 6, 3 * 6));
    assert_eq!(&b.s1[2 * 6 * 2..2 * 6 * 3], &samples[2].s1[..]);
    assert_eq!(&b.s2[4 * 6..4 * 6 * 2], &samples[1].s2[..]);
    let mut odd = samples[1].clone();
    odd.height = 3;
    odd.width = 2;
    let err = collate(&[samples[0].clone(), odd]).unwrap_err().to_string();
    assert!(err.contains("t001"), "{err}");
    assert_eq!(collate(&[]).unwrap().batch, 0);
}
