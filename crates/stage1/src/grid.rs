//! The PNG written at every validation: one row per fixed validation tile, three columns
//! (SAR VV (dB) | prediction | target) under a header row naming them, the tile id and its PSNR in
//! the margin beside each row, every tile upscaled with nearest neighbour to at least
//! [`tiling::preview::MIN_TILE_PX`] pixels a side (layout and size formula: [`tiling::preview`]).
//!
//! Stretches: SAR is VV in dB under the fixed stretch [`SAR_DB_BLACK`] (black) …
//! [`SAR_DB_WHITE`] (white), the same for every tile, so two images compare; the optical panels
//! are the true-colour composite (B4, B3, B2) of reflectance × [`RGB_GAIN`] (0.33 → white).

use std::path::Path;

use tiling::preview::{Column, render_grid, sar_db_grey, sar_stretch_note, true_colour, true_colour_note, write_png};
pub use tiling::preview::{GridError, Image, RGB_GAIN, SAR_DB_BLACK, SAR_DB_WHITE};

/// Columns of the grid.
pub const COLUMNS: usize = 3;

/// One row of the grid.
pub struct Row {
    /// The tile's id, written beside the row.
    pub tile_id: String,
    /// PSNR of the prediction against the target, dB (written beside the row).
    pub psnr: f64,
    /// VV in dB `[h, w]` (the tile's own values: the sample's standardisation undone).
    pub sar_db: Vec<f32>,
    /// Predicted reflectance `[4, h, w]` (B2, B3, B4, B8).
    pub prediction: Vec<f32>,
    /// Target reflectance `[4, h, w]`.
    pub target: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// `(width, height)` of the grid of `rows` rows of `tile_h × tile_w` tiles:
/// [`tiling::preview::grid_size`] with [`COLUMNS`] columns.
pub fn size(rows: usize, tile_h: usize, tile_w: usize) -> (usize, usize) {
    tiling::preview::grid_size(COLUMNS, rows, tile_h, tile_w)
}

/// `PSNR 23.41 dB` (`PSNR n/a` without a valid pixel).
pub(crate) fn psnr_label(name: &str, psnr: f64) -> String {
    if psnr.is_nan() { format!("{name} n/a") } else { format!("{name} {psnr:.2} dB") }
}

/// Renders the rows into an RGB image.
pub fn render(rows: &[Row]) -> Result<Image, GridError> {
    let (sar, rgb) = (sar_stretch_note(), true_colour_note());
    let columns = [
        Column { title: "SAR VV (dB)", stretch: &sar },
        Column { title: "prediction", stretch: &rgb },
        Column { title: "target", stretch: &rgb },
    ];
    render_grid(
        &columns,
        rows,
        |r| (r.height, r.width),
        |r| vec![r.tile_id.clone(), psnr_label("PSNR", r.psnr)],
        |r| {
            let hw = r.height * r.width;
            move |p| {
                [
                    sar_db_grey(r.sar_db[p]),
                    true_colour(&r.prediction, hw, p, RGB_GAIN),
                    true_colour(&r.target, hw, p, RGB_GAIN),
                ]
            }
        },
    )
}

/// Writes the grid as an 8-bit RGB PNG at `path` (creating its directory).
pub fn write(path: &Path, rows: &[Row]) -> Result<(), GridError> {
    write_png(path, &render(rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiling::preview::{GAP, HEADER_HEIGHT, MARGIN_WIDTH, upscale_factor};

    fn row(id: &str, sar_db: Vec<f32>, prediction: Vec<f32>, target: Vec<f32>, h: usize, w: usize) -> Row {
        Row { tile_id: id.into(), psnr: 21.5, sar_db, prediction, target, height: h, width: w }
    }

    #[test]
    fn the_image_size_follows_from_tile_size_columns_and_rows() {
        for (rows, side) in [(1usize, 16usize), (4, 64), (2, 100), (3, 256), (2, 300)] {
            let hw = side * side;
            let grid: Vec<Row> = (0..rows)
                .map(|i| row(&format!("t{i}"), vec![-10.0; hw], vec![0.1; 4 * hw], vec![0.2; 4 * hw], side, side))
                .collect();
            let img = render(&grid).unwrap();
            let k = upscale_factor(side);
            assert!(k * side >= 256, "{side}: at least 256 px a tile");
            let expected = (MARGIN_WIDTH + 3 * k * side + 2 * GAP, HEADER_HEIGHT + rows * k * side + (rows - 1) * GAP);
            assert_eq!((img.width, img.height), expected, "{rows} rows of {side} px");
            assert_eq!(size(rows, side, side), expected);
        }
        // Four 64-px tiles (the smoke run): k = 4.
        assert_eq!(size(4, 64, 64), (200 + 3 * 256 + 2 * 4, 44 + 4 * 256 + 3 * 4));
    }

    #[test]
    fn panels_hold_the_fixed_sar_stretch_and_true_colour() {
        let (h, w) = (2, 2);
        let mut prediction = vec![0.0; 16];
        prediction[2 * 4] = 0.1; // B4 (red) at pixel 0: 0.1 · 3 → 0.3 → 77
        // Row 0 spans exactly the stretch; row 1 is a dark tile (-30 … -20 dB) that a min–max
        // stretch would show black to white.
        let rows = [
            row("a", vec![SAR_DB_BLACK, -12.5, -12.5, SAR_DB_WHITE], prediction, vec![1.0; 16], h, w),
            row("b", vec![-30.0, -25.0, -20.0, -20.0], vec![0.0; 16], vec![0.0; 16], h, w),
        ];
        let img = render(&rows).unwrap();
        let k = upscale_factor(2);
        let cell = k * 2;
        let x = |col: usize, px: usize| MARGIN_WIDTH + col * (cell + GAP) + px * k;
        let y = |row: usize, py: usize| HEADER_HEIGHT + row * (cell + GAP) + py * k;
        assert_eq!(img.at(x(0, 0), y(0, 0)), [0; 3], "-25 dB is black");
        assert_eq!(img.at(x(0, 1) + k - 1, y(0, 1) + k - 1), [255; 3], "0 dB is white");
        assert_eq!(img.at(x(0, 1), y(0, 0)), [128; 3], "-12.5 dB is mid grey");
        assert_eq!(img.at(x(0, 0), y(1, 0)), [0; 3], "below -25 dB clips to black");
        assert_eq!(img.at(x(0, 1), y(1, 0)), [0; 3], "-25 dB is black in every tile");
        assert_eq!(img.at(x(0, 0), y(1, 1)), [51; 3], "-20 dB is 1/5 grey, not the tile's white");
        assert_eq!(img.at(x(1, 0), y(0, 0)), [77, 0, 0], "prediction red from B4");
        assert_eq!(img.at(x(2, 0), y(0, 0)), [255; 3], "target saturates");
        assert_eq!(img.at(x(1, 0) - 1, y(0, 0)), [255; 3], "gap stays white");
        assert_eq!(psnr_label("PSNR", 21.456), "PSNR 21.46 dB");
        assert_eq!(psnr_label("PSNR", f64::NAN), "PSNR n/a");
    }
}
