//! The validation images the training stages write: a labelled grid of panels, one row per
//! validation tile, drawn with plotters into an RGB buffer and written through the workspace's one
//! PNG path ([`schedulers::plotting`]).
//!
//! # Layout
//!
//! ```text
//! +--------+----------+-----+----------+
//! |        | title 1  |     | title N  |   header: HEADER_HEIGHT px, column title + its stretch
//! +--------+----------+-----+----------+
//! | tile id| panel    | GAP | panel    |   a row: k·h px
//! | PSNR   | k·h×k·w  |     |          |
//! +--------+----------+-----+----------+
//! |        |   GAP (white)             |
//! +--------+---------------------------+
//!   MARGIN_WIDTH
//! ```
//!
//! Every tile is upscaled with nearest neighbour by the integer factor
//! `k = ceil(MIN_TILE_PX / s)` ([`upscale_factor`]), `s` the shorter side of the largest tile, so a
//! panel is at least [`MIN_TILE_PX`] pixels a side. For `N` columns, `R` rows and tiles of `h × w`
//! pixels the image is ([`grid_size`]):
//!
//! ```text
//! width  = MARGIN_WIDTH  + N·k·w + (N − 1)·GAP
//! height = HEADER_HEIGHT + R·k·h + (R − 1)·GAP
//! ```
//!
//! # Stretches
//!
//! - SAR: VV in dB under the fixed stretch [`SAR_DB_BLACK`] (black) … [`SAR_DB_WHITE`] (white),
//!   linear in dB and clipped, the same for every tile and every validation ([`sar_db_grey`]).
//! - Optical: the true-colour composite (B4, B3, B2) as red, green, blue, reflectance × [`RGB_GAIN`]
//!   (0.33 reflectance → white), clipped ([`true_colour`]).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use schedulers::plotting::{FONT_FAMILY, PngError, register_font, write_rgb_png};
use thiserror::Error;

/// Gain applied to reflectance for display (0.33 reflectance → white), the usual true-colour stretch.
pub const RGB_GAIN: f32 = 3.0;

/// The SAR stretch: VV at or below this many dB is black.
pub const SAR_DB_BLACK: f32 = -25.0;
/// The SAR stretch: VV at or above this many dB is white.
pub const SAR_DB_WHITE: f32 = 0.0;

/// Panels are upscaled to at least this many pixels a side (see [`upscale_factor`]).
pub const MIN_TILE_PX: usize = 256;

/// White pixels between panels and between rows.
pub const GAP: usize = 4;

/// Height of the header row (column title, and under it the column's stretch).
pub const HEADER_HEIGHT: usize = 44;

/// Width of the left margin holding each row's label (tile id, PSNR).
pub const MARGIN_WIDTH: usize = 200;

/// Font size of the column titles.
const TITLE_PX: u32 = 18;
/// Font size of the stretch under each title and of the row labels.
const NOTE_PX: u32 = 14;
/// Baseline-to-baseline distance of the row label's lines.
const LINE_PX: i32 = 20;
/// Inner padding of the margin and header text.
const PAD: i32 = 6;

/// `v` in `0..=1` as an 8-bit level (clamped; a non-finite value is black).
pub fn to_u8(v: f32) -> u8 {
    if v.is_finite() { (v.clamp(0.0, 1.0) * 255.0).round() as u8 } else { 0 }
}

/// The grey level of VV `db` (in dB) under the fixed SAR stretch: [`SAR_DB_BLACK`] and below black,
/// [`SAR_DB_WHITE`] and above white, linear in dB between (a non-finite value is black).
pub fn sar_db_grey(db: f32) -> [u8; 3] {
    let g = to_u8((db - SAR_DB_BLACK) / (SAR_DB_WHITE - SAR_DB_BLACK));
    [g, g, g]
}

/// The true-colour pixel `p` of `[4, hw]` planes (B2, B3, B4, B8): (B4, B3, B2) × `gain`, quantised.
pub fn true_colour(planes: &[f32], hw: usize, p: usize, gain: f32) -> [u8; 3] {
    [planes[2 * hw + p], planes[hw + p], planes[p]].map(|v| to_u8(v * gain))
}

