//! Reading a file that holds a secret (a WireGuard private key, NATS
//! credentials): a regular file only (opened without blocking, so a FIFO
//! is refused at once), refused when group or others can read it, read up
//! to a bound into memory that is zeroed when dropped. Errors name the
//! file and what is wrong, never the content.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use zeroize::Zeroizing;

/// Reads the secret file `path` (described as `what` in errors), at most
/// `limit` bytes.
pub fn read(path: &Path, what: &str, limit: u64) -> anyhow::Result<Zeroizing<String>> {
    let (mut file, meta) = geoedge_geoip::regular::open_regular(path)
        .with_context(|| format!("{what} {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} {} is accessible by group or others (mode {mode:03o}); chmod 600 it",
            path.display()
        );
    }
    let mut text = Zeroizing::new(String::new());
    (&mut file)
        .take(limit)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    Ok(text)
}
