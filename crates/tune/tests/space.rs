//! Search-space files and the random and grid samplers.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;
use tune::{
    Direction, Distribution, GridSampler, History, ParamValue, ProblemKind, RandomSampler, SampleError, Sampler,
    SearchSpace,
};

const EXAMPLE: &str = "\
distill.window: {int: [2, 8]}
distill.lambda: {float: [1e-3, 1e-1], log: true}
optimizer.scheduler.name: {categorical: [cosine, constant]}
distill.temperature: {float: [1.0, 4.0], step: 0.5}
training.batch: {int: [16, 128], step: 16}
";

fn space(text: &str) -> SearchSpace {
    SearchSpace::from_yaml_str(text, "space.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// The problems of a bad file as (key, kind) pairs.
fn problems(text: &str) -> Vec<(String, ProblemKind)> {
    match SearchSpace::from_yaml_str(text, "bad.yaml") {
        Ok(s) => panic!("accepted {text:?}: {s:?}"),
        Err(e) => {
            assert_eq!(e.file, "bad.yaml");
            let shown = e.to_string();
            for p in &e.problems {
                assert!(shown.contains(&format!("bad.yaml: {p}")), "{shown}");
            }
            e.problems.into_iter().map(|p| (p.key, p.kind)).collect()
        }
    }
}

fn empty_history() -> History<'static> {
    History::new(Direction::Minimize, &[])
}

#[test]
fn parses_the_example_in_file_order() {
    let s = space(EXAMPLE);
    assert_eq!(
        s.order(),
        ["distill.window", "distill.lambda", "optimizer.scheduler.name", "distill.temperature", "training.batch"]
    );
    assert_eq!(s.get("distill.window"), Some(&Distribution::Int { low: 2, high: 8, step: 1, log: false }));
    assert_eq!(s.get("distill.lambda"), Some(&Distribution::Float { low: 1e-3, high: 1e-1, log: true, step: None }));
    assert_eq!(
        s.get("optimizer.scheduler.name"),
        Some(&Distribution::Categorical { choices: vec![Value::from("cosine"), Value::from("constant")] })
    );
    assert_eq!(s.get("distill.temperature").unwrap().grid_len(), Some(7));
    assert_eq!(s.get("training.batch").unwrap().grid_len(), Some(8));
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
}

#[test]
fn a_step_that_does_not_divide_lowers_high_as_optuna_and_warns() {
    let s = space("a: {int: [0, 10], step: 3}\nb: {float: [0.0, 1.0], step: 0.3}\nc: {float: [0, 1], step: 0.1}\n");
    assert_eq!(s.get("a"), Some(&Distribution::Int { low: 0, high: 9, step: 3, log: false }));
    let Some(Distribution::Float { high, .. }) = s.get("b") else { panic!() };
    assert!((high - 0.9).abs() < 1e-12, "{high}");
    assert_eq!(s.get("c"), Some(&Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.1) }));
    assert_eq!(s.get("c").unwrap().grid_len(), Some(11));
    assert_eq!(s.warnings().len(), 2, "{:?}", s.warnings());
    assert!(s.warnings()[0].starts_with("space.yaml: a: step 3"), "{:?}", s.warnings());
    assert!(s.warnings()[1].starts_with("space.yaml: b: "), "{:?}", s.warnings());
}

#[test]
fn equal_bounds_are_a_fixed_parameter() {
    let s = space("a: {int: [3, 3]}\nb: {float: [0.5, 0.5]}\n");
    let p = RandomSampler::new(1).sample(&s, 0, &empty_history()).unwrap();
    assert_eq!(p["a"], ParamValue::Int(3));
    assert_eq!(p["b"], ParamValue::Float(0.5));
}

