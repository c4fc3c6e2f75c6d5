//! `validation/epoch_N.png`: the road network around a few validation trajectories, each drawn
//! as its true route, with the model's top-1 next road at every step in green (right) or red
//! (wrong) — what the next-step accuracy means, on the map.
//!
//! The view is the bounding box of the drawn trajectories' roads plus a 10 % margin, in
//! longitude / latitude with longitude scaled by cos(mean latitude) so distances look right;
//! every road with a point in the view is drawn in light grey. [`MAP_SIZE`] is the image size.

use std::path::Path;

use hoser::data::{Batch, RoadNetwork};
use plotters::prelude::*;
use schedulers::plotting::{FONT_FAMILY, draw_rgb, write_rgb_png};

/// Size in pixels of the map image.
pub const MAP_SIZE: (u32, u32) = (1024, 1024);

/// Validation trajectories drawn per image.
pub const MAP_TRAJECTORIES: usize = 3;

/// One step of a drawn trajectory: the road the model ranked first among the candidates, and
/// whether it is the road the trajectory took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub predicted: u32,
    pub correct: bool,
}

/// A drawn trajectory: its roads r_0..r_T (the route) and one [`Step`] per prediction step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    pub route: Vec<u32>,
    pub steps: Vec<Step>,
}

/// Trajectory `i` of a collated `batch` (so a `max_len` crop is what is drawn) with the model's
/// candidate scores `logits` (`[B, T, C]` row-major, as the model returns them): its route
/// r_0..r_T and, at each step, the candidate with the highest score among the step's real ones.
pub fn drawn(batch: &Batch, logits: &[f32], i: usize) -> Drawn {
    let (t, c) = (batch.max_trace_len, batch.max_candidates);
    let len = batch.trace_len[i] as usize;
    let mut route: Vec<u32> = batch.trace_road_id[i * t..i * t + len].iter().map(|&r| r as u32).collect();
    route.push(batch.destination_road_id[i] as u32);
    let steps = (0..len)
        .map(|j| {
            let at = i * t + j;
            let n = batch.candidate_len[at] as usize;
            let scores = &logits[at * c..at * c + n];
            let best = top1(scores);
            Step {
                predicted: batch.candidate_road_id[at * c + best] as u32,
                correct: best as i64 == batch.road_label[at],
            }
        })
        .collect();
    Drawn { route, steps }
}

/// Index of the largest score (the first on ties; NaN never wins), 0 for an empty slice.
pub fn top1(scores: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in scores.iter().enumerate() {
        if v > scores[best] || scores[best].is_nan() && !v.is_nan() {
            best = k;
        }
    }
    best
}

/// Draws `trajectories` over `network` into `path` (its directory must exist).
pub fn write(path: &Path, network: &RoadNetwork, trajectories: &[Drawn], title: &str) -> Result<(), String> {
    let roads: Vec<u32> =
        trajectories.iter().flat_map(|t| t.route.iter().chain(t.steps.iter().map(|s| &s.predicted))).copied().collect();
    let points = roads.iter().flat_map(|&r| network.road(r).coordinates.iter());
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in points {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    if !(lo[0].is_finite() && hi[0].is_finite()) {
        return Err(format!("{}: no road to draw", path.display()));
    }
    let scale = ((lo[1] + hi[1]) / 2.0).to_radians().cos().max(0.05);
    // A square view around the roads, 10 % margin.
    let (cx, cy) = ((lo[0] + hi[0]) / 2.0 * scale, (lo[1] + hi[1]) / 2.0);
    let half = (((hi[0] - lo[0]) * scale).max(hi[1] - lo[1]) / 2.0 * 1.1).max(1e-4);
    let (x_range, y_range) = ((cx - half)..(cx + half), (cy - half)..(cy + half));
    let inside = |p: &[f64; 2]| x_range.contains(&(p[0] * scale)) && y_range.contains(&p[1]);
    let (width, height) = MAP_SIZE;
    let mut buffer = Vec::new();
    let drawn = draw_rgb(&mut buffer, MAP_SIZE, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT_FAMILY, 24))
            .margin(12)
            .build_cartesian_2d(x_range.clone(), y_range.clone())
            .map_err(e)?;
        let line = |road: u32| {
            network.road(road).coordinates.iter().map(|p| (p[0] * scale, p[1])).collect::<Vec<(f64, f64)>>()
        };
        let grey = RGBColor(205, 205, 205);
        for (id, road) in network.roads().iter().enumerate() {
            if road.coordinates.iter().any(inside) {
                chart.draw_series(LineSeries::new(line(id as u32), grey.stroke_width(1))).map_err(e)?;
            }
        }
        let route_colours = [RGBColor(30, 90, 200), RGBColor(120, 60, 170), RGBColor(20, 140, 150)];
        let (right, wrong) = (RGBColor(30, 160, 60), RGBColor(215, 40, 40));
        for (k, t) in trajectories.iter().enumerate() {
            let colour = route_colours[k % route_colours.len()];
            let route: Vec<(f64, f64)> = t.route.iter().flat_map(|&r| line(r)).collect();
            chart
                .draw_series(LineSeries::new(route, colour.stroke_width(6)))
                .map_err(e)?
                .label(format!("trajectory {}: true route ({} roads)", k + 1, t.route.len()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(6)));
            for s in &t.steps {
                let c = if s.correct { right } else { wrong };
                chart.draw_series(LineSeries::new(line(s.predicted), c.stroke_width(3))).map_err(e)?;
            }
            // Start and destination.
            let first = line(t.route[0]);
            let last = line(*t.route.last().expect("a route has roads"));
            if let (Some(&a), Some(&b)) = (first.first(), last.last()) {
                chart
                    .draw_series([Circle::new(a, 6, colour.filled()), Circle::new(b, 6, colour.stroke_width(3))])
                    .map_err(e)?;
            }
        }
        let (ok, all) = trajectories
            .iter()
            .flat_map(|t| &t.steps)
            .fold((0, 0), |(ok, all), s| (ok + usize::from(s.correct), all + 1));
        chart
            .draw_series(std::iter::once(PathElement::new(Vec::<(f64, f64)>::new(), right.stroke_width(3))))
            .map_err(e)?
            .label(format!("top-1 next road right ({ok} of {all} steps)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], right.stroke_width(3)));
        chart
            .draw_series(std::iter::once(PathElement::new(Vec::<(f64, f64)>::new(), wrong.stroke_width(3))))
            .map_err(e)?
            .label("top-1 next road wrong")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], wrong.stroke_width(3)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT_FAMILY, 16))
            .draw()
            .map_err(e)
    });
    drawn.map_err(|err| format!("{}: {err}", path.display()))?;
    write_rgb_png(path, width, height, &buffer).map_err(|err| format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_score_among_real_candidates_is_the_prediction() {
        assert_eq!(top1(&[0.1, 0.7, 0.7, -1.0]), 1, "first of a tie");
        assert_eq!(top1(&[f32::NAN, -3.0, -2.0]), 2, "NaN never wins");
        assert_eq!(top1(&[]), 0);
    }
}
