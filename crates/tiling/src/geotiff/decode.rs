//! Decoding one strip or tile: decompression (none, LZW, Deflate, PackBits), byte order and the
//! predictors (horizontal differencing, floating-point byte shuffling), then conversion to `f32`.
//!
//! The `tiff` crate (0.11) parses the file structure, but the chunks are decoded here. Its
//! streaming chunk reader fails on real LZW-compressed padded edge tiles (Landsat 8 L1TP
//! GeoTIFFs: "no lzw end code found") that libtiff, GDAL and tifffile read, while decoding the
//! whole compressed tile at once with `weezl` works. It also drops the extra samples of RGB
//! images (RGB + NIR). Here every sample is decoded as stored, whatever the
//! PhotometricInterpretation, as GDAL does.

use std::io::Read;

use super::Compression;
use crate::tile::RasterDtype;

/// How the samples of every chunk of an image are stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkFormat {
    /// Compression of every chunk.
    pub compression: Compression,
    /// Predictor tag value: 1 none, 2 horizontal differencing, 3 floating point.
    pub predictor: u16,
    /// Sample type.
    pub dtype: RasterDtype,
    /// True for a big-endian ("MM") file.
    pub big_endian: bool,
    /// Samples per pixel within a chunk (bands if interleaved, 1 if planar).
    pub samples: usize,
    /// Pixels per stored chunk row: the tile width, or the image width for strips.
    pub row_pixels: usize,
}

fn bytes_per_sample(dtype: RasterDtype) -> usize {
    match dtype {
        RasterDtype::U8 => 1,
        RasterDtype::U16 | RasterDtype::I16 | RasterDtype::F16 => 2,
        RasterDtype::F32 => 4,
    }
}

impl ChunkFormat {
    /// Bytes of one decoded chunk row.
    pub fn row_bytes(&self) -> usize {
        self.row_pixels * self.samples * bytes_per_sample(self.dtype)
    }

    /// Decodes a chunk of `rows` rows from its stored bytes into `f32` samples, row-major with
    /// `row_pixels * samples` samples per row. Errors say what is wrong (the caller names the
    /// file and the chunk).
    pub fn decode(&self, raw: &[u8], rows: usize) -> Result<Vec<f32>, String> {
        let want = self.row_bytes() * rows;
        let bytes = decompress(self.compression, raw, want)?;
        if bytes.len() < want {
            return Err(format!("decompressed to {} bytes, expected {want} ({rows} rows)", bytes.len()));
        }
        let bytes = &bytes[..want];
        let row_samples = self.row_pixels * self.samples;
        let stride = self.samples;
        let horizontal = self.predictor == 2;
        Ok(match self.dtype {
            RasterDtype::U8 => {
                let mut v = bytes.to_vec();
                if horizontal {
                    undo_differencing(&mut v, row_samples, stride, u8::wrapping_add);
                }
                v.into_iter().map(f32::from).collect()
            }
            RasterDtype::U16 | RasterDtype::I16 | RasterDtype::F16 => {
                let mut v: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|b| {
                        if self.big_endian {
                            u16::from_be_bytes([b[0], b[1]])
                        } else {
                            u16::from_le_bytes([b[0], b[1]])
                        }
                    })
                    .collect();
                if horizontal {
                    undo_differencing(&mut v, row_samples, stride, u16::wrapping_add);
                }
                match self.dtype {
                    RasterDtype::I16 => v.into_iter().map(|s| f32::from(s as i16)).collect(),
                    RasterDtype::U16 => v.into_iter().map(f32::from).collect(),
                    _ => return Err("float16 samples are not supported".to_string()),
                }
            }
            RasterDtype::F32 => {
                let mut v: Vec<u32> = if self.predictor == 3 {
                    unshuffle_f32_rows(bytes, row_samples, stride)
                } else {
                    bytes
                        .chunks_exact(4)
                        .map(|b| {
                            let b = [b[0], b[1], b[2], b[3]];
                            if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
                        })
                        .collect()
                };
                if horizontal {
                    // libtiff allows horizontal differencing on 32-bit samples of any format.
                    undo_differencing(&mut v, row_samples, stride, u32::wrapping_add);
                }
                v.into_iter().map(f32::from_bits).collect()
            }
        })
    }
}

