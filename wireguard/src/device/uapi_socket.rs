//! The configuration socket (feature `io`): `/var/run/wireguard/<iface>.sock`,
//! a Unix stream socket with mode 0600 on which `wg` asks `get=1` or sends
//! `set=1`. Each connection may carry several requests, each ended by a
//! blank line. The socket file is removed when the [`UapiSocket`] drops.
//!
//! Neither the socket nor its directory depends on the process's umask:
//! the directories created on the way are made 0755 (as wireguard-go
//! does), and the socket is bound inside a private 0700 directory next to
//! its final path, narrowed to 0600 there, and renamed into place, so it is
//! never reachable by another user with a wider mode. (A Unix socket file
//! cannot be `fchmod`ed before `bind`, and setting the umask around `bind`
//! would race with every other thread of the process creating files.)

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use super::Shared;
use crate::uapi::{self, Request};

/// The longest request accepted (a `set` for thousands of peers fits).
const MAX_REQUEST: usize = 4 << 20;

/// A listening configuration socket; removed on drop.
pub(crate) struct UapiSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl UapiSocket {
    /// Creates the socket at `path` (its directory too), refusing one that
    /// another process still answers on, and serves it.
    pub(crate) fn bind(path: &Path, shared: Arc<Shared>) -> io::Result<Self> {
        let listener = bind_private(path)?;
        listener.set_nonblocking(true)?;
        let listener = match UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        let task = tokio::spawn(serve(listener, shared));
        Ok(Self {
            path: path.to_owned(),
            task,
        })
    }

    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds a Unix socket at `path` with mode 0600, whatever the umask (see
/// the module docs), creating its directory with mode 0755. A socket that
/// another process still answers on is refused; a stale one is replaced.
fn bind_private(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process answers on this socket",
        ));
    }
    // In the same directory, so that the rename stays on one file system.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let private = dir.join(format!(
        ".uapi-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // A leftover of an earlier process that had this process id.
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = (|| {
        // The umask may have taken bits from the directory, never added any.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
        let tmp = private.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        // Narrowed before it is reachable: it can change keys and peers.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        // Replaces a stale socket of a process that is gone.
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
}

impl Drop for UapiSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    // Dropped (aborting every connection) when this task is aborted.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(handle(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "wireguard: configuration socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves one connection: request after request until the peer closes.
async fn handle(stream: UnixStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut request = String::new();
    loop {
        request.clear();
        // Read up to and including the blank line ending the request.
        loop {
            let before = request.len();
            match (&mut reader)
                .take((MAX_REQUEST - before) as u64 + 1)
                .read_line(&mut request)
                .await
            {
                Ok(0) => return,
                Ok(_) if request.len() > MAX_REQUEST => {
                    let _ = write
                        .write_all(uapi::render_errno(uapi::EIO).as_bytes())
                        .await;
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
            if request[before..] == *"\n" {
                break;
            }
            // `get=1` is always followed by exactly one blank line.
        }
        let answer = match uapi::parse_request(&request) {
            Ok(Request::Get) => shared.render_get(),
            Ok(Request::Set(set)) => uapi::render_errno(shared.apply_set(&set)),
            Err(e) => {
                tracing::debug!(error = %e, "wireguard: configuration request refused");
                uapi::render_errno(e.errno())
            }
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Under umask 000 (the process-wide umask is set for the length of
    /// the bind only), the directories are 0755 and the socket 0600.
    #[test]
    fn modes_do_not_depend_on_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let dir = run.join("wireguard");
        let path = dir.join("gelc0.sock");
        // SAFETY: umask has no preconditions; the old mask is put back.
        let old = unsafe { libc::umask(0) };
        let bound = bind_private(&path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let listener = bound.unwrap();
        assert_eq!(mode(&run), 0o755, "{}", run.display());
        assert_eq!(mode(&dir), 0o755, "{}", dir.display());
        assert_eq!(mode(&path), 0o600);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("gelc0.sock")]);
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        listener.accept().unwrap();

        // A socket someone answers on is refused; a stale one is replaced.
        let e = bind_private(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        drop(listener);
        let again = bind_private(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        again.accept().unwrap();
    }
}
