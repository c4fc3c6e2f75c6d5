//! The example image written at every validation (seed 001's `save_example_images`): one row per
//! validation tile (`num_example_images`), five panels — SAR VV | opt_v2 | opt_v3 | truth |
//! |opt_v3 − opt_v2| — optical panels as true colour (B4, B3, B2).

use std::path::Path;

#[cfg(test)]
use tiling::preview::GAP;
pub use tiling::preview::RGB_GAIN;
use tiling::preview::{grey_stretch, render_rows, to_u8, true_colour, write_rgb_png};

/// One row of the image.
pub struct Row {
    /// VV in dB `[h, w]`.
    pub sar: Vec<f32>,
    /// Stage-2 estimate, reflectance `[4, h, w]` (B2, B3, B4, B8).
    pub opt_v2: Vec<f32>,
    /// Grounded output, reflectance `[4, h, w]`.
    pub opt_v3: Vec<f32>,
    /// Truth, reflectance `[4, h, w]`.
    pub truth: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// Gain of the change panel: the mean absolute change over the four bands, 0.05 reflectance → white.
pub const CHANGE_GAIN: f32 = 20.0;
/// Panels per row.
pub const PANELS: usize = 5;

/// Renders the rows into an RGB image: `(width, height, pixels)`.
pub fn render(rows: &[Row]) -> (usize, usize, Vec<u8>) {
    render_rows::<_, _, PANELS>(
        rows,
        |r| (r.height, r.width),
        |r| {
            // SAR: min–max stretch of the tile.
            let (hw, sar) = (r.height * r.width, grey_stretch(&r.sar));
            move |p| {
                let rgb = |o: &[f32]| true_colour(o, hw, p, RGB_GAIN);
                let change = (0..4).map(|b| (r.opt_v3[b * hw + p] - r.opt_v2[b * hw + p]).abs()).sum::<f32>() / 4.0;
                let c = to_u8(change * CHANGE_GAIN);
                [sar(p), rgb(&r.opt_v2), rgb(&r.opt_v3), rgb(&r.truth), [c, c, c]]
            }
        },
    )
}

/// Writes the image as an 8-bit RGB PNG at `path` (creating its directory).
pub fn write(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    let (w, h, pixels) = render(rows);
    write_rgb_png(path, w, h, &pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_panels_hold_sar_estimate_output_truth_and_change() {
        let (h, w) = (1, 2);
        let mut opt_v3 = vec![0.0; 8];
        opt_v3[2 * 2] = 0.1; // B4 (red) at pixel 0: 0.1 · 3 → 77
        let row =
            Row { sar: vec![-20.0, -5.0], opt_v2: vec![0.0; 8], opt_v3, truth: vec![1.0; 8], height: h, width: w };
        let (width, height, img) = render(&[row]);
        assert_eq!((width, height), (5 * 2 + 4 * GAP, 1));
        let px = |x: usize| &img[x * 3..x * 3 + 3];
        assert_eq!(px(0), &[0, 0, 0], "SAR minimum is black");
        assert_eq!(px(1), &[255, 255, 255], "SAR maximum is white");
        assert_eq!(px(2 + GAP), &[0, 0, 0], "opt_v2 is black");
        assert_eq!(px(2 * (2 + GAP)), &[77, 0, 0], "opt_v3 red from B4");
        assert_eq!(px(3 * (2 + GAP)), &[255, 255, 255], "truth saturates");
        // |Δ| = 0.1 in one band of four: 0.025 · 20 = 0.5 → 128.
        assert_eq!(px(4 * (2 + GAP)), &[128, 128, 128], "change panel");
        assert_eq!(px(4 * (2 + GAP) + 1), &[0, 0, 0], "no change at pixel 1");
    }
}
