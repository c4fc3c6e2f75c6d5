//! What every PNG plot of the workspace shares: the embedded font and the "RGB buffer → PNG
//! file" step.
//!
//! Plots are drawn with plotters into an in-memory RGB buffer (`BitMapBackend::with_buffer`,
//! 3 bytes a pixel, rows top to bottom), with text in the embedded DejaVu Sans registered under
//! [`FONT_FAMILY`] (no system fonts are ever looked up), then encoded with the `png` crate by
//! [`write_rgb_png`]; [`draw_rgb`] is the shared drawing step before it.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, IntoDrawingArea, WHITE};
use plotters::style::FontStyle;
use thiserror::Error;

/// Font family name under which [`register_font`] registers the embedded font with plotters.
pub const FONT_FAMILY: &str = "sans-serif";

/// DejaVu Sans (Bitstream Vera / Arev licence, see `assets/LICENSE-DejaVu.txt`), embedded so that
/// plotting never depends on the fonts installed on the machine.
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the embedded font with plotters under [`FONT_FAMILY`], once per process; returns
/// whether it succeeded. Call it before drawing any text.
pub fn register_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok())
}

/// A plot's drawing area: plotters' bitmap backend over an RGB buffer.
pub type Canvas<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Why [`draw_rgb`] drew nothing.
#[derive(Debug, Error)]
pub enum DrawError {
    /// [`register_font`] failed.
    #[error("the embedded font could not be registered")]
    Font,
    /// plotters (or the caller's drawing) failed.
    #[error("{0}")]
    Draw(String),
}

/// The step every plot shares before [`write_rgb_png`]: registers the font, sizes `buffer` to a
/// `width × height` RGB image, fills it white, runs `draw` on it and presents the result.
pub fn draw_rgb(
    buffer: &mut Vec<u8>,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Canvas<'_>) -> Result<(), String>,
) -> Result<(), DrawError> {
    if !register_font() {
        return Err(DrawError::Font);
    }
    buffer.clear();
    buffer.resize(width as usize * height as usize * 3, 0);
    let root = BitMapBackend::with_buffer(buffer, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| DrawError::Draw(e.to_string()))?;
    draw(&root).map_err(DrawError::Draw)?;
    root.present().map_err(|e| DrawError::Draw(e.to_string()))
}

/// Why [`write_rgb_png`] failed.
#[derive(Debug, Error)]
pub enum PngError {
    /// Creating or writing the file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The encoder refused the image (e.g. a buffer that is not `width × height × 3` bytes).
    #[error("{0}")]
    Encode(png::EncodingError),
}

/// Writes `buffer` (8-bit RGB, `width × height × 3` bytes, rows top to bottom) to `path` as a
/// PNG, replacing any file there.
pub fn write_rgb_png(path: &Path, width: u32, height: u32, buffer: &[u8]) -> Result<(), PngError> {
    let encode = |e: png::EncodingError| match e {
        png::EncodingError::IoError(e) => PngError::Io(e),
        e => PngError::Encode(e),
    };
    let file = BufWriter::new(File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(encode)?;
    writer.write_image_data(buffer).map_err(encode)?;
    writer.finish().map_err(encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_of_the_given_size_and_refuses_a_short_buffer() {
        assert!(register_font());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        write_rgb_png(&path, 3, 2, &[200u8; 3 * 2 * 3]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 3);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 2);
        let short = write_rgb_png(&path, 3, 2, &[0u8; 5]).unwrap_err();
        assert!(matches!(short, PngError::Encode(_)), "{short:?}");
        let missing = write_rgb_png(&dir.path().join("no/such/dir.png"), 1, 1, &[0u8; 3]).unwrap_err();
        assert!(matches!(missing, PngError::Io(_)), "{missing:?}");
    }
}
