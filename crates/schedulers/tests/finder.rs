//! Behaviour of the LR range finder: sweep grid, smoothing, divergence, suggestion, report and
//! output files. Expected values are computed here independently of the implementation.

use std::fs;
use std::io::Cursor;

use schedulers::finder::{FinderConfig, FinderPoint, Flow, LrFinder, PLOT_SIZE, SweepMode, format_sci};

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs())
}

/// Config with no smoothing and no skipped points, for tests that look at raw behaviour.
fn plain(num_steps: usize) -> FinderConfig {
    FinderConfig { num_steps, smoothing: 0.0, skip_begin: 0, skip_end: 0, ..FinderConfig::default() }
}

/// Feeds `loss(lr)` to the finder until it stops; returns the final flow.
fn run(finder: &mut LrFinder, loss: impl Fn(f64) -> f64) -> Flow {
    while let Some(lr) = finder.next_lr() {
        let flow = finder.record(loss(lr));
        if flow != Flow::Continue {
            return flow;
        }
    }
    panic!("next_lr returned None while record said Continue");
}

// 1. Sweep endpoints and spacing.

#[test]
fn exponential_sweep_hits_both_endpoints_with_a_constant_ratio() {
    for (min_lr, max_lr, n) in [(1e-7, 10.0, 100), (1e-5, 1.0, 2), (3e-4, 7e-1, 37)] {
        let c = FinderConfig { min_lr, max_lr, num_steps: n, ..FinderConfig::default() };
        assert_eq!(c.mode, SweepMode::Exponential);
        assert_eq!(c.lr_at(0), min_lr);
        assert!(rel_close(c.lr_at(n - 1), max_lr, 1e-12), "{} vs {max_lr}", c.lr_at(n - 1));
        let ratio = (max_lr / min_lr).powf(1.0 / (n - 1) as f64);
        for k in 1..n {
            assert!(rel_close(c.lr_at(k) / c.lr_at(k - 1), ratio, 1e-12), "k = {k}");
            // Independently: log-spaced from log(min) to log(max).
            let expected = 10f64.powf(min_lr.log10() + k as f64 / (n - 1) as f64 * (max_lr.log10() - min_lr.log10()));
            assert!(rel_close(c.lr_at(k), expected, 1e-12), "k = {k}: {} vs {expected}", c.lr_at(k));
        }
    }
}

#[test]
fn linear_sweep_hits_both_endpoints_with_a_constant_difference() {
    let (min_lr, max_lr, n) = (1e-4, 0.5, 51);
    let c = FinderConfig { min_lr, max_lr, num_steps: n, mode: SweepMode::Linear, ..FinderConfig::default() };
    assert_eq!(c.lr_at(0), min_lr);
    assert!(rel_close(c.lr_at(n - 1), max_lr, 1e-12));
    let step = (max_lr - min_lr) / (n - 1) as f64;
    for k in 1..n {
        assert!(rel_close(c.lr_at(k) - c.lr_at(k - 1), step, 1e-9), "k = {k}");
    }
}