/// Decompresses a chunk; at most `want` bytes are needed (more may be returned).
fn decompress(compression: Compression, raw: &[u8], want: usize) -> Result<Vec<u8>, String> {
    match compression {
        Compression::None => Ok(raw.to_vec()),
        Compression::Lzw => {
            // TIFF LZW: MSB-first codes, code width switching one code early. Decoding the whole
            // buffer accepts a missing end-of-information code, as libtiff does.
            let mut decoder = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
            let mut out = Vec::with_capacity(want);
            let result = decoder.into_vec(&mut out).decode_all(raw);
            match result.status {
                Ok(_) => Ok(out),
                // Garbage after enough good data (e.g. padding): keep what was decoded.
                Err(_) if out.len() >= want => Ok(out),
                Err(e) => Err(format!("corrupt LZW data: {e}")),
            }
        }
        Compression::Deflate => {
            let mut out = Vec::with_capacity(want);
            let mut reader = flate2::read::ZlibDecoder::new(raw).take(want as u64);
            match reader.read_to_end(&mut out) {
                Ok(_) => Ok(out),
                // A stream cut after the last needed byte (e.g. a missing checksum) is fine.
                Err(_) if out.len() >= want => Ok(out),
                Err(e) => Err(format!("corrupt Deflate data: {e}")),
            }
        }
        Compression::PackBits => Ok(unpack_bits(raw, want)),
    }
}

/// PackBits run-length decoding (TIFF 6.0, section 9), stopping once `want` bytes are out.
fn unpack_bits(raw: &[u8], want: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(want);
    let mut i = 0;
    while i < raw.len() && out.len() < want {
        let n = raw[i] as i8;
        i += 1;
        if n >= 0 {
            let end = (i + n as usize + 1).min(raw.len());
            out.extend_from_slice(&raw[i..end]);
            i = end;
        } else if n != -128 {
            if let Some(&b) = raw.get(i) {
                out.extend(std::iter::repeat_n(b, 1 + (-i16::from(n)) as usize));
            }
            i += 1;
        }
    }
    out
}

/// Undoes horizontal differencing (predictor 2) row by row: each sample is stored as the
/// difference to the same sample of the previous pixel.
fn undo_differencing<T: Copy>(v: &mut [T], row_samples: usize, stride: usize, add: fn(T, T) -> T) {
    for row in v.chunks_mut(row_samples) {
        for i in stride..row.len() {
            row[i] = add(row[i], row[i - stride]);
        }
    }
}

