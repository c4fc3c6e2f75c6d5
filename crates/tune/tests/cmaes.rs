//! The CMA-ES sampler: better than random search on a shifted sphere, a pure function of the
//! seed and the history, always inside the space, categorical parameters drawn as the random
//! sampler draws them, and robust to degenerate histories.

mod support;

use support::*;
use tune::{
    CmaEsSampler, Direction, Distribution, History, ParamValue, Params, RandomSampler, Sampler, TrialState,
    TrialSummary,
};

const SPHERE: &str = "
x: {float: [-5.0, 5.0]}
y: {float: [-5.0, 5.0]}
z: {float: [-5.0, 5.0]}
";

/// A sphere with its minimum 0 at (1.5, -2, 0.7).
fn sphere(p: &Params) -> f64 {
    (num(p, "x") - 1.5).powi(2) + (num(p, "y") + 2.0).powi(2) + (num(p, "z") - 0.7).powi(2)
}

#[test]
fn beats_random_search_on_a_shifted_sphere() {
    let s = space(SPHERE);
    let (mut cma_best, mut rnd_best, mut wins) = (Vec::new(), Vec::new(), 0);
    for seed in 0..10 {
        let c = best(&run(&mut CmaEsSampler::new(seed), &s, 80, sphere));
        let r = best(&run(&mut RandomSampler::new(seed), &s, 80, sphere));
        wins += usize::from(c < r);
        cma_best.push(c);
        rnd_best.push(r);
    }
    let (mc, mr) = (median(cma_best.clone()), median(rnd_best.clone()));
    assert!(wins >= 8, "CMA-ES won {wins}/10: {cma_best:?} vs {rnd_best:?}");
    assert!(mc < mr, "median best {mc} vs random {mr}");
}

#[test]
fn maximising_follows_the_direction() {
    // Maximising -sphere must converge as minimising sphere does (values are negated).
    let s = space(SPHERE);
    let mut sampler = CmaEsSampler::new(3);
    let mut trials = Vec::new();
    for t in 0..80 {
        let params = sampler.sample(&s, t, &History::new(Direction::Maximize, &trials)).unwrap();
        let v = -sphere(&params);
        trials.push(complete(t, params, v));
    }
    let best_max = trials.iter().filter_map(|t| t.value).fold(f64::NEG_INFINITY, f64::max);
    let random = best(&run(&mut RandomSampler::new(3), &s, 80, sphere));
    assert!(-best_max < random, "maximised best {} vs random {random}", -best_max);
}

#[test]
fn suggestions_are_a_pure_function_of_seed_and_history() {
    let s = space(SPHERE);
    let trials = run(&mut CmaEsSampler::new(7), &s, 40, sphere);
    // A fresh sampler replaying every prefix suggests exactly what the study got.
    for k in 0..trials.len() {
        let h = History::new(Direction::Minimize, &trials[..k]);
        let again = CmaEsSampler::new(7).sample(&s, k as u64, &h).unwrap();
        assert_eq!(again, trials[k].params, "trial {k}");
    }
    // The same sampler asked twice gives the same answer; another seed another one.
    let h = History::new(Direction::Minimize, &trials);
    let mut a = CmaEsSampler::new(7);
    assert_eq!(a.sample(&s, 40, &h).unwrap(), a.sample(&s, 40, &h).unwrap());
    assert_ne!(a.sample(&s, 40, &h).unwrap(), CmaEsSampler::new(8).sample(&s, 40, &h).unwrap());
    // The first trial is the random sampler's.
    assert_eq!(trials[0].params, RandomSampler::new(7).sample(&s, 0, &History::new(Direction::Minimize, &[])).unwrap());
    // The strategy moves: a later trial is not the random sampler's draw.
    assert_ne!(trials[20].params, RandomSampler::new(7).sample(&s, 20, &h).unwrap());
}