/// The nearest-neighbour upscaling factor of a tile whose shorter side is `side` pixels: the
/// smallest integer `k ≥ 1` with `k · side ≥ MIN_TILE_PX`, i.e. `ceil(MIN_TILE_PX / side)` (1 for
/// a tile already that large; an empty side counts as 1 pixel).
pub fn upscale_factor(side: usize) -> usize {
    MIN_TILE_PX.div_ceil(side.max(1)).max(1)
}

/// `(width, height)` in pixels of a grid of `columns` panels and `rows` rows of `tile_h × tile_w`
/// tiles: `k = upscale_factor(min(tile_h, tile_w))`,
/// `width = MARGIN_WIDTH + columns·k·tile_w + (columns − 1)·GAP`,
/// `height = HEADER_HEIGHT + rows·k·tile_h + (rows − 1)·GAP`.
pub fn grid_size(columns: usize, rows: usize, tile_h: usize, tile_w: usize) -> (usize, usize) {
    let k = upscale_factor(tile_h.min(tile_w));
    (
        MARGIN_WIDTH + columns * k * tile_w + columns.saturating_sub(1) * GAP,
        HEADER_HEIGHT + rows * k * tile_h + rows.saturating_sub(1) * GAP,
    )
}

/// One column of a grid: its title and, under it, how its values are stretched for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    /// The title ("SAR VV (dB)", "prediction", …).
    pub title: &'a str,
    /// The stretch, in a few words ("−25 dB black … 0 dB white").
    pub stretch: &'a str,
}

/// The note under a SAR column: the fixed stretch.
pub fn sar_stretch_note() -> String {
    format!("{SAR_DB_BLACK} dB black … {SAR_DB_WHITE} dB white").replace('-', "−")
}

/// The note under a true-colour column: the composite and its gain.
pub fn true_colour_note() -> String {
    format!("B4 B3 B2 × {RGB_GAIN}")
}

/// An RGB image: `width × height` pixels, 3 bytes each, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Columns of pixels.
    pub width: usize,
    /// Rows of pixels.
    pub height: usize,
    /// Row-major RGB.
    pub pixels: Vec<u8>,
}

impl Image {
    /// The colour at `(x, y)`.
    pub fn at(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }
}

/// Why a grid could not be drawn or written.
#[derive(Debug, Error)]
pub enum GridError {
    /// The embedded font could not be registered with plotters.
    #[error("the embedded plot font could not be registered")]
    Font,
    /// Plotters failed to draw the labels.
    #[error("drawing the labels failed: {0}")]
    Draw(String),
    /// The image is too large for a PNG.
    #[error("a {0}x{1} image is too large for PNG")]
    TooLarge(usize, usize),
    /// Creating the directory failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Writing the PNG failed.
    #[error("{0}")]
    Png(#[from] PngError),
}

/// Renders `rows` as a labelled grid of `N` columns (see the [module docs](self) for the layout):
/// `size(row)` is the row's tile `(height, width)`, `label(row)` the lines beside it (tile id,
/// PSNR), and `paint(row)` gives, for tile pixel `p = y * width + x`, its colour in each column (a
/// row's own set-up goes in `paint`). Cells are as large as the largest tile, the upscaling factor
/// is [`upscale_factor`] of that cell's shorter side, and a smaller tile leaves the rest of its
/// cell white. A label too wide for the margin keeps its end, after an ellipsis.
pub fn render_grid<'a, R, F, const N: usize>(
    columns: &[Column<'_>; N],
    rows: &'a [R],
    size: impl Fn(&R) -> (usize, usize),
    label: impl Fn(&R) -> Vec<String>,
    paint: impl Fn(&'a R) -> F,
) -> Result<Image, GridError>
where
    F: Fn(usize) -> [[u8; 3]; N],
{
    if !register_font() {
        return Err(GridError::Font);
    }
    let tile_h = rows.iter().map(|r| size(r).0).max().unwrap_or(0);
    let tile_w = rows.iter().map(|r| size(r).1).max().unwrap_or(0);
    let k = upscale_factor(tile_h.min(tile_w));
    let (cell_h, cell_w) = (k * tile_h, k * tile_w);
    let (width, height) = grid_size(N, rows.len(), tile_h, tile_w);
    let (Ok(w32), Ok(h32)) = (u32::try_from(width), u32::try_from(height)) else {
        return Err(GridError::TooLarge(width, height));
    };
    let col_x = |c: usize| MARGIN_WIDTH + c * (cell_w + GAP);
    let row_y = |r: usize| HEADER_HEIGHT + r * (cell_h + GAP);
    let mut pixels = vec![255u8; width * height * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w32, h32)).into_drawing_area();
        let draw = |text: &str, (x, y): (i32, i32), style: &TextStyle| {
            root.draw(&Text::new(text.to_string(), (x, y), style.clone())).map_err(|e| GridError::Draw(e.to_string()))
        };
        let title =
            TextStyle::from((FONT_FAMILY, TITLE_PX).into_font()).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
        let note = TextStyle::from((FONT_FAMILY, NOTE_PX).into_font())
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Center, VPos::Top));
        for (c, col) in columns.iter().enumerate() {
            let x = (col_x(c) + cell_w / 2) as i32;
            draw(col.title, (x, PAD - 2), &title)?;
            draw(col.stretch, (x, PAD + TITLE_PX as i32 + 2), &note)?;
        }
        let text =
            TextStyle::from((FONT_FAMILY, NOTE_PX).into_font()).color(&BLACK).pos(Pos::new(HPos::Left, VPos::Top));
        let room = MARGIN_WIDTH as i32 - 2 * PAD;
        for (ri, r) in rows.iter().enumerate() {
            for (li, line) in label(r).iter().enumerate() {
                let fitted = fit(line, room, |s| root.estimate_text_size(s, &text).map(|(w, _)| w as i32).unwrap_or(0));
                draw(&fitted, (PAD, row_y(ri) as i32 + PAD + li as i32 * LINE_PX), &text)?;
            }
        }
        root.present().map_err(|e| GridError::Draw(e.to_string()))?;
    }
    for (ri, r) in rows.iter().enumerate() {
        let (h, w) = size(r);
        let pixel = paint(r);
        for y in 0..h {
            for x in 0..w {
                for (c, px) in pixel(y * w + x).into_iter().enumerate() {
                    // Nearest neighbour: tile pixel (x, y) fills the k × k block at (k·x, k·y).
                    for dy in 0..k {
                        let oy = row_y(ri) + y * k + dy;
                        let start = (oy * width + col_x(c) + x * k) * 3;
                        for block in pixels[start..start + 3 * k].chunks_exact_mut(3) {
                            block.copy_from_slice(&px);
                        }
                    }
                }
            }
        }
    }
    Ok(Image { width, height, pixels })
}