/// Undoes the floating-point predictor (3) for 32-bit samples, row by row: the bytes were
/// differenced with a lag of one pixel, after being split into four planes, most significant
/// byte first. The result does not depend on the file's byte order.
fn unshuffle_f32_rows(bytes: &[u8], row_samples: usize, stride: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(bytes.len() / 4);
    let mut row = vec![0u8; row_samples * 4];
    for chunk in bytes.chunks_exact(row_samples * 4) {
        row.copy_from_slice(chunk);
        for i in stride..row.len() {
            row[i] = row[i].wrapping_add(row[i - stride]);
        }
        let n = row_samples;
        out.extend((0..n).map(|k| u32::from_be_bytes([row[k], row[n + k], row[2 * n + k], row[3 * n + k]])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(compression: Compression, predictor: u16, dtype: RasterDtype, big_endian: bool) -> ChunkFormat {
        ChunkFormat { compression, predictor, dtype, big_endian, samples: 2, row_pixels: 3 }
    }

    #[test]
    fn packbits_literals_runs_and_no_ops() {
        // TIFF 6.0's example: FE AA 02 80 00 2A FD AA 03 80 00 2A 22 F7 AA.
        let raw = [0xFE, 0xAA, 0x02, 0x80, 0x00, 0x2A, 0xFD, 0xAA, 0x03, 0x80, 0x00, 0x2A, 0x22, 0xF7, 0xAA];
        let want = [
            0xAA, 0xAA, 0xAA, 0x80, 0x00, 0x2A, 0xAA, 0xAA, 0xAA, 0xAA, 0x80, 0x00, 0x2A, 0x22, 0xAA, 0xAA, 0xAA, 0xAA,
            0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
        ];
        assert_eq!(unpack_bits(&raw, 100), want);
        assert_eq!(unpack_bits(&[0x80, 0x00, 0x07], 100), [7]);
        assert_eq!(unpack_bits(&raw, 4).len(), 6, "stops after the run that reaches `want`");
    }

    #[test]
    fn horizontal_differencing_is_per_sample_and_per_row() {
        // Two rows of three 2-sample pixels, uint16 little-endian, differenced.
        let values: [u16; 12] = [10, 100, 1, 5, 2, 65535, 7, 8, 0, 0, 1, 1];
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let got = format(Compression::None, 2, RasterDtype::U16, false).decode(&raw, 2).unwrap();
        assert_eq!(got, [10.0, 100.0, 11.0, 105.0, 13.0, 104.0, 7.0, 8.0, 7.0, 8.0, 8.0, 9.0]);
    }

    #[test]
    fn int16_big_endian_and_wrapping() {
        let values: [i16; 6] = [-32768, 32767, -1, 0, 1234, -1234];
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let got = format(Compression::None, 1, RasterDtype::I16, true).decode(&raw, 1).unwrap();
        assert_eq!(got, values.map(f32::from));
    }

    #[test]
    fn floating_point_predictor_round_trips() {
        let values: [f32; 6] = [1.5, -2.25, 1e-3, 3.4e38, 0.0, -0.0];
        // Encode as libtiff does: MSB-first byte planes, then byte differences with a one-pixel lag.
        let n = values.len();
        let mut planes = vec![0u8; n * 4];
        for (k, v) in values.iter().enumerate() {
            for (byte, b) in v.to_bits().to_be_bytes().iter().enumerate() {
                planes[byte * n + k] = *b;
            }
        }
        for i in (2..planes.len()).rev() {
            planes[i] = planes[i].wrapping_sub(planes[i - 2]);
        }
        let got = format(Compression::None, 3, RasterDtype::F32, false).decode(&planes, 1).unwrap();
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), values.map(f32::to_bits));
    }

    #[test]
    fn lzw_without_an_end_code_and_deflate_round_trip() {
        let data: Vec<u8> = (0..6u8).collect();
        let mut encoder = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        let mut lzw = encoder.encode(&data).unwrap();
        let u8_format = |c| ChunkFormat { samples: 1, row_pixels: 6, ..format(c, 1, RasterDtype::U8, false) };
        assert_eq!(
            u8_format(Compression::Lzw).decode(&lzw, 1).unwrap(),
            data.iter().map(|&v| f32::from(v)).collect::<Vec<_>>()
        );
        // Drop the end-of-information code (the last 9-bit code, in the last two bytes).
        lzw.truncate(lzw.len() - 1);
        assert_eq!(u8_format(Compression::Lzw).decode(&lzw, 1).unwrap().len(), 6);

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, &data).unwrap();
        let z = z.finish().unwrap();
        assert_eq!(u8_format(Compression::Deflate).decode(&z, 1).unwrap().len(), 6);
        let err = u8_format(Compression::Deflate).decode(b"not zlib", 1).unwrap_err();
        assert!(err.contains("corrupt Deflate data"), "{err}");
        let err = u8_format(Compression::None).decode(&data[..4], 1).unwrap_err();
        assert!(err.contains("decompressed to 4 bytes, expected 6"), "{err}");
    }
}
