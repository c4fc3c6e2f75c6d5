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
///
/// The two names share one inode: damage to either (an in-place edit, a truncation, a bad
/// sector) is damage to both. The checkpoint store therefore writes independent copies with
/// [`copy_atomic`]; this stays for callers that want a cheap alias and for the save-cost bench.
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
        Err(_) => copy_atomic(source, target),
    }
}

/// Writes `target` as an independent copy of the file `source` (its own inode and data
/// blocks), with [`write_atomic`]'s guarantees: temporary file, fsync, rename, directory
/// fsync; on any error `target` is untouched and no temporary is left.
///
/// The bytes move inside the kernel where it can (`copy_file_range` on Linux, through
/// `std::io::copy`), so the source, usually still in the page cache, is not read into user space.
pub fn copy_atomic(source: &Path, target: &Path) -> io::Result<()> {
    let mut src = File::open(source)?;
    let expected = src.metadata()?.len();
    write_atomic(
        target,
        |f| {
            let copied = io::copy(&mut src, f)?;
            if copied != expected {
                return Err(io::Error::other(format!(
                    "copy of {} cut short: {copied} of {expected} bytes",
                    source.display()
                )));
            }
            Ok(())
        },
        || {},
    )
}

/// The name of the file a temporary from [`temp_path`] was writing
/// (`.checkpoint_latest.safetensors.tmp-12-0` → `checkpoint_latest.safetensors`) and the id
/// of the process that wrote it.
fn temp_target(name: &str) -> Option<(&str, Option<u32>)> {
    let (target, tail) = name.strip_prefix('.')?.rsplit_once(TMP_MARKER)?;
    let pid = tail.split_once('-').and_then(|(pid, _)| pid.parse().ok());
    Some((target, pid))
}

/// Whether process `pid` is alive and is not this process. Where that cannot be known (no
/// `/proc`), every other process counts as gone, so stale temporaries are still cleaned.
fn other_process_alive(pid: u32) -> bool {
    pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes temporaries left in `dir` by a process that died mid-save (one of a process still
/// running is its save in progress, and is left alone).
pub fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    remove_stale_temps_where(dir, |_| true)
}

/// [`remove_stale_temps`] restricted to the temporaries whose target file name satisfies
/// `is_ours` (the checkpoint store cleans only temporaries of `.safetensors` files, so it can
/// share a directory with other writers).
pub fn remove_stale_temps_where(dir: &Path, is_ours: impl Fn(&str) -> bool) -> io::Result<usize> {
    let mut removed = 0;
    if !dir.is_dir() {
        return Ok(0);
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_temp_name(&name) || !entry.file_type()?.is_file() {
            continue;
        }
        let Some((target, pid)) = temp_target(&name) else { continue };
        if !is_ours(target) || pid.is_some_and(other_process_alive) {
            continue;
        }
        fs::remove_file(entry.path())?;
        removed += 1;
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
    fn copies_are_independent_files_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        write_atomic(&a, |f| f.write_all(b"one"), || {}).unwrap();
        fs::write(&b, b"old").unwrap();
        copy_atomic(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"one");
        // Damaging one name in place leaves the other intact.
        fs::write(&a, b"bad").unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"one", "a copy does not share the original's data");
        let err = copy_atomic(&dir.path().join("missing"), &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs::read(&b).unwrap(), b"one", "a failed copy leaves the target");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary left: {names:?}");
    }

    #[test]
    fn cleaning_keeps_other_targets_and_live_writers() {
        let dir = tempfile::tempdir().unwrap();
        let dead = temp_path(&dir.path().join("checkpoint_latest.safetensors"));
        fs::write(&dead, b"torn").unwrap();
        // A temporary of another writer's file in a shared directory, and one of a live
        // process (pid 1 is always running) for a checkpoint name.
        let other = dir.path().join(format!(".config.yaml{TMP_MARKER}999999999-0"));
        fs::write(&other, b"x").unwrap();
        let live = dir.path().join(format!(".epoch_1.safetensors{TMP_MARKER}1-0"));
        fs::write(&live, b"x").unwrap();
        let removed = remove_stale_temps_where(dir.path(), |t| t.ends_with(".safetensors")).unwrap();
        assert_eq!(removed, if Path::new("/proc/1").exists() { 1 } else { 2 });
        assert!(!dead.exists() && other.exists());
        assert_eq!(temp_target(".a.b.tmp-12-3"), Some(("a.b", Some(12))));
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
