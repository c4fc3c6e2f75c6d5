//! Display helpers for the validation images the training stages write: 8-bit quantisation, the
//! SAR min–max stretch, true colour from B2, B3, B4, B8 planes, rows of panels with white gaps
//! between them, and the 8-bit RGB PNG they are written as.

use std::io::BufWriter;
use std::path::Path;

/// Gain applied to reflectance for display (0.33 reflectance → white), the usual true-colour stretch.
pub const RGB_GAIN: f32 = 3.0;

/// Pixels between panels and between rows of [`render_rows`].
pub const GAP: usize = 2;

/// `v` in `0..=1` as an 8-bit level (clamped; a non-finite value is black).
pub fn to_u8(v: f32) -> u8 {
    if v.is_finite() { (v.clamp(0.0, 1.0) * 255.0).round() as u8 } else { 0 }
}

/// The min–max stretch of `values` over their finite entries: `(low, span)`, with `(v - low) / span`
/// in `0..=1`; a constant (or empty, or all non-finite) plane has span 1.
pub fn stretch(values: &[f32]) -> (f32, f32) {
    let (lo, hi) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if hi > lo { (lo, hi - lo) } else { (lo, 1.0) }
}

/// The grey panel of a SAR plane: pixel `p` under the plane's [`stretch`] (min black, max white).
pub fn grey_stretch(values: &[f32]) -> impl Fn(usize) -> [u8; 3] + '_ {
    let (lo, span) = stretch(values);
    move |p| {
        let g = to_u8((values[p] - lo) / span);
        [g, g, g]
    }
}

/// The true-colour pixel `p` of `[4, hw]` planes (B2, B3, B4, B8): (B4, B3, B2) × `gain`, quantised.
pub fn true_colour(planes: &[f32], hw: usize, p: usize, gain: f32) -> [u8; 3] {
    [planes[2 * hw + p], planes[hw + p], planes[p]].map(|v| to_u8(v * gain))
}

/// Renders `rows` as an RGB image of `N` panels a row, [`GAP`] pixels of white between panels and
/// rows, each cell as large as the largest row: `size(row)` is its `(height, width)` and
/// `paint(row)` gives, for pixel `p = y * width + x` of the row, its colour in each panel (a row's
/// own set-up, such as its SAR stretch, goes in `paint`). Returns `(width, height, row-major RGB)`.
pub fn render_rows<'a, R, F, const N: usize>(
    rows: &'a [R],
    size: impl Fn(&R) -> (usize, usize),
    paint: impl Fn(&'a R) -> F,
) -> (usize, usize, Vec<u8>)
where
    F: Fn(usize) -> [[u8; 3]; N],
{
    let cell_h = rows.iter().map(|r| size(r).0).max().unwrap_or(0);
    let cell_w = rows.iter().map(|r| size(r).1).max().unwrap_or(0);
    let width = N * cell_w + N.saturating_sub(1) * GAP;
    let height = rows.len() * cell_h + rows.len().saturating_sub(1) * GAP;
    let mut img = vec![255u8; width * height * 3];
    for (ri, r) in rows.iter().enumerate() {
        let (h, w) = size(r);
        let pixel = paint(r);
        for y in 0..h {
            for x in 0..w {
                for (panel, px) in pixel(y * w + x).into_iter().enumerate() {
                    let (ox, oy) = (panel * (cell_w + GAP) + x, ri * (cell_h + GAP) + y);
                    let i = (oy * width + ox) * 3;
                    img[i..i + 3].copy_from_slice(&px);
                }
            }
        }
    }
    (width, height, img)
}

/// Writes `pixels` (row-major RGB, `width` × `height`) as an 8-bit RGB PNG at `path`, creating its
/// directory. Errors are the file's I/O errors (the encoder's as [`std::io::Error::other`]).
pub fn write_rgb_png(path: &Path, width: usize, height: usize, pixels: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (w, h) = (u32::try_from(width), u32::try_from(height));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(std::io::Error::other(format!(
            "{}: a {width}x{height} image is too large for PNG",
            path.display()
        )));
    };
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(std::io::Error::other)?;
    writer.write_image_data(pixels).map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_stretch_and_true_colour() {
        assert_eq!([to_u8(-1.0), to_u8(0.5), to_u8(2.0), to_u8(f32::NAN), to_u8(f32::INFINITY)], [0, 128, 255, 0, 0]);
        assert_eq!(stretch(&[-1.0, f32::NAN, 3.0, f32::NEG_INFINITY]), (-1.0, 4.0));
        assert_eq!(stretch(&[2.0, 2.0]), (2.0, 1.0));
        let grey = grey_stretch(&[-1.0, 1.0, 0.0, f32::NAN]);
        assert_eq!([grey(0), grey(1), grey(2), grey(3)], [[0; 3], [255; 3], [128; 3], [0; 3]]);
        // One pixel: B2 0, B3 0.1, B4 1.
        assert_eq!(true_colour(&[0.0, 0.1, 1.0, 0.5], 1, 0, RGB_GAIN), [255, 77, 0]);
    }

    #[test]
    fn rows_of_panels_with_white_gaps_and_a_png() {
        // Two rows of two panels; the second row is 1x2, the first 1x1 (cells are 1x2).
        let rows = [(1usize, 1usize, 10u8), (1, 2, 20)];
        let (w, h, px) = render_rows(&rows, |r| (r.0, r.1), |r| move |p: usize| [[r.2, p as u8, 0], [0, 0, r.2]]);
        assert_eq!((w, h), (2 * 2 + GAP, 2 + GAP));
        let at = |x: usize, y: usize| &px[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!(at(0, 0), &[10, 0, 0]);
        assert_eq!(at(1, 0), &[255, 255, 255], "outside a smaller row's tile stays white");
        assert_eq!(at(2, 0), &[255, 255, 255], "gap");
        assert_eq!(at(2 + GAP, 0), &[0, 0, 10]);
        assert_eq!(at(1, 1), &[255, 255, 255], "row gap");
        assert_eq!(at(1, 1 + GAP), &[20, 1, 0]);
        assert_eq!(at(2 + GAP + 1, 1 + GAP), &[0, 0, 20]);
        let (w0, h0, px0) = render_rows(&[] as &[(usize, usize, u8)], |r| (r.0, r.1), |_| |_: usize| [[0u8; 3]; 2]);
        assert_eq!((w0, h0, px0.len()), (GAP, 0, 0));

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a").join("b.png");
        write_rgb_png(&path, w, h, &px).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // Too few pixels for the size: an error, no panic.
        assert!(write_rgb_png(&path, 3, 3, &[0; 5]).is_err());
    }
}