#[test]
fn every_problem_is_reported_at_once_naming_its_key() {
    let text = "\
k.kind: {uniform: [0, 1]}
k.option: {float: [0, 1], lg: true}
k.inverted: {float: [2.0, 1.0]}
k.inverted_int: {int: [5, 1]}
k.log_zero: {float: [0.0, 1.0], log: true}
k.log_int: {int: [0, 8], log: true}
k.step_zero: {float: [0, 1], step: 0}
k.step_negative: {int: [0, 8], step: -2}
k.log_step: {int: [1, 8], step: 2, log: true}
k.empty: {categorical: []}
k.dup: {categorical: [a, b, a, a]}
k.twice: {int: [1, 2]}
k.twice: {int: [1, 3]}
k.twice_bad: {int: [3, 1]}
k.twice_bad: {int: [1, 3]}
k.inf: {float: [0, .inf]}
k.nan: {float: [.nan, 1]}
k.nan_choice: {categorical: [1.0, .nan]}
k.bounds: {int: [1, 2, 3]}
k.not_int: {int: [1.5, 3]}
k.two_kinds: {int: [1, 2], float: [1, 2]}
k.no_kind: {log: true}
k.scalar: 3
k.nested_choice: {categorical: [[1, 2], x]}
k.cat_option: {categorical: [a, b], step: 1}
k.log_word: {float: [1, 2], log: yes please}
k.fine: {int: [1, 2]}
'bad key': {int: [1, 2]}
";
    let got = problems(text);
    type Check = fn(&ProblemKind) -> bool;
    let expect: &[(&str, Check)] = &[
        ("k.kind", |k| matches!(k, ProblemKind::UnknownKind { kind } if kind == "uniform")),
        ("k.option", |k| matches!(k, ProblemKind::UnknownOption { option, kind: "float" } if option == "lg")),
        ("k.inverted", |k| matches!(k, ProblemKind::InvertedRange { .. })),
        ("k.inverted_int", |k| matches!(k, ProblemKind::InvertedRange { .. })),
        ("k.log_zero", |k| matches!(k, ProblemKind::LogNonPositive { .. })),
        ("k.log_int", |k| matches!(k, ProblemKind::LogNonPositive { .. })),
        ("k.step_zero", |k| matches!(k, ProblemKind::BadStep { .. })),
        ("k.step_negative", |k| matches!(k, ProblemKind::BadStep { .. })),
        ("k.log_step", |k| matches!(k, ProblemKind::LogWithStep { .. })),
        ("k.empty", |k| matches!(k, ProblemKind::EmptyChoices)),
        ("k.dup", |k| matches!(k, ProblemKind::DuplicateChoice { value } if value == "a")),
        ("k.twice", |k| matches!(k, ProblemKind::DuplicateKey)),
        ("k.inf", |k| matches!(k, ProblemKind::NonFinite { option: "high", .. })),
        ("k.nan", |k| matches!(k, ProblemKind::NonFinite { option: "low", .. })),
        ("k.nan_choice", |k| matches!(k, ProblemKind::NonFinite { .. })),
        ("k.bounds", |k| matches!(k, ProblemKind::BadBounds { .. })),
        ("k.not_int", |k| matches!(k, ProblemKind::BadBounds { what: "integers", .. })),
        ("k.two_kinds", |k| matches!(k, ProblemKind::SeveralKinds { .. })),
        ("k.no_kind", |k| matches!(k, ProblemKind::MissingKind)),
        ("k.scalar", |k| matches!(k, ProblemKind::NotADistribution { .. })),
        ("k.nested_choice", |k| matches!(k, ProblemKind::NonScalarChoice { .. })),
        ("k.cat_option", |k| matches!(k, ProblemKind::UnknownOption { kind: "categorical", .. })),
        ("k.log_word", |k| matches!(k, ProblemKind::BadLog { .. })),
        ("bad key", |k| matches!(k, ProblemKind::BadKey)),
    ];
    let twice_bad: Vec<_> = got.iter().filter(|(k, _)| k == "k.twice_bad").map(|(_, p)| p).collect();
    assert_eq!(twice_bad.len(), 2, "{twice_bad:?}");
    assert!(twice_bad.iter().any(|p| matches!(p, ProblemKind::InvertedRange { .. })), "{twice_bad:?}");
    assert!(twice_bad.iter().any(|p| matches!(p, ProblemKind::DuplicateKey)), "{twice_bad:?}");
    for (key, check) in expect {
        let of_key: Vec<_> = got.iter().filter(|(k, _)| k == key).collect();
        assert_eq!(of_key.len(), 1, "{key}: {of_key:?}\nall: {got:#?}");
        assert!(check(&of_key[0].1), "{key}: {:?}", of_key[0].1);
    }
    assert_eq!(got.len(), expect.len() + 2, "{got:#?}");
    assert!(!got.iter().any(|(k, _)| k == "k.fine"));
}