/// `line` if `measure(line) ≤ room`, else its longest tail that fits after "…".
fn fit(line: &str, room: i32, measure: impl Fn(&str) -> i32) -> String {
    if measure(line) <= room {
        return line.to_string();
    }
    let chars: Vec<char> = line.chars().collect();
    (1..chars.len())
        .map(|start| format!("…{}", chars[start..].iter().collect::<String>()))
        .find(|s| measure(s) <= room)
        .unwrap_or_else(|| "…".to_string())
}

/// Writes `image` as an 8-bit RGB PNG at `path`, creating its directory.
pub fn write_png(path: &Path, image: &Image) -> Result<(), GridError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (w, h) = (u32::try_from(image.width), u32::try_from(image.height));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(GridError::TooLarge(image.width, image.height));
    };
    Ok(write_rgb_png(path, w, h, &image.pixels)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_the_fixed_sar_stretch_and_true_colour() {
        assert_eq!([to_u8(-1.0), to_u8(0.5), to_u8(2.0), to_u8(f32::NAN), to_u8(f32::INFINITY)], [0, 128, 255, 0, 0]);
        assert_eq!(sar_db_grey(SAR_DB_BLACK), [0; 3]);
        assert_eq!(sar_db_grey(-40.0), [0; 3], "below the stretch clips to black");
        assert_eq!(sar_db_grey(SAR_DB_WHITE), [255; 3]);
        assert_eq!(sar_db_grey(5.0), [255; 3], "above the stretch clips to white");
        assert_eq!(sar_db_grey(-12.5), [128; 3], "linear in dB");
        // One pixel: B2 0, B3 0.1, B4 1.
        assert_eq!(true_colour(&[0.0, 0.1, 1.0, 0.5], 1, 0, RGB_GAIN), [255, 77, 0]);
        assert_eq!(sar_stretch_note(), "−25 dB black … 0 dB white");
        assert_eq!(true_colour_note(), "B4 B3 B2 × 3");
    }

    #[test]
    fn the_upscaling_factor_reaches_min_tile_px() {
        assert_eq!([upscale_factor(64), upscale_factor(100), upscale_factor(256), upscale_factor(300)], [4, 3, 1, 1]);
        assert_eq!(upscale_factor(0), MIN_TILE_PX);
        for side in 1..600 {
            let k = upscale_factor(side);
            assert!(k * side >= MIN_TILE_PX && (k == 1 || (k - 1) * side < MIN_TILE_PX), "side {side}: k {k}");
        }
    }

    #[test]
    fn the_label_keeps_its_end_when_too_wide() {
        let measure = |s: &str| s.chars().count() as i32;
        assert_eq!(fit("abc", 3, measure), "abc");
        assert_eq!(fit("abcdef", 4, measure), "…def");
        assert_eq!(fit("abcdef", 0, measure), "…");
    }

    const COLS: [Column<'static>; 2] = [Column { title: "a", stretch: "x" }, Column { title: "b", stretch: "y" }];

    #[test]
    fn a_grid_upscales_tiles_by_nearest_neighbour_under_a_header_and_beside_labels() {
        // Two rows of two columns; the first row is 1x1, the second 1x2 (cells are k·1 × k·2, k = 256).
        let rows = [(1usize, 1usize, 10u8), (1, 2, 20)];
        let img = render_grid(
            &COLS,
            &rows,
            |r| (r.0, r.1),
            |r| vec![format!("tile {}", r.2)],
            |r| move |p: usize| [[r.2, p as u8, 0], [0, 0, r.2]],
        )
        .unwrap();
        let k = MIN_TILE_PX;
        assert_eq!((img.width, img.height), grid_size(2, 2, 1, 2));
        assert_eq!((img.width, img.height), (MARGIN_WIDTH + 2 * 2 * k + GAP, HEADER_HEIGHT + 2 * k + GAP));
        assert_eq!(img.pixels.len(), img.width * img.height * 3);
        let (x0, y0) = (MARGIN_WIDTH, HEADER_HEIGHT);
        // Row 0, column 0: its one pixel fills the whole k × k block; the rest of the cell is white.
        for (x, y) in [(x0, y0), (x0 + k - 1, y0 + k - 1)] {
            assert_eq!(img.at(x, y), [10, 0, 0]);
        }
        assert_eq!(img.at(x0 + k, y0), [255; 3], "outside a smaller tile stays white");
        assert_eq!(img.at(x0 + 2 * k, y0), [255; 3], "gap between columns");
        assert_eq!(img.at(x0 + 2 * k + GAP, y0), [0, 0, 10]);
        assert_eq!(img.at(x0, y0 + k), [255; 3], "gap between rows");
        // Row 1: pixel 1 is the second k-wide block.
        let y1 = y0 + k + GAP;
        assert_eq!(img.at(x0 + k - 1, y1), [20, 0, 0]);
        assert_eq!(img.at(x0 + k, y1 + k - 1), [20, 1, 0]);
        assert_eq!(img.at(x0 + 2 * k + GAP + 2 * k - 1, y1), [0, 0, 20]);
        // Text: dark pixels in the header over each column and in the margin beside each row.
        let dark = |xs: std::ops::Range<usize>, ys: std::ops::Range<usize>| {
            ys.clone().any(|y| xs.clone().any(|x| img.at(x, y).iter().all(|&c| c < 128)))
        };
        assert!(dark(x0..x0 + 2 * k, 0..HEADER_HEIGHT), "first column's title");
        assert!(dark(x0 + 2 * k + GAP..img.width, 0..HEADER_HEIGHT), "second column's title");
        assert!(dark(0..MARGIN_WIDTH, y0..y0 + k), "first row's label");
        assert!(dark(0..MARGIN_WIDTH, y1..y1 + k), "second row's label");
        assert!(!dark(0..MARGIN_WIDTH, 0..HEADER_HEIGHT), "nothing above the labels");

        let empty =
            render_grid(&COLS, &[] as &[(usize, usize, u8)], |r| (r.0, r.1), |_| vec![], |_| |_: usize| [[0u8; 3]; 2])
                .unwrap();
        assert_eq!((empty.width, empty.height), (MARGIN_WIDTH + GAP, HEADER_HEIGHT));

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a").join("b.png");
        write_png(&path, &img).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize, img.width);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()) as usize, img.height);
        // Too few pixels for the size: an error, no panic.
        let short = Image { width: 3, height: 3, pixels: vec![0; 5] };
        assert!(write_png(&path, &short).is_err());
    }
}