#[test]
fn finder_asks_for_exactly_the_sweep_grid_then_stops() {
    let c = FinderConfig { num_steps: 20, skip_begin: 2, skip_end: 1, ..FinderConfig::default() };
    let mut f = LrFinder::new(c.clone());
    let mut asked = Vec::new();
    while let Some(lr) = f.next_lr() {
        asked.push(lr);
        let flow = f.record(1.0);
        assert_eq!(flow, if asked.len() == 20 { Flow::Done } else { Flow::Continue });
    }
    let grid: Vec<f64> = (0..20).map(|k| c.lr_at(k)).collect();
    assert_eq!(asked, grid);
    assert_eq!(f.points().iter().map(|p| p.lr).collect::<Vec<_>>(), grid);
    assert_eq!(f.points().iter().map(|p| p.step).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
    assert_eq!(f.diverged_at(), None);
}

// 2. Smoothing.

#[test]
fn smoothing_matches_a_normalised_weighted_average() {
    let beta: f64 = 0.9;
    let losses = [2.0, 1.5, 1.8, 1.2, 1.0, 0.7];
    let mut f = LrFinder::new(FinderConfig { smoothing: beta, ..plain(10) });
    for &l in &losses {
        assert_eq!(f.record(l), Flow::Continue);
    }
    let points = f.points();
    // The bias-corrected EMA is the average of the losses so far weighted by β^(age):
    // smoothed_k = Σ_j β^(k−j) loss_j / Σ_j β^(k−j).
    for k in 0..losses.len() {
        let num: f64 = (0..=k).map(|j| beta.powi((k - j) as i32) * losses[j]).sum();
        let den: f64 = (0..=k).map(|j| beta.powi((k - j) as i32)).sum();
        assert!(rel_close(points[k].smoothed, num / den, 1e-12), "k = {k}: {} vs {}", points[k].smoothed, num / den);
        assert_eq!(points[k].loss, losses[k]);
    }
    // By hand: the first smoothed loss is the first loss; the second is (0.9·2 + 1.5) / 1.9.
    assert_eq!(points[0].smoothed, 2.0);
    assert!(rel_close(points[1].smoothed, 3.3 / 1.9, 1e-12));
}

#[test]
fn zero_smoothing_passes_losses_through() {
    let mut f = LrFinder::new(plain(5));
    for l in [3.0, 2.0, 2.5, 1.0] {
        f.record(l);
    }
    let smoothed: Vec<f64> = f.points().iter().map(|p| p.smoothed).collect();
    assert_eq!(smoothed, [3.0, 2.0, 2.5, 1.0]);
}

// 3. Divergence.

#[test]
fn divergence_stops_at_the_first_step_above_factor_times_best() {
    // best = 0.8 at step 2; 4 · 0.8 = 3.2: 3.0 (step 4) is still fine, 3.3 (step 5) is not.
    let losses = [1.0, 0.9, 0.8, 0.85, 3.0, 3.3, 5.0, 9.0];
    let mut f = LrFinder::new(plain(100));
    let mut flows = Vec::new();
    for &l in &losses {
        flows.push(f.record(l));
        if f.next_lr().is_none() {
            break;
        }
    }
    assert_eq!(flows, [Flow::Continue, Flow::Continue, Flow::Continue, Flow::Continue, Flow::Continue, Flow::Diverged]);
    assert_eq!(f.points().len(), 6, "the diverging point is recorded");
    assert_eq!(f.points()[5].loss, 3.3);
    assert_eq!(f.diverged_at(), Some(5));
    assert_eq!(f.next_lr(), None);
    assert_eq!(f.record(1.0), Flow::Diverged, "no more points after the stop");
    assert_eq!(f.points().len(), 6);
}

#[test]
fn divergence_is_not_checked_on_the_first_two_steps() {
    let mut f = LrFinder::new(plain(100));
    assert_eq!(f.record(1.0), Flow::Continue);
    assert_eq!(f.record(50.0), Flow::Continue, "k = 1 is never a divergence");
    assert_eq!(f.record(4.0), Flow::Continue, "4.0 is not above 4 × 1.0");
    assert_eq!(f.record(4.01), Flow::Diverged);
    assert_eq!(f.diverged_at(), Some(3));
}

#[test]
fn divergence_with_smoothing_stops_where_an_independent_replay_says() {
    let beta: f64 = 0.98;
    let factor = 4.0;
    // Falls, then grows geometrically.
    let loss_at = |k: usize| if k < 30 { 2.0 - 0.03 * k as f64 } else { 1.13 * 1.25f64.powi((k - 30) as i32) };
    // Replay of the rule: smoothed_k as the normalised weighted average; stop at the first
    // k > 1 where it exceeds factor × the minimum of the earlier smoothed values.
    let mut expected_stop = None;
    let mut best = f64::INFINITY;
    for k in 0..200 {
        let num: f64 = (0..=k).map(|j| beta.powi((k - j) as i32) * loss_at(j)).sum();
        let den: f64 = (0..=k).map(|j| beta.powi((k - j) as i32)).sum();
        let s = num / den;
        if k > 1 && s > factor * best {
            expected_stop = Some(k);
            break;
        }
        best = best.min(s);
    }
    let expected_stop = expected_stop.expect("the replay diverges");

    let mut f = LrFinder::new(FinderConfig { smoothing: beta, divergence_factor: factor, ..plain(200) });
    let mut k = 0;
    let flow = loop {
        let flow = f.record(loss_at(k));
        if flow != Flow::Continue {
            break flow;
        }
        k += 1;
    };
    assert_eq!(flow, Flow::Diverged);
    assert_eq!(f.diverged_at(), Some(expected_stop));
    assert_eq!(f.points().len(), expected_stop + 1);
}

#[test]
fn a_non_finite_loss_is_recorded_and_ends_the_sweep() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut f = LrFinder::new(FinderConfig { smoothing: 0.98, ..plain(100) });
        assert_eq!(f.record(1.0), Flow::Continue);
        assert_eq!(f.record(bad), Flow::Diverged);
        let last = f.points()[1];
        assert!(last.loss.is_nan() || last.loss == bad);
        assert!(last.smoothed.is_nan());
        assert_eq!(f.diverged_at(), Some(1));
        assert_eq!(f.next_lr(), None);
    }
}