#[test]
fn whole_file_problems() {
    let empty = problems("");
    assert!(matches!(empty[..], [(ref k, ProblemKind::Empty)] if k.is_empty()), "{empty:?}");
    assert!(matches!(problems("~")[..], [(_, ProblemKind::Empty)]));
    // A repeated field inside one entry is caught by the YAML reader, which names it.
    let inner = problems("a: {int: [1, 2], int: [1, 3]}\n");
    assert!(
        matches!(&inner[..], [(_, ProblemKind::Yaml(m))] if m.contains("duplicate") && m.contains("int")),
        "{inner:?}"
    );
    assert!(matches!(problems("[1, 2]")[..], [(_, ProblemKind::Yaml(_))]));
    assert!(matches!(problems("a: {int: [1, 2]\n")[..], [(_, ProblemKind::Yaml(_))]));
    let missing = SearchSpace::load(std::path::Path::new("/nonexistent/space.yaml")).unwrap_err();
    assert!(matches!(missing.problems[..], [ref p] if matches!(p.kind, ProblemKind::Io(_))));
    assert!(missing.to_string().contains("/nonexistent/space.yaml"));
}

#[test]
fn garbage_never_panics() {
    let samples = [
        "",
        "~",
        "null",
        "3",
        "'x'",
        "[]",
        "{}",
        "- a\n- b",
        "a:",
        "a: ~",
        "a: []",
        "a: {}",
        "a: {float: ~}",
        "a: {float: [1]}",
        "a: {float: [a, b]}",
        "a: {float: {low: 1}}",
        "a: {int: [9223372036854775807, -9223372036854775808]}",
        "a: {int: [-9223372036854775808, 9223372036854775807]}",
        "a: {int: [0, 18446744073709551615]}",
        "a: {float: [-1e308, 1e308]}",
        "a: {float: [-1e308, 1e308], step: 1e-300}",
        "a: {float: [0, 1], step: 1e-300}",
        "a: {int: [1, 2], step: 9223372036854775807}",
        "a: {categorical: x}",
        "a: {categorical: [!tag x]}",
        "a: !tag {int: [1, 2]}",
        "? [1, 2]\n: {int: [1, 2]}",
        "a: &x {int: [1, 2]}\nb: *x",
        "a: {<<: {int: [1, 2]}}",
        "a: {int: [1, 2], int: [1, 3]}",
        "\u{0}\u{1}",
        "a: b: c",
        "---\n---\n",
        "a: {float: [1, 2], log: 1}",
        "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{",
        "a: {float: [.inf, -.inf], log: true, step: .nan}",
        "a.: {int: [1, 2]}",
        "..: {int: [1, 2]}",
        "a=b: {int: [1, 2]}",
        "1: {int: [1, 2]}",
    ];
    let mut seed = 0x1234_5678_u64;
    let mut texts: Vec<String> = samples.iter().map(|s| s.to_string()).collect();
    // Byte-level mutations of the example.
    for _ in 0..300 {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        for _ in 0..4 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let at = (seed >> 33) as usize % bytes.len();
            bytes[at] = b"{}[]:,-.0123456789e ~!&*'\"\nxa"[(seed >> 20) as usize % 29];
        }
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    for text in &texts {
        let result = std::panic::catch_unwind(|| {
            if let Ok(s) = SearchSpace::from_yaml_str(text, "fuzz.yaml") {
                let p = RandomSampler::new(3).sample(&s, 5, &empty_history()).unwrap();
                for (k, v) in &p {
                    assert!(s.get(k).unwrap().contains(v), "{k}: {v:?}");
                    s.to_override(k, v).unwrap();
                }
                if let Ok(len) = GridSampler::grid_len(&s) {
                    let _ = GridSampler::new(1).sample(&s, len.saturating_sub(1), &empty_history());
                }
            }
        });
        assert!(result.is_ok(), "panicked on {text:?}");
    }
}

