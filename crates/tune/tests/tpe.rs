//! The TPE sampler: better than random search on a fixed test function, reproducible,
//! random for the startup trials, always inside the space, and robust to degenerate histories.

mod support;

use support::*;
use tune::{Direction, History, ParamValue, Params, RandomSampler, Sampler, TpeSampler, TrialState, TrialSummary};

const SPACE: &str = "
x: {float: [-5.0, 5.0]}
y: {float: [-5.0, 5.0]}
lr: {float: [1.0e-5, 1.0e-1], log: true}
opt: {categorical: [sgd, adam, rmsprop]}
";

/// A shifted quadratic with its minimum 0 at x = 1.5, y = -2, lr = 1e-3, opt = adam.
fn objective(p: &Params) -> f64 {
    let cat = match &p["opt"] {
        ParamValue::Categorical { index, .. } => [3.0, 0.0, 1.5][*index],
        other => panic!("opt: {other:?}"),
    };
    (num(p, "x") - 1.5).powi(2) + (num(p, "y") + 2.0).powi(2) + (num(p, "lr").log10() + 3.0).powi(2) + cat
}

#[test]
fn tpe_beats_random_search_on_a_shifted_quadratic() {
    let space = space(SPACE);
    let (mut tpe_best, mut random_best, mut wins) = (Vec::new(), Vec::new(), 0);
    for seed in 0..10 {
        let t = best(&run(&mut TpeSampler::new(seed), &space, 60, objective));
        let r = best(&run(&mut RandomSampler::new(seed), &space, 60, objective));
        wins += usize::from(t < r);
        tpe_best.push(t);
        random_best.push(r);
    }
    let (mt, mr) = (median(tpe_best.clone()), median(random_best.clone()));
    assert!(wins >= 8, "TPE better in only {wins}/10 seeds: tpe {tpe_best:?} random {random_best:?}");
    assert!(mt < mr, "median best: tpe {mt} random {mr}");
}

#[test]
fn the_same_seed_and_history_give_the_same_suggestion() {
    let space = space(SPACE);
    let trials = run(&mut TpeSampler::new(3), &space, 30, objective);
    let history = History::new(Direction::Minimize, &trials);
    let a = TpeSampler::new(3).sample(&space, 30, &history).unwrap();
    let b = TpeSampler::new(3).sample(&space, 30, &history).unwrap();
    assert_eq!(a, b);
    // A resumed study (a fresh sampler, the history replayed) repeats an uninterrupted one.
    let mut again = TpeSampler::new(3);
    let replayed: Vec<Params> = (0..30)
        .map(|t| again.sample(&space, t, &History::new(Direction::Minimize, &trials[..t as usize])).unwrap())
        .collect();
    assert!(replayed.iter().zip(&trials).all(|(p, t)| *p == t.params));
    // The seed and the trial number matter.
    assert_ne!(a, TpeSampler::new(4).sample(&space, 30, &history).unwrap());
    assert_ne!(a, TpeSampler::new(3).sample(&space, 31, &history).unwrap());
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
        trials.push(TrialSummary { number: n, state, params, value });
    }
    let history = History::new(Direction::Minimize, &trials);
    let expected = random.sample(&space, 14, &history).unwrap();
    assert_eq!(TpeSampler::new(11).sample(&space, 14, &history).unwrap(), expected);
    // A tenth finished trial (a pruned one counts) ends the startup.
    let params = random.sample(&space, 14, &history).unwrap();
    trials.push(TrialSummary { number: 14, state: TrialState::Pruned, params, value: Some(5.0) });
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
    let trials = run(&mut TpeSampler::new(5), &space, 150, f);
    for t in &trials {
        assert_eq!(t.params.len(), space.params().len());
        for (k, v) in &t.params {
            assert!(space.get(k).unwrap().contains(v), "trial {}: {k} = {v:?}", t.number);
        }
    }
    // The model found the corners: the best value is far below random search's.
    let random = best(&run(&mut RandomSampler::new(5), &space, 150, f));
    assert!(best(&trials) < random, "tpe {} random {random}", best(&trials));
    let late: Vec<_> = trials[100..].iter().map(|t| num(&t.params, "b")).collect();
    assert!(late.iter().filter(|&&b| b == -3.0).count() > 25, "b late: {late:?}");
}

#[test]
fn degenerate_histories_do_not_panic() {
    let space = space(SPACE);
    let random = RandomSampler::new(2);
    let draw = |n: u64| random.clone().sample(&space, n, &History::new(Direction::Minimize, &[])).unwrap();
    let check = |trials: &[TrialSummary], direction| {
        let p = TpeSampler::new(2).sample(&space, 40, &History::new(direction, trials)).unwrap();
        assert!(p.iter().all(|(k, v)| space.get(k).unwrap().contains(v)), "{p:?}");
        p
    };
    // Empty: random.
    assert_eq!(check(&[], Direction::Minimize), draw(40));
    // All-NaN complete trials: ignored, so random.
    let nan: Vec<_> = (0..20).map(|n| complete(n, draw(n), f64::NAN)).collect();
    assert_eq!(check(&nan, Direction::Maximize), draw(40));
    // Pruned trials with NaN or no intermediate values, infinite complete values.
    for value in [Some(f64::NAN), None, Some(f64::INFINITY), Some(f64::NEG_INFINITY)] {
        let pruned: Vec<_> =
            (0..20).map(|n| TrialSummary { number: n, state: TrialState::Pruned, params: draw(n), value }).collect();
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
}

#[test]
fn direction_and_pruned_values_are_read_as_optuna_does() {
    let space = space(SPACE);
    let trials = run(&mut RandomSampler::new(8), &space, 30, objective);
    let flip = |trials: &[TrialSummary]| -> Vec<TrialSummary> {
        trials.iter().map(|t| TrialSummary { value: t.value.map(|v| -v), ..t.clone() }).collect()
    };
    let min = TpeSampler::new(8).sample(&space, 30, &History::new(Direction::Minimize, &trials)).unwrap();
    let max = TpeSampler::new(8).sample(&space, 30, &History::new(Direction::Maximize, &flip(&trials))).unwrap();
    assert_eq!(min, max);
    // The other direction learns the opposite: a different suggestion.
    let wrong = TpeSampler::new(8).sample(&space, 30, &History::new(Direction::Maximize, &trials)).unwrap();
    assert_ne!(min, wrong);
    // Pruned trials are ranked by their last value too (here all trials are pruned).
    let pruned: Vec<_> = trials.iter().map(|t| TrialSummary { state: TrialState::Pruned, ..t.clone() }).collect();
    let p_min = TpeSampler::new(8).sample(&space, 30, &History::new(Direction::Minimize, &pruned)).unwrap();
    let p_max = TpeSampler::new(8).sample(&space, 30, &History::new(Direction::Maximize, &flip(&pruned))).unwrap();
    assert_eq!(p_min, p_max);
    assert_eq!(p_min, min, "with no complete trial the pruned ones are ranked the same way");
}
