//! The PNG written at every validation: one row per fixed validation tile, three panels
//! (SAR VV | prediction | target), optical panels as true colour (B4, B3, B2).

use std::io::BufWriter;
use std::path::Path;

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

/// Gain applied to reflectance for display (0.33 reflectance → white), the usual true-colour stretch.
pub const RGB_GAIN: f32 = 3.0;
/// Pixels between panels.
const GAP: usize = 2;

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Renders the rows into an RGB image: `(width, height, pixels)`.
pub fn render(rows: &[Row]) -> (usize, usize, Vec<u8>) {
    let cell_w = rows.iter().map(|r| r.width).max().unwrap_or(0);
    let cell_h = rows.iter().map(|r| r.height).max().unwrap_or(0);
    let width = 3 * cell_w + 2 * GAP;
    let height = rows.len() * cell_h + rows.len().saturating_sub(1) * GAP;
    let mut img = vec![255u8; width * height * 3];
    for (ri, r) in rows.iter().enumerate() {
        let hw = r.height * r.width;
        // SAR: min–max stretch of the tile (a 2–98 % clip would hide nothing on speckle-free data).
        let (lo, hi) = r.sar.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        for y in 0..r.height {
            for x in 0..r.width {
                let p = y * r.width + x;
                let g = to_u8((r.sar[p] - lo) / span);
                let rgb = |o: &[f32]| [o[2 * hw + p], o[hw + p], o[p]].map(|v| to_u8(v * RGB_GAIN));
                for (panel, px) in [[g, g, g], rgb(&r.prediction), rgb(&r.target)].into_iter().enumerate() {
                    let (ox, oy) = (panel * (cell_w + GAP) + x, ri * (cell_h + GAP) + y);
                    let i = (oy * width + ox) * 3;
                    img[i..i + 3].copy_from_slice(&px);
                }
            }
        }
    }
    (width, height, img)
}

/// Writes the grid as an 8-bit RGB PNG at `path` (creating its directory).
pub fn write(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (w, h, pixels) = render(rows);
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(std::io::Error::other)?;
    writer.write_image_data(&pixels).map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
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