#[test]
fn overrides_are_yaml_that_reads_back_as_the_value() {
    let s = space(
        "f: {float: [1e-30, 1e30], log: true}\ni: {int: [-5, 5]}\nc: {categorical: ['true', '1', plain, 1, 2.0, false, ~, 'a b', \"x\\ny\", \"p\\u2028q\\x85\", 'a: b', '#x']}\n",
    );
    for v in [1e-30, 1.0, 1e20, 1e30, 0.1, 123456.789] {
        let text = s.to_override("f", &ParamValue::Float(v)).unwrap();
        let raw = text.strip_prefix("f=").unwrap();
        assert_eq!(serde_yaml::from_str::<Value>(raw).unwrap(), Value::from(v), "{text}");
        assert!(raw.contains('.'), "{raw}");
    }
    assert_eq!(s.to_override("i", &ParamValue::Int(-3)).unwrap(), "i=-3");
    let Some(Distribution::Categorical { choices }) = s.get("c") else { panic!() };
    for (index, value) in choices.iter().enumerate() {
        let p = ParamValue::Categorical { index, value: value.clone() };
        let text = s.to_override("c", &p).unwrap();
        let raw = text.strip_prefix("c=").unwrap();
        assert!(!raw.chars().any(|c| c.is_control() || c == '\u{2028}'), "{raw:?}");
        assert_eq!(&serde_yaml::from_str::<Value>(raw).unwrap(), value, "{raw}");
    }
    assert_eq!(s.get("i").unwrap().value_from_yaml(&Value::from(6)), None);
    assert_eq!(s.get("c").unwrap().value_from_yaml(&Value::from("nope")), None);
    assert!(s.to_override("nope", &ParamValue::Int(1)).is_err());
    assert!(s.to_override("i", &ParamValue::Int(6)).is_err());
    assert!(s.to_override("i", &ParamValue::Float(1.0)).is_err());
    let wrong = ParamValue::Categorical { index: 0, value: Value::from("plain") };
    assert!(s.to_override("c", &wrong).is_err());
}

#[test]
fn random_draws_stay_in_range_and_follow_step_and_log() {
    let s = space(
        "lf: {float: [1e-4, 1.0], log: true}\nuf: {float: [-2.0, 3.0]}\nsf: {float: [0.0, 1.0], step: 0.25}\n\
         si: {int: [3, 23], step: 5}\nli: {int: [1, 1000], log: true}\nc: {categorical: [a, b, c, d, 5]}\n",
    );
    let mut sampler = RandomSampler::new(42);
    let n = 1000;
    let (mut below_geo, mut below_mid_log_int) = (0, 0);
    let mut sf_seen = BTreeSet::new();
    let mut si_counts = BTreeMap::new();
    let mut cat = [0u32; 5];
    let mut uf_sum = 0.0;
    for t in 0..n {
        let p = sampler.sample(&s, t, &empty_history()).unwrap();
        assert_eq!(p.len(), 6);
        for (k, v) in &p {
            assert!(s.get(k).unwrap().contains(v), "trial {t}: {k} = {v:?}");
        }
        let ParamValue::Float(lf) = p["lf"] else { panic!() };
        assert!((1e-4..=1.0).contains(&lf));
        if lf < 1e-2 {
            below_geo += 1;
        }
        let ParamValue::Float(uf) = p["uf"] else { panic!() };
        assert!((-2.0..=3.0).contains(&uf));
        uf_sum += uf;
        let ParamValue::Float(sf) = p["sf"] else { panic!() };
        assert!([0.0, 0.25, 0.5, 0.75, 1.0].contains(&sf), "{sf}");
        sf_seen.insert(sf.to_bits());
        let ParamValue::Int(si) = p["si"] else { panic!() };
        *si_counts.entry(si).or_insert(0) += 1;
        let ParamValue::Int(li) = p["li"] else { panic!() };
        assert!((1..=1000).contains(&li));
        if (li as f64) < (1000f64).sqrt() {
            below_mid_log_int += 1;
        }
        let ParamValue::Categorical { index, .. } = p["c"] else { panic!() };
        cat[index] += 1;
    }
    // Log-uniform: half the mass below the geometric mean (sd of the fraction is ~0.016).
    let frac = below_geo as f64 / n as f64;
    assert!((0.42..0.58).contains(&frac), "{frac}");
    let frac = below_mid_log_int as f64 / n as f64;
    assert!((0.40..0.60).contains(&frac), "{frac}");
    let mean = uf_sum / n as f64;
    assert!((0.3..0.7).contains(&mean), "uniform mean {mean}");
    assert_eq!(sf_seen.len(), 5);
    assert_eq!(si_counts.keys().copied().collect::<Vec<_>>(), [3, 8, 13, 18, 23]);
    // Chi-square with 4 degrees of freedom: 18.5 is the 0.999 quantile.
    let expected = n as f64 / 5.0;
    let chi2: f64 = cat.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    assert!(chi2 < 18.5, "categorical counts {cat:?}, chi2 {chi2}");
    let chi2: f64 = si_counts.values().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    assert!(chi2 < 18.5, "int step counts {si_counts:?}, chi2 {chi2}");
}