#[test]
fn pruned_and_failed_trials_are_ignored() {
    let s = space(SPHERE);
    let trials = run(&mut CmaEsSampler::new(2), &s, 30, sphere);
    let mut noisy = Vec::new();
    for t in &trials {
        noisy.push(t.clone());
        noisy.push(TrialSummary {
            number: 0,
            state: TrialState::Pruned,
            params: t.params.clone(),
            value: Some(-1e9),
            last_step: Some(0),
        });
        noisy.push(TrialSummary {
            number: 0,
            state: TrialState::Failed,
            params: t.params.clone(),
            value: None,
            last_step: None,
        });
    }
    // Same complete trials, same number order → same suggestion.
    let n = 500;
    let a = CmaEsSampler::new(2).sample(&s, n, &History::new(Direction::Minimize, &trials)).unwrap();
    let noisy: Vec<TrialSummary> = noisy
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            if t.state != TrialState::Complete {
                t.number = 1000 + i as u64;
            }
            t
        })
        .collect();
    let b = CmaEsSampler::new(2).sample(&s, n, &History::new(Direction::Minimize, &noisy)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn suggestions_stay_in_range_and_on_the_step() {
    let s = space(
        "
a: {float: [-1.0, 2.0]}
lr: {float: [1.0e-5, 1.0e-1], log: true}
n: {int: [3, 17], step: 2}
h: {int: [1, 1000], log: true}
q: {float: [0.0, 1.0], step: 0.25}
",
    );
    // An objective pushing every parameter against its upper bound exercises the clamping.
    let f = |p: &Params| -(num(p, "a") + num(p, "lr").ln() + num(p, "n") + num(p, "h").ln() + num(p, "q"));
    for seed in 0..3 {
        let trials = run(&mut CmaEsSampler::new(seed), &s, 60, f);
        for t in &trials {
            for (k, d) in s.params() {
                assert!(d.contains(&t.params[k]), "seed {seed} trial {}: {k} = {:?}", t.number, t.params[k]);
            }
        }
        // It does push them up: the later trials score better than the early ones.
        let mean = |ts: &[TrialSummary]| ts.iter().filter_map(|t| t.value).sum::<f64>() / ts.len() as f64;
        let (early, late) = (mean(&trials[1..16]), mean(&trials[45..]));
        assert!(late < early, "seed {seed}: late mean {late} vs early {early}");
    }
}

#[test]
fn categorical_parameters_are_drawn_as_the_random_sampler_draws_them() {
    let s = space(
        "
x: {float: [-5.0, 5.0]}
y: {float: [-5.0, 5.0]}
opt: {categorical: [sgd, adam, rmsprop]}
fixed: {int: [4, 4]}
",
    );
    let f = |p: &Params| (num(p, "x") - 1.0).powi(2) + num(p, "y").powi(2);
    let mut sampler = CmaEsSampler::new(11);
    let trials = run(&mut sampler, &s, 30, f);
    let random = RandomSampler::new(11);
    let dist = s.get("opt").unwrap();
    for t in &trials {
        assert_eq!(t.params["opt"], random.draw("opt", dist, t.number), "trial {}", t.number);
        assert_eq!(t.params["fixed"], ParamValue::Int(4));
    }
    let w = sampler.fallback_warning(&s).unwrap();
    assert!(w.contains("opt") && !w.contains("x,"), "{w}");
    assert!(sampler.fallback_warning(&space(SPHERE)).is_none());
    // Only categoricals: every parameter is the random sampler's.
    let cat = space("opt: {categorical: [sgd, adam]}");
    let trials = run(&mut CmaEsSampler::new(1), &cat, 5, |_| 0.0);
    for t in &trials {
        let d: &Distribution = cat.get("opt").unwrap();
        assert_eq!(t.params["opt"], random_draw(1, d, t.number));
    }
}

fn random_draw(seed: u64, d: &Distribution, n: u64) -> ParamValue {
    RandomSampler::new(seed).draw("opt", d, n)
}

#[test]
fn degenerate_histories_do_not_panic() {
    let s = space(SPHERE);
    let mut sampler = CmaEsSampler::new(0);
    let check = |p: &Params| s.params().iter().all(|(k, d)| d.contains(&p[k]));
    assert!(check(&sampler.sample(&s, 0, &History::new(Direction::Minimize, &[])).unwrap()));
    // NaN and infinite values, all-equal values, and out-of-space or missing parameters.
    let base = run(&mut CmaEsSampler::new(0), &s, 20, sphere);
    let mut bad: Vec<TrialSummary> = base
        .iter()
        .map(|t| TrialSummary { value: Some([f64::NAN, f64::INFINITY, 1.0][t.number as usize % 3]), ..t.clone() })
        .collect();
    let mut stray = Params::new();
    stray.insert("x".into(), ParamValue::Float(99.0));
    stray.insert("w".into(), ParamValue::Int(1));
    bad.push(complete(20, stray, 0.0));
    bad.push(complete(21, Params::new(), 0.0));
    for n in [22, 23] {
        assert!(check(&sampler.sample(&s, n, &History::new(Direction::Minimize, &bad)).unwrap()));
    }
    // Identical points with identical values collapse sigma; sampling must stay valid.
    let mut same = Vec::new();
    for t in 0..200 {
        let mut p = Params::new();
        for k in ["x", "y", "z"] {
            p.insert(k.into(), ParamValue::Float(0.25));
        }
        same.push(complete(t, p, 3.0));
    }
    assert!(check(&sampler.sample(&s, 200, &History::new(Direction::Minimize, &same)).unwrap()));
    // All NaN: still the startup phase.
    let nan: Vec<TrialSummary> = base.iter().map(|t| TrialSummary { value: Some(f64::NAN), ..t.clone() }).collect();
    let got = sampler.sample(&s, 20, &History::new(Direction::Minimize, &nan)).unwrap();
    assert_eq!(got, RandomSampler::new(0).sample(&s, 20, &History::new(Direction::Minimize, &nan)).unwrap());
}
