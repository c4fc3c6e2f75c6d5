//! The TPE sampler, multivariate (Optuna 5's default) and univariate: better than random
//! search on fixed test functions (the multivariate one on a correlated valley), reproducible,
//! random for the startup trials, always inside the space, robust to degenerate histories, and
//! lying about running trials as Optuna's constant liar does.

mod support;

use support::*;
use tune::{Direction, History, ParamValue, Params, RandomSampler, Sampler, TpeSampler, TrialState, TrialSummary};

const SPACE: &str = "
x: {float: [-5.0, 5.0]}
y: {float: [-5.0, 5.0]}
lr: {float: [1.0e-5, 1.0e-1], log: true}
opt: {categorical: [sgd, adam, rmsprop]}
";

/// Optuna 5's independent TPE (`multivariate=False`).
fn univariate(seed: u64) -> TpeSampler {
    TpeSampler { multivariate: false, ..TpeSampler::new(seed) }
}

/// Both modes: (name, sampler for a seed).
type Mode = (&'static str, fn(u64) -> TpeSampler);

const MODES: [Mode; 2] = [("multivariate", TpeSampler::new), ("univariate", univariate)];

/// A shifted quadratic with its minimum 0 at x = 1.5, y = -2, lr = 1e-3, opt = adam.
fn objective(p: &Params) -> f64 {
    let cat = match &p["opt"] {
        ParamValue::Categorical { index, .. } => [3.0, 0.0, 1.5][*index],
        other => panic!("opt: {other:?}"),
    };
    (num(p, "x") - 1.5).powi(2) + (num(p, "y") + 2.0).powi(2) + (num(p, "lr").log10() + 3.0).powi(2) + cat
}

#[test]
fn defaults_are_optuna_5s() {
    let s = TpeSampler::new(7);
    assert!(s.multivariate, "multivariate=None resolves to True for a single objective");
    assert!(s.constant_liar);
    assert_eq!((s.seed, s.n_startup_trials, s.n_ei_candidates, s.prior_weight), (7, 10, 24, 1.0));
    assert!(s.consider_magic_clip && !s.consider_endpoints);
}

#[test]
fn tpe_beats_random_search_on_a_shifted_quadratic() {
    let space = space(SPACE);
    for (mode, tpe) in MODES {
        let (mut tpe_best, mut random_best, mut wins) = (Vec::new(), Vec::new(), 0);
        for seed in 0..10 {
            let t = best(&run(&mut tpe(seed), &space, 60, objective));
            let r = best(&run(&mut RandomSampler::new(seed), &space, 60, objective));
            wins += usize::from(t < r);
            tpe_best.push(t);
            random_best.push(r);
        }
        let (mt, mr) = (median(tpe_best.clone()), median(random_best.clone()));
        // The separable objective suits the univariate TPE best.
        let needed = if mode == "univariate" { 8 } else { 7 };
        assert!(wins >= needed, "{mode}: better in only {wins}/10 seeds: tpe {tpe_best:?} random {random_best:?}");
        assert!(mt < 0.5 * mr, "{mode}: median best: tpe {mt} random {mr}");
    }
}

/// A narrow valley along the diagonal (condition number 100, rotated by 45 degrees), minimum 0
/// at x = 1, y = 0.5: the parameters only do well together.
fn rotated_valley(p: &Params) -> f64 {
    let (x, y) = (num(p, "x") - 1.0, num(p, "y") - 0.5);
    let (along, across) = ((x + y) / 2f64.sqrt(), (x - y) / 2f64.sqrt());
    along * along + 100.0 * across * across
}

#[test]
fn multivariate_tpe_beats_random_search_on_a_rotated_narrow_valley() {
    let space = space("x: {float: [-5.0, 5.0]}\ny: {float: [-5.0, 5.0]}\n");
    let (mut tpe_best, mut random_best, mut wins) = (Vec::new(), Vec::new(), 0);
    for seed in 0..12 {
        let t = best(&run(&mut TpeSampler::new(seed), &space, 40, rotated_valley));
        let r = best(&run(&mut RandomSampler::new(seed), &space, 40, rotated_valley));
        wins += usize::from(t < r);
        tpe_best.push(t);
        random_best.push(r);
    }
    let (mt, mr) = (median(tpe_best.clone()), median(random_best.clone()));
    assert!(mt < 0.5 * mr, "median best: tpe {mt} random {mr}: tpe {tpe_best:?} random {random_best:?}");
    assert!(wins >= 9, "better in only {wins}/12 seeds: tpe {tpe_best:?} random {random_best:?}");
}

#[test]
fn the_same_seed_and_history_give_the_same_suggestion() {
    let space = space(SPACE);
    for (mode, tpe) in MODES {
        let trials = run(&mut tpe(3), &space, 30, objective);
        let history = History::new(Direction::Minimize, &trials);
        let a = tpe(3).sample(&space, 30, &history).unwrap();
        let b = tpe(3).sample(&space, 30, &history).unwrap();
        assert_eq!(a, b, "{mode}");
        // A resumed study (a fresh sampler, the history replayed) repeats an uninterrupted one.
        let mut again = tpe(3);
        let replayed: Vec<Params> = (0..30)
            .map(|t| again.sample(&space, t, &History::new(Direction::Minimize, &trials[..t as usize])).unwrap())
            .collect();
        assert!(replayed.iter().zip(&trials).all(|(p, t)| *p == t.params), "{mode}");
        // The seed and the trial number matter.
        assert_ne!(a, tpe(4).sample(&space, 30, &history).unwrap(), "{mode}");
        assert_ne!(a, tpe(3).sample(&space, 31, &history).unwrap(), "{mode}");
    }
    // The two modes draw different candidates from different models.
    let trials = run(&mut RandomSampler::new(3), &space, 30, objective);
    let history = History::new(Direction::Minimize, &trials);
    assert_ne!(
        TpeSampler::new(3).sample(&space, 30, &history).unwrap(),
        univariate(3).sample(&space, 30, &history).unwrap()
    );
}

#[test]
fn startup_trials_are_the_random_samplers() {
    let space = space(SPACE);
    let mut random = RandomSampler::new(11);
    let mut trials = run(&mut TpeSampler::new(11), &space, 10, objective);
    for (t, trial) in trials.iter().enumerate() {
        let expected = random.sample(&space, t as u64, &History::new(Direction::Minimize, &[])).unwrap();
        assert_eq!(trial.params, expected, "trial {t}");
    }
    // Failed trials and complete ones without a value do not count towards the ten.
    trials.truncate(9);
    for n in 9..14 {
        let params = random.sample(&space, n, &History::new(Direction::Minimize, &[])).unwrap();
        let (state, value) = if n < 12 { (TrialState::Failed, None) } else { (TrialState::Complete, Some(f64::NAN)) };
        trials.push(TrialSummary { number: n, state, params, value, last_step: None });
    }
    let history = History::new(Direction::Minimize, &trials);
    let expected = random.sample(&space, 14, &history).unwrap();
    assert_eq!(TpeSampler::new(11).sample(&space, 14, &history).unwrap(), expected);
    // A tenth finished trial (a pruned one counts) ends the startup.
    let params = random.sample(&space, 14, &history).unwrap();
    trials.push(TrialSummary { number: 14, state: TrialState::Pruned, params, value: Some(5.0), last_step: Some(3) });
    let history = History::new(Direction::Minimize, &trials);
    let tpe = TpeSampler::new(11).sample(&space, 15, &history).unwrap();
    assert_ne!(tpe, random.sample(&space, 15, &history).unwrap());
}

#[test]
fn suggestions_stay_in_range_on_the_step_and_among_the_choices() {
    let space = space(
        "
a: {float: [-1.0, 2.0], step: 0.25}
b: {int: [-3, 17], step: 4}
c: {int: [1, 1000], log: true}
d: {float: [1.0e-3, 10.0], log: true}
e: {categorical: [one, 2, true]}
f: {float: [0.5, 0.5]}
g: {int: [0, 3]}
",
    );
    // Minimum at an edge of every range, so the kernels press against the bounds.
    let f = |p: &Params| {
        let e = match &p["e"] {
            ParamValue::Categorical { index, .. } => *index as f64,
            _ => unreachable!(),
        };
        (num(p, "a") - 2.0).abs()
            + (num(p, "b") + 3.0).abs()
            + (1000.0 - num(p, "c")) / 100.0
            + num(p, "d")
            + e
            + (3.0 - num(p, "g"))
    };
    let random = best(&run(&mut RandomSampler::new(5), &space, 150, f));
    for (mode, tpe) in MODES {
        let trials = run(&mut tpe(5), &space, 150, f);
        for t in &trials {
            assert_eq!(t.params.len(), space.params().len());
            for (k, v) in &t.params {
                assert!(space.get(k).unwrap().contains(v), "{mode} trial {}: {k} = {v:?}", t.number);
            }
        }
        // The model found the corners: the best value is far below random search's.
        assert!(best(&trials) < random, "{mode}: tpe {} random {random}", best(&trials));
        let late: Vec<_> = trials[100..].iter().map(|t| num(&t.params, "b")).collect();
        assert!(late.iter().filter(|&&b| b == -3.0).count() > 25, "{mode}: b late: {late:?}");
    }
}

#[test]
fn degenerate_histories_do_not_panic() {
    let space = space(SPACE);
    let random = RandomSampler::new(2);
    let draw = |n: u64| random.clone().sample(&space, n, &History::new(Direction::Minimize, &[])).unwrap();
    let check = |trials: &[TrialSummary], direction| {
        let p = TpeSampler::new(2).sample(&space, 40, &History::new(direction, trials)).unwrap();
        assert!(p.iter().all(|(k, v)| space.get(k).unwrap().contains(v)), "{p:?}");
        let q = univariate(2).sample(&space, 40, &History::new(direction, trials)).unwrap();
        assert!(q.iter().all(|(k, v)| space.get(k).unwrap().contains(v)), "{q:?}");
        assert_eq!(p.len(), space.params().len());
        p
    };
    // Empty: random.
    assert_eq!(check(&[], Direction::Minimize), draw(40));
    // All-NaN complete trials: ignored, so random.
    let nan: Vec<_> = (0..20).map(|n| complete(n, draw(n), f64::NAN)).collect();
    assert_eq!(check(&nan, Direction::Maximize), draw(40));
    // Pruned trials with NaN or no intermediate values, infinite complete values.
    for value in [Some(f64::NAN), None, Some(f64::INFINITY), Some(f64::NEG_INFINITY)] {
        let pruned: Vec<_> = (0..20)
            .map(|n| TrialSummary {
                number: n,
                state: TrialState::Pruned,
                params: draw(n),
                value,
                last_step: Some(n % 3),
            })
            .collect();
        check(&pruned, Direction::Minimize);
    }
    let inf: Vec<_> = (0..20).map(|n| complete(n, draw(n), if n % 2 == 0 { f64::INFINITY } else { 1.0 })).collect();
    check(&inf, Direction::Minimize);
    check(&inf, Direction::Maximize);
    // Trials whose params miss a key or lie outside the space.
    let odd: Vec<_> = (0..20)
        .map(|n| {
            let mut p = draw(n);
            if n % 2 == 0 {
                p.remove("x");
            } else {
                p.insert("y".into(), ParamValue::Float(99.0));
            }
            complete(n, p, n as f64)
        })
        .collect();
    check(&odd, Direction::Minimize);
    // Only running trials (with the constant liar they sit in the above set): random.
    let running: Vec<_> = (0..20)
        .map(|n| TrialSummary { number: n, state: TrialState::Running, params: draw(n), value: None, last_step: None })
        .collect();
    assert_eq!(check(&running, Direction::Minimize), draw(40));
}

#[test]
fn direction_and_pruned_values_are_read_as_optuna_does() {
    let space = space(SPACE);
    let trials = run(&mut RandomSampler::new(8), &space, 30, objective);
    let flip = |trials: &[TrialSummary]| -> Vec<TrialSummary> {
        trials.iter().map(|t| TrialSummary { value: t.value.map(|v| -v), ..t.clone() }).collect()
    };
    for (mode, tpe) in MODES {
        let min = tpe(8).sample(&space, 30, &History::new(Direction::Minimize, &trials)).unwrap();
        let max = tpe(8).sample(&space, 30, &History::new(Direction::Maximize, &flip(&trials))).unwrap();
        assert_eq!(min, max, "{mode}");
        // The other direction learns the opposite: a different suggestion.
        let wrong = tpe(8).sample(&space, 30, &History::new(Direction::Maximize, &trials)).unwrap();
        assert_ne!(min, wrong, "{mode}");
        // Pruned trials at one step are ranked by their last value (here all trials are pruned).
        let pruned: Vec<_> = trials
            .iter()
            .map(|t| TrialSummary { state: TrialState::Pruned, last_step: Some(4), ..t.clone() })
            .collect();
        let p_min = tpe(8).sample(&space, 30, &History::new(Direction::Minimize, &pruned)).unwrap();
        let p_max = tpe(8).sample(&space, 30, &History::new(Direction::Maximize, &flip(&pruned))).unwrap();
        assert_eq!(p_min, p_max, "{mode}");
        assert_eq!(p_min, min, "{mode}: with no complete trial the pruned ones are ranked the same way");
    }
}

#[test]
fn pruned_trials_are_ranked_by_how_far_they_got_then_by_value() {
    let space = space(SPACE);
    let base = run(&mut RandomSampler::new(6), &space, 30, objective);
    // The trials that stopped earliest report the best values.
    let pruned = |value: &dyn Fn(&TrialSummary, u64) -> f64, step: &dyn Fn(u64) -> u64| -> Vec<TrialSummary> {
        base.iter()
            .map(|t| {
                let reached = (t.number % 4) * 10;
                TrialSummary {
                    state: TrialState::Pruned,
                    value: Some(value(t, reached)),
                    last_step: Some(step(reached)),
                    ..t.clone()
                }
            })
            .collect()
    };
    let by_step = pruned(&|t, reached| t.value.unwrap() + reached as f64, &|reached| reached);
    // The same order, spelt out as values at one step: (-step, value) lexicographically.
    let as_values = pruned(&|t, reached| t.value.unwrap() + reached as f64 - 1e4 * reached as f64, &|_| 0);
    // Ranked by value alone, the early stoppers would win.
    let by_value = pruned(&|t, reached| t.value.unwrap() + reached as f64, &|_| 0);
    for (mode, tpe) in MODES {
        let suggest =
            |trials: &[TrialSummary]| tpe(6).sample(&space, 30, &History::new(Direction::Minimize, trials)).unwrap();
        assert_eq!(suggest(&by_step), suggest(&as_values), "{mode}");
        assert_ne!(suggest(&by_step), suggest(&by_value), "{mode}");
    }
}

#[test]
fn running_trials_are_lied_about_as_optunas_constant_liar_does() {
    let space = space(SPACE);
    let running = |trials: &mut Vec<TrialSummary>, numbers: std::ops::Range<u64>, params: &Params| {
        trials.extend(numbers.map(|number| TrialSummary {
            number,
            state: TrialState::Running,
            params: params.clone(),
            value: None,
            last_step: None,
        }))
    };
    let (mut near_liar, mut near_plain) = (Vec::new(), Vec::new());
    for (mode, tpe) in MODES {
        for seed in 0..12 {
            let finished = run(&mut RandomSampler::new(seed + 100), &space, 30, objective);
            let best = finished.iter().min_by(|a, b| a.value.partial_cmp(&b.value).unwrap()).unwrap().params.clone();
            // Five trials are being evaluated at the best configuration so far.
            let mut trials = finished.clone();
            running(&mut trials, 30..35, &best);
            let history = History::new(Direction::Minimize, &trials);
            let liar = tpe(seed).sample(&space, 35, &history).unwrap();
            let plain = TpeSampler { constant_liar: false, ..tpe(seed) };
            let ignored = plain.clone().sample(&space, 35, &history).unwrap();
            // Without the liar, running trials are not read at all.
            let without = plain.clone().sample(&space, 35, &History::new(Direction::Minimize, &finished)).unwrap();
            assert_eq!(ignored, without, "{mode} seed {seed}");
            // The trial being sampled, listed as running, is left out.
            let mut with_itself = finished.clone();
            running(&mut with_itself, 30..34, &best);
            let fewer = tpe(seed).sample(&space, 34, &History::new(Direction::Minimize, &with_itself)).unwrap();
            let mut listed = with_itself.clone();
            running(&mut listed, 34..35, &best);
            let itself = tpe(seed).sample(&space, 34, &History::new(Direction::Minimize, &listed)).unwrap();
            assert_eq!(fewer, itself, "{mode} seed {seed}");
            let distance =
                |p: &Params| ((num(p, "x") - num(&best, "x")).powi(2) + (num(p, "y") - num(&best, "y")).powi(2)).sqrt();
            near_liar.push(distance(&liar));
            near_plain.push(distance(&ignored));
        }
        // The running trials count among the bad ones: suggestions keep further away from them.
        let (l, p) = (median(near_liar.clone()), median(near_plain.clone()));
        assert!(l > p, "{mode}: median distance to the running trials: liar {l}, without {p}");
        near_liar.clear();
        near_plain.clear();
    }
    // Running trials do not end the startup: 9 finished and 5 running trials still get a random draw.
    let mut trials = run(&mut RandomSampler::new(1), &space, 9, objective);
    let params = trials[0].params.clone();
    running(&mut trials, 9..14, &params);
    let history = History::new(Direction::Minimize, &trials);
    let random = RandomSampler::new(1).sample(&space, 14, &history).unwrap();
    assert_eq!(TpeSampler::new(1).sample(&space, 14, &history).unwrap(), random);
}
