//! The configuration socket (feature `io`): `/var/run/wireguard/<iface>.sock`,
//! a Unix stream socket with mode 0600 on which `wg` asks `get=1` or sends
//! `set=1`. Each connection may carry several requests, each ended by a
//! blank line. The socket file is removed when the [`UapiSocket`] drops.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::device::Shared;
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
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another process answers on this socket",
                    ));
                }
                // A stale socket from a process that is gone.
                std::fs::remove_file(path)?;
                UnixListener::bind(path)?
            }
            Err(e) => return Err(e),
        };
        // Created with the umask (no write for others, so no one else can
        // connect meanwhile), then narrowed: it can change keys and peers.
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
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