// 4. Suggestion on a curve with a known answer.

/// Loss with its steepest descent in log10(lr) at `c`: `1.5 − tanh(a·(u − c))`, `u = log10(lr)`,
/// plus a rise well after the drop (`0.5·(u − c − 1.5)²` for `u > c + 1.5`), which only has a
/// positive slope and so cannot move the steepest point.
fn tanh_curve(a: f64, c: f64) -> impl Fn(f64) -> f64 {
    move |lr: f64| {
        let u = lr.log10();
        let bump = if u > c + 1.5 { 0.5 * (u - c - 1.5).powi(2) } else { 0.0 };
        1.5 - (a * (u - c)).tanh() + bump
    }
}

/// Index of the grid point of `c` nearest to `10^target`, computed from the grid formula.
fn nearest_grid_index(min_lr: f64, max_lr: f64, n: usize, target_log10: f64) -> usize {
    let h = (max_lr.log10() - min_lr.log10()) / (n - 1) as f64;
    ((target_log10 - min_lr.log10()) / h).round() as usize
}

#[test]
fn suggestion_without_smoothing_is_the_grid_point_nearest_the_steepest_drop() {
    let (min_lr, max_lr, n) = (1e-6, 1.0, 100);
    for c in [-3.3, -4.05, -2.5] {
        let config = FinderConfig { min_lr, max_lr, num_steps: n, smoothing: 0.0, ..FinderConfig::default() };
        let mut f = LrFinder::new(config);
        run(&mut f, tanh_curve(2.0, c));
        let s = f.suggestion().expect("a suggestion");
        let expected = nearest_grid_index(min_lr, max_lr, n, c);
        assert!(s.index.abs_diff(expected) <= 1, "c = {c}: index {} vs expected {expected}", s.index);
        assert_eq!(s.lr, f.points()[s.index].lr);
        let h = 6.0 / 99.0;
        assert!((s.lr.log10() - c).abs() <= 1.5 * h, "c = {c}: lr {}", s.lr);
        assert_eq!(s.conservative, (s.lr / 10.0, s.lr));
        assert_eq!(s.aggressive, (s.lr, 2.0 * s.lr));
    }
}

#[test]
fn suggestion_with_default_smoothing_lands_within_a_few_grid_steps() {
    let (min_lr, max_lr, n) = (1e-6, 1.0, 100);
    let c = -3.3;
    let mut f = LrFinder::new(FinderConfig { min_lr, max_lr, num_steps: n, ..FinderConfig::default() });
    assert_eq!(f.config().smoothing, 0.98);
    run(&mut f, tanh_curve(6.0, c));
    let s = f.suggestion().expect("a suggestion");
    let expected = nearest_grid_index(min_lr, max_lr, n, c);
    // The EMA lags the raw curve, so the smoothed drop is a little later, never earlier.
    assert!(s.index >= expected && s.index <= expected + 4, "index {} vs expected {expected}", s.index);
}

