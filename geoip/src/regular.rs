//! Opening a file that must be a regular file without ever blocking on one
//! that is not: shared by the `.mmdb` loader, the routing crate's SQLite
//! adapter and the binary's config and key files.
//!
//! A FIFO (or a symlink to one) put where a data file belongs would block a
//! plain `open(2)` for reading until some process opens it for writing, and
//! a character device such as `/dev/zero` would be read forever. So the file
//! is opened with `O_NONBLOCK` (an open that returns at once, whatever the
//! file is; the flag has no effect on reads of a regular file) and
//! `O_NOCTTY`, the *opened descriptor* is checked with `fstat(2)` (so the
//! check and the read are about the same file, whatever is renamed over the
//! path meanwhile), and anything but a regular file is refused with an error
//! that says "not a regular file".

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file that is not a regular file was refused: what it is instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a regular file ({0})")]
pub struct NotRegular(pub &'static str);

/// What kind of non-regular file `meta` describes, or `None` for a regular file.
fn kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// Opens `path` (following symlinks) for reading without blocking and
/// returns it with its metadata, refusing anything but a regular file with
/// an [`io::ErrorKind::InvalidInput`] error wrapping [`NotRegular`].
pub fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    match kind(&meta) {
        None => Ok((file, meta)),
        Some(what) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            NotRegular(what),
        )),
    }
}

/// Reads the whole regular file at `path` (see [`open_regular`]).
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let (mut file, meta) = open_regular(path)?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Reads the whole regular file at `path` as UTF-8 text (see [`open_regular`]).
pub fn read_regular_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read_regular(path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()))
}

/// Whether `e` is the refusal of a file that is not a regular file.
pub fn is_not_regular(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NotRegular>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn mkfifo(path: &Path) {
        let ok = Command::new("mkfifo").arg(path).status().unwrap();
        assert!(ok.success(), "mkfifo {}", path.display());
    }

    /// Runs `f` on a thread and fails the test if it has not returned
    /// within 10 s (a blocked open would otherwise hang the test run).
    #[allow(clippy::disallowed_methods)] // bounds a call that must not block
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        let out = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("blocked for 10 s");
        eprintln!("returned after {:?}", started.elapsed());
        out
    }

    #[test]
    fn regular_files_and_symlinks_to_them_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        assert_eq!(read_regular(&p).unwrap(), b"hello\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read_regular_to_string(&link).unwrap(), "hello\n");
        let (_, meta) = open_regular(&link).unwrap();
        assert_eq!(meta.len(), 6);
        assert!(read_regular(&dir.path().join("missing"))
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound));
    }

    #[test]
    fn a_fifo_or_a_symlink_to_one_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        for p in [fifo, link] {
            let e = promptly(move || read_regular(&p).unwrap_err());
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(is_not_regular(&e));
            assert_eq!(e.to_string(), "not a regular file (a FIFO)");
        }
    }

    #[test]
    fn directories_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_regular(dir.path()).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
        let e = promptly(|| read_regular(Path::new("/dev/zero")).unwrap_err());
        assert_eq!(e.to_string(), "not a regular file (a character device)");
        assert!(is_not_regular(&e));
        assert!(!is_not_regular(&io::Error::from(io::ErrorKind::NotFound)));
    }
}