#[test]
fn random_params_depend_only_on_seed_trial_and_key() {
    let s = space(EXAMPLE);
    let h = empty_history();
    let a: Vec<_> = (0..20).map(|t| RandomSampler::new(7).sample(&s, t, &h).unwrap()).collect();
    // Out of order, with a fresh sampler per trial: the same.
    for t in (0..20).rev() {
        assert_eq!(RandomSampler::new(7).sample(&s, t, &h).unwrap(), a[t as usize]);
    }
    // Different trials differ.
    assert_ne!(a[0], a[1]);
    // A different seed gives different parameters.
    let b: Vec<_> = (0..20).map(|t| RandomSampler::new(8).sample(&s, t, &h).unwrap()).collect();
    let same = a.iter().zip(&b).filter(|(x, y)| x["distill.lambda"] == y["distill.lambda"]).count();
    assert_eq!(same, 0);
    // Removing a key leaves the other keys' draws alone.
    let smaller = space("distill.lambda: {float: [1e-3, 1e-1], log: true}\n");
    for (t, full) in a.iter().enumerate() {
        let p = RandomSampler::new(7).sample(&smaller, t as u64, &h).unwrap();
        assert_eq!(p["distill.lambda"], full["distill.lambda"]);
    }
}

#[test]
fn grid_visits_every_point_once_then_reports_exhaustion() {
    let s = space("a: {categorical: [x, y, z]}\nb: {int: [0, 6], step: 3}\nc: {float: [0.5, 1.0], step: 0.25}\n");
    let len = GridSampler::grid_len(&s).unwrap();
    assert_eq!(len, 27);
    let h = empty_history();
    let mut sampler = GridSampler::new(11);
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for t in 0..len {
        let p = sampler.sample(&s, t, &h).unwrap();
        assert_eq!(p.len(), 3);
        for (k, v) in &p {
            assert!(s.get(k).unwrap().contains(v), "{k}: {v:?}");
        }
        assert!(seen.insert(format!("{p:?}")), "point repeated at trial {t}: {p:?}");
        order.push(sampler.point_of_trial(len, t).unwrap());
    }
    assert_eq!(seen.len(), 27);
    assert_eq!(sampler.sample(&s, len, &h), Err(SampleError::GridExhausted { points: 27 }));
    assert_eq!(sampler.sample(&s, len + 100, &h), Err(SampleError::GridExhausted { points: 27 }));
    // Shuffled, and by the seed.
    assert_ne!(order, (0..len).collect::<Vec<_>>());
    let other: Vec<_> = (0..len).map(|t| GridSampler::new(12).point_of_trial(len, t).unwrap()).collect();
    assert_ne!(order, other);
    // Same seed, fresh sampler: the same point for the same trial (resume).
    assert_eq!(GridSampler::new(11).sample(&s, 5, &h).unwrap(), GridSampler::new(11).sample(&s, 5, &h).unwrap());
}

#[test]
fn grid_permutation_is_a_bijection_for_many_sizes() {
    for len in [1u64, 2, 3, 5, 16, 17, 100, 1000, 4097] {
        let g = GridSampler::new(len ^ 99);
        let points: BTreeSet<_> = (0..len).map(|t| g.point_of_trial(len, t).unwrap()).collect();
        assert_eq!(points.len() as u64, len);
        assert_eq!(points.last().copied(), Some(len - 1));
        assert_eq!(g.point_of_trial(len, len), None);
    }
}

#[test]
fn grid_needs_a_step_on_every_float() {
    let s = space("a: {int: [1, 2]}\nz.lr: {float: [1e-4, 1e-2], log: true}\n");
    assert_eq!(
        GridSampler::new(0).sample(&s, 0, &empty_history()),
        Err(SampleError::GridNeedsStep { key: "z.lr".into() })
    );
    let huge = space("a: {int: [0, 9223372036854775807]}\nb: {int: [0, 9223372036854775807]}\n");
    assert_eq!(GridSampler::grid_len(&huge), Err(SampleError::GridTooLarge));
}

#[test]
fn internal_and_yaml_representations_round_trip() {
    let s = space(EXAMPLE);
    let h = empty_history();
    for t in 0..50 {
        for (k, v) in RandomSampler::new(1).sample(&s, t, &h).unwrap() {
            let d = s.get(&k).unwrap();
            let x = d.to_internal(&v).unwrap();
            assert_eq!(d.from_internal(x).as_ref(), Some(&v), "{k}");
            assert_eq!(d.value_from_yaml(&v.to_yaml()), Some(v), "{k}");
        }
    }
}