#[test]
fn suggestion_is_independent_of_where_the_range_starts() {
    // In log-LR the steepest point stays put when the range is widened to the left.
    let c = -2.2;
    let mut picks = Vec::new();
    for min_lr in [1e-5f64, 1e-7] {
        let decades = 0.0 - min_lr.log10();
        let n = (decades * 20.0).round() as usize + 1; // 20 points per decade: same grid spacing
        let mut f = LrFinder::new(FinderConfig { min_lr, max_lr: 1.0, num_steps: n, ..plain(n) });
        run(&mut f, tanh_curve(2.0, c));
        picks.push(f.suggestion().expect("a suggestion").lr);
    }
    assert!(rel_close(picks[0], picks[1], 1e-9), "{picks:?}");
}

#[test]
fn suggestion_skips_points_and_needs_two_finite_ones() {
    let config = FinderConfig { num_steps: 30, smoothing: 0.0, skip_begin: 5, skip_end: 3, ..FinderConfig::default() };
    let mut f = LrFinder::new(config.clone());
    // Steepest drop at the very start (inside skip_begin) and at the very end (inside skip_end):
    // neither may be picked.
    let losses: Vec<f64> = (0..30)
        .map(|k| match k {
            0..5 => 100.0 - 10.0 * k as f64,
            5..27 => 10.0 - 0.1 * k as f64 - if k == 15 { 1.0 } else { 0.0 },
            _ => -50.0 * k as f64,
        })
        .collect();
    for &l in &losses {
        f.record(l);
    }
    let s = f.suggestion().expect("a suggestion");
    assert!((5..27).contains(&s.index), "index {}", s.index);

    let mut short = LrFinder::new(config);
    for _ in 0..9 {
        short.record(1.0);
    }
    assert_eq!(short.suggestion(), None, "9 points − 5 − 3 leave 1");
    short.record(1.0);
    assert!(short.suggestion().is_some(), "10 points − 5 − 3 leave 2");
}

// 5. Report formatting.

#[test]
fn format_sci_matches_pythons_two_decimal_exponent_format() {
    assert_eq!(format_sci(1e-7), "1.00e-07");
    assert_eq!(format_sci(10.0), "1.00e+01");
    assert_eq!(format_sci(0.0056234), "5.62e-03");
    assert_eq!(format_sci(1.0), "1.00e+00");
    assert_eq!(format_sci(0.0), "0.00e+00");
    assert_eq!(format_sci(-2.5e-4), "-2.50e-04");
    assert_eq!(format_sci(1.2345e123), "1.23e+123");
    assert_eq!(format_sci(9.999e-3), "1.00e-02");
    assert_eq!(format_sci(f64::NAN), "nan");
    assert_eq!(format_sci(f64::INFINITY), "inf");
}

#[test]
fn report_prints_the_suggestion_and_both_ranges() {
    // Grid 10^(−5 + k/12): k = 33 is 10^−2.25 = 5.623e-3, where the symmetric drop is steepest.
    let config = FinderConfig { min_lr: 1e-5, max_lr: 1.0, num_steps: 61, smoothing: 0.0, ..FinderConfig::default() };
    let mut f = LrFinder::new(config);
    run(&mut f, |lr: f64| 1.0 - (2.0 * (lr.log10() + 2.25)).tanh());
    let s = f.suggestion().expect("a suggestion");
    assert_eq!(s.index, 33);
    assert_eq!(
        f.report(),
        concat!(
            "Suggested optimal LR: 5.62e-03\n",
            "Conservative range: 5.62e-04 to 5.62e-03\n",
            "Aggressive range: 5.62e-03 to 1.12e-02",
        )
    );
}

#[test]
fn report_without_a_suggestion_says_why() {
    // Defaults skip 10 + 1; diverging at step 11 leaves 12 points, 1 of them usable.
    let mut f = LrFinder::new(FinderConfig { smoothing: 0.0, ..FinderConfig::default() });
    for _ in 0..11 {
        assert_eq!(f.record(1.0), Flow::Continue);
    }
    assert_eq!(f.record(100.0), Flow::Diverged);
    assert_eq!(f.suggestion(), None);
    assert_eq!(
        f.report(),
        "No LR suggestion: only 1 finite point after skipping the first 10 and last 1 (sweep stopped at step 11 by \
         divergence); widen the range or raise num_steps"
    );

    let mut f = LrFinder::new(FinderConfig { smoothing: 0.0, ..FinderConfig::default() });
    for _ in 0..5 {
        f.record(1.0);
    }
    f.record(f64::NAN);
    assert_eq!(
        f.report(),
        "No LR suggestion: only 0 finite points after skipping the first 10 and last 1 (sweep stopped at step 5 by a \
         non-finite loss); widen the range or raise num_steps"
    );
    assert_eq!(LrFinder::new(FinderConfig::default()).report(), "No LR suggestion: the sweep recorded no points");
}

