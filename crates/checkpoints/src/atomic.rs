//! Atomic file replacement: write a temporary file in the target's directory, fsync it,
//! rename it over the target, fsync the directory. A crash at any instant leaves either the
//! old file or the new one under the target name, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marker in the names of temporary files; nothing with it is ever loaded as a checkpoint.
pub const TMP_MARKER: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary sibling name for `target`: hidden, unique per process and call.
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}{TMP_MARKER}{}-{n}", std::process::id()))
}

/// Whether a file name is one of our temporaries.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TMP_MARKER)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    // Directories can be opened read-only and fsynced on Unix; elsewhere this is a no-op.
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `target` atomically with `write` producing the content.
///
/// On any error the temporary file is removed and `target` is untouched.
/// `before_rename` runs after the content is durable and before it becomes visible (tests use
/// it to widen the window a crash can hit).
pub fn write_atomic(
    target: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
    before_rename: impl FnOnce(),
) -> io::Result<()> {
    let tmp = temp_path(target);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        before_rename();
        fs::rename(&tmp, target)?;
        fsync_dir(parent(target))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes `target` another name for the existing file `source`, atomically replacing any
/// previous `target`. Falls back to an atomic copy where hard links are not supported.
pub fn link_atomic(source: &Path, target: &Path) -> io::Result<()> {
    let tmp = temp_path(target);
    match fs::hard_link(source, &tmp) {
        Ok(()) => {
            if let Err(e) = fs::rename(&tmp, target) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            fsync_dir(parent(target))
        }
        Err(_) => {
            let bytes = fs::read(source)?;
            write_atomic(target, |f| f.write_all(&bytes), || {})
        }
    }
}

/// Removes temporaries left in `dir` by a process that died mid-save.
pub fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    if !dir.is_dir() {
        return Ok(0);
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if is_temp_name(&entry.file_name().to_string_lossy()) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Writes named f32 tensors `(name, shape, row-major values)` as a safetensors file, atomically
/// (model exports keyed by reference names: HOSER's state dict, the stage-1 base). An error says
/// what failed; the previous file, if any, is untouched.
pub fn write_f32_safetensors(path: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> io::Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.into_iter().map(|(k, shape, v)| (k, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views = bytes
        .iter()
        .map(|(k, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).map(|v| (k.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let out =
        safetensors::serialize(views, None).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    write_atomic(path, |f| f.write_all(&out), || {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_previous_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ckpt");
        write_atomic(&target, |f| f.write_all(b"first"), || {}).unwrap();
        let err = write_atomic(
            &target,
            |f| {
                f.write_all(b"sec")?;
                Err(io::Error::from_raw_os_error(28)) // ENOSPC
            },
            || {},
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(fs::read(&target).unwrap(), b"first");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ckpt")]);
    }

    #[test]
    fn links_replace_atomically_and_share_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        write_atomic(&a, |f| f.write_all(b"one"), || {}).unwrap();
        fs::write(&b, b"old").unwrap();
        link_atomic(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"one");
        fs::remove_file(&a).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"one", "a link outlives the original name");
    }

    #[test]
    fn stale_temporaries_are_recognised_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let t = temp_path(&dir.path().join("checkpoint_latest.safetensors"));
        assert!(is_temp_name(&t.file_name().unwrap().to_string_lossy()));
        fs::write(&t, b"torn").unwrap();
        fs::write(dir.path().join("keep.safetensors"), b"x").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep.safetensors").exists());
    }
}
