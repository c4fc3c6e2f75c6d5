//! The PNG written at every validation: one row per fixed validation tile, three panels
//! (SAR VV | prediction | target), optical panels as true colour (B4, B3, B2).

use std::path::Path;

#[cfg(test)]
use tiling::preview::GAP;
pub use tiling::preview::RGB_GAIN;
use tiling::preview::{grey_stretch, render_rows, true_colour, write_rgb_png};

/// One row of the grid.
pub struct Row {
    /// Standardised VV `[h, w]`.
    pub sar: Vec<f32>,
    /// Predicted reflectance `[4, h, w]` (B2, B3, B4, B8).
    pub prediction: Vec<f32>,
    /// Target reflectance `[4, h, w]`.
    pub target: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// Renders the rows into an RGB image: `(width, height, pixels)`.
pub fn render(rows: &[Row]) -> (usize, usize, Vec<u8>) {
    render_rows(
        rows,
        |r| (r.height, r.width),
        |r| {
            // SAR: min–max stretch of the tile (a 2–98 % clip would hide nothing on speckle-free data).
            let (hw, sar) = (r.height * r.width, grey_stretch(&r.sar));
            move |p| [sar(p), true_colour(&r.prediction, hw, p, RGB_GAIN), true_colour(&r.target, hw, p, RGB_GAIN)]
        },
    )
}

/// Writes the grid as an 8-bit RGB PNG at `path` (creating its directory).
pub fn write(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    let (w, h, pixels) = render(rows);
    write_rgb_png(path, w, h, &pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_hold_the_sar_stretch_and_true_colour() {
        let (h, w) = (2, 2);
        let mut prediction = vec![0.0; 16];
        prediction[2 * 4] = 0.1; // B4 (red) at pixel 0: 0.1 · 3 → 0.3 → 77
        let row = Row { sar: vec![-1.0, 0.0, 0.0, 1.0], prediction, target: vec![1.0; 16], height: h, width: w };
        let (width, height, img) = render(&[row]);
        assert_eq!((width, height), (3 * 2 + 2 * GAP, 2));
        let px = |x: usize, y: usize| &img[(y * width + x) * 3..(y * width + x) * 3 + 3];
        assert_eq!(px(0, 0), &[0, 0, 0], "SAR minimum is black");
        assert_eq!(px(1, 1), &[255, 255, 255], "SAR maximum is white");
        assert_eq!(px(2 + GAP, 0), &[77, 0, 0], "prediction red from B4");
        assert_eq!(px(2 * (2 + GAP), 0), &[255, 255, 255], "target saturates");
        assert_eq!(px(2, 0), &[255, 255, 255], "gap stays white");
    }
}