// 6. Output files.

fn finished_finder() -> LrFinder {
    let mut f = LrFinder::new(FinderConfig { min_lr: 1e-6, max_lr: 1.0, num_steps: 80, ..FinderConfig::default() });
    run(&mut f, tanh_curve(3.0, -3.0));
    f
}

#[test]
fn csv_has_a_header_and_one_exact_row_per_point() {
    let dir = tempfile::tempdir().unwrap();
    let finished = finished_finder();
    // A sweep that ended on a NaN loss, to cover non-finite output.
    let mut nan = LrFinder::new(plain(10));
    nan.record(1.0);
    nan.record(f64::NAN);
    for (finder, name) in [(&finished, "lr_find.csv"), (&nan, "nan.csv")] {
        let path = dir.path().join(name);
        finder.write_csv(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("step,lr,loss,smoothed_loss"));
        let rows: Vec<FinderPoint> = lines
            .map(|line| {
                let cols: Vec<&str> = line.split(',').collect();
                assert_eq!(cols.len(), 4, "{line}");
                FinderPoint {
                    step: cols[0].parse().unwrap(),
                    lr: cols[1].parse().unwrap(),
                    loss: cols[2].parse().unwrap(),
                    smoothed: cols[3].parse().unwrap(),
                }
            })
            .collect();
        assert_eq!(rows.len(), finder.points().len());
        for (row, p) in rows.iter().zip(finder.points()) {
            assert_eq!(row.step, p.step);
            assert_eq!(row.lr, p.lr);
            assert!(row.loss == p.loss || (row.loss.is_nan() && p.loss.is_nan()));
            assert!(row.smoothed == p.smoothed || (row.smoothed.is_nan() && p.smoothed.is_nan()));
        }
    }
    let text = fs::read_to_string(dir.path().join("nan.csv")).unwrap();
    assert!(text.starts_with("step,lr,loss,smoothed_loss\n0,1e-7,1,1\n1,"), "{text}");
    assert!(text.ends_with(",NaN,NaN\n"), "{text}");

    let missing = dir.path().join("no/such/dir/x.csv");
    let err = finished.write_csv(&missing).unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
}

/// Width and height from the IHDR chunk, which must directly follow the PNG signature.
fn ihdr_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn plot_is_a_png_of_the_requested_size_with_something_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let f = finished_finder();
    assert!(f.suggestion().is_some());

    let path = dir.path().join("lr_find.png");
    f.plot_png(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(ihdr_size(&bytes), PLOT_SIZE);

    let decoder = png::Decoder::new(Cursor::new(&bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), PLOT_SIZE);
    let pixels = &pixels[..info.buffer_size()];
    let non_white = pixels.chunks(3).filter(|px| px != &[255, 255, 255]).count();
    let red = pixels.chunks(3).filter(|px| px[0] > 200 && px[1] < 60 && px[2] < 60).count();
    assert!(non_white > 5_000, "only {non_white} non-white pixels");
    assert!(red > 50, "the suggestion marker is drawn in red ({red} pixels)");

    // Another size, a file name without a .png extension, and a sweep that ended on a NaN.
    let mut g = LrFinder::new(plain(50));
    run(&mut g, |lr: f64| if lr > 5.0 { f64::NAN } else { 2.0 - lr.log10().tanh() });
    let other = dir.path().join("plot.bin");
    g.plot_png_sized(&other, (400, 300)).unwrap();
    assert_eq!(ihdr_size(&fs::read(&other).unwrap()), (400, 300));
}

#[test]
fn plot_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/plot.png");
    let err = finished_finder().plot_png(&missing).unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

    let empty = dir.path().join("empty.png");
    let err = LrFinder::new(FinderConfig::default()).plot_png(&empty).unwrap_err();
    assert!(err.to_string().contains(&empty.display().to_string()), "{err}");
    assert!(!empty.exists());
}
