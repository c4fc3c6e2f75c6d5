//! TensorBoard scalar event files: a small writer and the matching reader.
//!
//! No maintained Rust crate writes event files without pulling in a protobuf toolchain and
//! image codecs (`tensorboard-rs` is unmaintained since 2022), and scalars need only three
//! protobuf messages. The file is a TFRecord stream: each record is
//! `u64 length | masked crc32c(length) | bytes | masked crc32c(bytes)`, each record one
//! `tensorflow.Event`:
//! `Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }`,
//! `Summary { repeated Value value = 1; }`, `Value { string tag = 1; float simple_value = 2; }`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends scalar summaries to one TensorBoard event file.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_bytes(buf: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    buf.push(tag);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<unix secs>.<host>.<pid>` and writes the version record.
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        let name =
            format!("events.out.tfevents.{}.{}.{}", now() as u64, host.replace(['/', '\\'], "_"), std::process::id());
        let path = dir.join(name);
        let mut w = Self { out: BufWriter::new(File::create(&path)?), path };
        let mut event = Vec::new();
        event.push(0x09);
        event.extend_from_slice(&now().to_le_bytes());
        put_bytes(&mut event, 0x1a, b"brain.Event:2");
        w.record(&event)?;
        w.flush()?;
        Ok(w)
    }

    /// Path of the event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc(data).to_le_bytes())
    }

    /// Writes scalars `(tag, value)` for `step` as one event.
    pub fn scalars<'a>(&mut self, step: u64, values: impl IntoIterator<Item = (&'a str, f64)>) -> io::Result<()> {
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            put_bytes(&mut v, 0x0a, tag.as_bytes());
            v.push(0x15);
            v.extend_from_slice(&(value as f32).to_le_bytes());
            put_bytes(&mut summary, 0x0a, &v);
        }
        let mut event = Vec::new();
        event.push(0x09);
        event.extend_from_slice(&now().to_le_bytes());
        event.push(0x10);
        put_varint(&mut event, step);
        put_bytes(&mut event, 0x2a, &summary);
        self.record(&event)
    }

    /// Flushes buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// Global step.
    pub step: u64,
    /// Summary tag, e.g. `train/loss`.
    pub tag: String,
    /// The value (TensorBoard stores f32).
    pub value: f32,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or_else(|| invalid("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(invalid("varint too long"))
    }

    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(invalid("truncated field"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// Next `(field number, payload)`; varints come back as their 8 LE bytes.
    fn next(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let payload = match key & 7 {
            0 => self.varint()?.to_le_bytes().to_vec(),
            1 => self.take(8)?.to_vec(),
            2 => {
                let n = self.varint()? as usize;
                self.take(n)?.to_vec()
            }
            5 => self.take(4)?.to_vec(),
            w => return Err(invalid(format!("unsupported wire type {w}"))),
        };
        Ok(Some((key >> 3, payload)))
    }
}

/// Reads every scalar of an event file, checking each record's checksums.
pub fn read_scalars(path: &Path) -> io::Result<Vec<Scalar>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let header = data.get(pos..pos + 12).ok_or_else(|| invalid("truncated record header"))?;
        let len_bytes = &header[..8];
        if masked_crc(len_bytes).to_le_bytes() != header[8..12] {
            return Err(invalid(format!("length checksum mismatch at byte {pos}")));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let body = data.get(pos + 12..pos + 12 + len).ok_or_else(|| invalid("truncated record"))?;
        let crc = data.get(pos + 12 + len..pos + 16 + len).ok_or_else(|| invalid("truncated record crc"))?;
        if masked_crc(body).to_le_bytes() != crc {
            return Err(invalid(format!("data checksum mismatch at byte {pos}")));
        }
        pos += 16 + len;

        let mut step = 0;
        let mut summaries = Vec::new();
        let mut event = Fields { buf: body };
        while let Some((field, payload)) = event.next()? {
            match field {
                2 => step = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes")),
                5 => summaries.push(payload),
                _ => {}
            }
        }
        for summary in summaries {
            let mut s = Fields { buf: &summary };
            while let Some((1, value)) = s.next()? {
                let (mut tag, mut simple) = (String::new(), None);
                let mut v = Fields { buf: &value };
                while let Some((field, payload)) = v.next()? {
                    match field {
                        1 => tag = String::from_utf8(payload).map_err(|_| invalid("tag is not UTF-8"))?,
                        2 => simple = Some(f32::from_le_bytes(payload[..4].try_into().expect("4 bytes"))),
                        _ => {}
                    }
                }
                if let Some(value) = simple {
                    out.push(Scalar { step, tag, value });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow() {
        // crc32c("") = 0 → masked = rotr(0, 15) + 0xa282ead8
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        // crc32c("123456789") = 0xe3069283 (the standard check value)
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn scalars_round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(1, [("train/loss", 0.5), ("train/lr", 1e-3)]).unwrap();
        w.scalars(300, [("train/loss", 0.25)]).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        let got = read_scalars(&path).unwrap();
        assert_eq!(
            got,
            vec![
                Scalar { step: 1, tag: "train/loss".into(), value: 0.5 },
                Scalar { step: 1, tag: "train/lr".into(), value: 1e-3 },
                Scalar { step: 300, tag: "train/loss".into(), value: 0.25 },
            ]
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(read_scalars(&path).unwrap_err().to_string().contains("checksum"));
    }
}
