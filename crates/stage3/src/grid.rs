//! The example image written at every validation (seed 001's `save_example_images`): one row per
//! validation tile (`num_example_images`), five columns — SAR VV (dB) | opt_v2 | opt_v3 | truth |
//! |opt_v3 − opt_v2| — under a header row naming them, the tile id and the PSNR of opt_v2 and of
//! opt_v3 in the margin beside each row, every tile upscaled with nearest neighbour to at least
//! [`tiling::preview::MIN_TILE_PX`] pixels a side (layout and size formula: [`tiling::preview`]).
//!
//! Stretches: SAR is VV in dB under the fixed stretch [`SAR_DB_BLACK`] (black) …
//! [`SAR_DB_WHITE`] (white); the optical panels are the true-colour composite (B4, B3, B2) of
//! reflectance × [`RGB_GAIN`]; the change panel is the mean absolute change over the four bands ×
//! [`CHANGE_GAIN`] (0.05 reflectance → white).

use std::path::Path;

use tiling::preview::{
    Column, render_grid, sar_db_grey, sar_stretch_note, to_u8, true_colour, true_colour_note, write_png,
};
pub use tiling::preview::{GridError, Image, RGB_GAIN, SAR_DB_BLACK, SAR_DB_WHITE};

/// One row of the image.
pub struct Row {
    /// The tile's id, written beside the row.
    pub tile_id: String,
    /// PSNR of opt_v2 against the truth, dB.
    pub psnr_v2: f64,
    /// PSNR of opt_v3 against the truth, dB.
    pub psnr_v3: f64,
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

/// `(width, height)` of the image of `rows` rows of `tile_h × tile_w` tiles:
/// [`tiling::preview::grid_size`] with [`PANELS`] columns.
pub fn size(rows: usize, tile_h: usize, tile_w: usize) -> (usize, usize) {
    tiling::preview::grid_size(PANELS, rows, tile_h, tile_w)
}

/// `name 23.41 dB` (`name n/a` without a valid pixel).
fn psnr_label(name: &str, psnr: f64) -> String {
    if psnr.is_nan() { format!("{name} n/a") } else { format!("{name} {psnr:.2} dB") }
}

/// Renders the rows into an RGB image.
pub fn render(rows: &[Row]) -> Result<Image, GridError> {
    let (sar, rgb) = (sar_stretch_note(), true_colour_note());
    let change = format!("mean of 4 bands × {CHANGE_GAIN}");
    let columns = [
        Column { title: "SAR VV (dB)", stretch: &sar },
        Column { title: "opt_v2", stretch: &rgb },
        Column { title: "opt_v3", stretch: &rgb },
        Column { title: "truth", stretch: &rgb },
        Column { title: "|opt_v3 − opt_v2|", stretch: &change },
    ];
    render_grid(
        &columns,
        rows,
        |r| (r.height, r.width),
        |r| vec![r.tile_id.clone(), psnr_label("PSNR v2", r.psnr_v2), psnr_label("PSNR v3", r.psnr_v3)],
        |r| {
            let hw = r.height * r.width;
            move |p| {
                let rgb = |o: &[f32]| true_colour(o, hw, p, RGB_GAIN);
                let change = (0..4).map(|b| (r.opt_v3[b * hw + p] - r.opt_v2[b * hw + p]).abs()).sum::<f32>() / 4.0;
                let c = to_u8(change * CHANGE_GAIN);
                [sar_db_grey(r.sar[p]), rgb(&r.opt_v2), rgb(&r.opt_v3), rgb(&r.truth), [c, c, c]]
            }
        },
    )
}

/// Writes the image as an 8-bit RGB PNG at `path` (creating its directory).
pub fn write(path: &Path, rows: &[Row]) -> Result<(), GridError> {
    write_png(path, &render(rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiling::preview::{GAP, HEADER_HEIGHT, MARGIN_WIDTH, upscale_factor};

    fn row(sar: Vec<f32>, opt_v3: Vec<f32>, h: usize, w: usize) -> Row {
        let n = 4 * h * w;
        Row {
            tile_id: "scene-0_r0_c0".into(),
            psnr_v2: 18.0,
            psnr_v3: f64::NAN,
            sar,
            opt_v2: vec![0.0; n],
            opt_v3,
            truth: vec![1.0; n],
            height: h,
            width: w,
        }
    }

    #[test]
    fn the_image_size_follows_from_tile_size_columns_and_rows() {
        for (rows, side) in [(1usize, 32usize), (2, 64), (3, 128), (1, 257)] {
            let hw = side * side;
            let grid: Vec<Row> = (0..rows).map(|_| row(vec![-10.0; hw], vec![0.1; 4 * hw], side, side)).collect();
            let img = render(&grid).unwrap();
            let k = upscale_factor(side);
            assert!(k * side >= 256, "{side}: at least 256 px a tile");
            let expected = (MARGIN_WIDTH + 5 * k * side + 4 * GAP, HEADER_HEIGHT + rows * k * side + (rows - 1) * GAP);
            assert_eq!((img.width, img.height), expected, "{rows} rows of {side} px");
            assert_eq!(size(rows, side, side), expected);
        }
    }

    #[test]
    fn five_panels_hold_sar_estimate_output_truth_and_change() {
        let (h, w) = (1, 2);
        let mut opt_v3 = vec![0.0; 8];
        opt_v3[2 * 2] = 0.1; // B4 (red) at pixel 0: 0.1 · 3 → 77
        // A tile darker than the stretch's top: -20 dB stays dark grey (no min–max stretch).
        let img = render(&[row(vec![SAR_DB_BLACK, -20.0], opt_v3, h, w)]).unwrap();
        let k = upscale_factor(1);
        let cell_w = k * 2;
        let x = |col: usize, px: usize| MARGIN_WIDTH + col * (cell_w + GAP) + px * k;
        let y = HEADER_HEIGHT + k - 1;
        assert_eq!(img.at(x(0, 0), y), [0; 3], "-25 dB is black");
        assert_eq!(img.at(x(0, 1), y), [51; 3], "-20 dB is 1/5 grey");
        assert_eq!(img.at(x(1, 0), y), [0; 3], "opt_v2 is black");
        assert_eq!(img.at(x(2, 0), y), [77, 0, 0], "opt_v3 red from B4");
        assert_eq!(img.at(x(3, 0), y), [255; 3], "truth saturates");
        // |Δ| = 0.1 in one band of four: 0.025 · 20 = 0.5 → 128.
        assert_eq!(img.at(x(4, 0), y), [128; 3], "change panel");
        assert_eq!(img.at(x(4, 1), y), [0; 3], "no change at pixel 1");
        assert_eq!(psnr_label("PSNR v2", 18.0), "PSNR v2 18.00 dB");
        assert_eq!(psnr_label("PSNR v3", f64::NAN), "PSNR v3 n/a");
    }
}
