//! Reading the WireGuard private key file: refused when group- or
//! world-accessible, and never logged.

use std::path::Path;

use geoedge_wireguard::PrivateKey;

/// Reads a private key file written by `wg genkey` (or `geoedge wg genkey`).
/// The file is opened without blocking and checked on the opened descriptor:
/// anything but a regular file (a FIFO, a device) is refused at once.
pub fn load_private_key(path: &Path) -> anyhow::Result<PrivateKey> {
    // A key is 45 bytes of base64; more than 1 KiB is not a key file.
    let text = crate::control::secret_file::read(path, "private key file", 1024)?;
    // The error names the file and what is wrong, never the content.
    text.trim()
        .parse::<PrivateKey>()
        .map_err(|e| anyhow::anyhow!("private key file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn only_private_files_with_valid_keys_load() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate().unwrap();
        let good = write(dir.path(), "good", &format!("{}\n", key.to_base64()), 0o600);
        assert_eq!(load_private_key(&good).unwrap(), key);
        let open = write(dir.path(), "open", &key.to_base64(), 0o644);
        let e = load_private_key(&open).unwrap_err().to_string();
        assert!(e.contains("group or others"), "{e}");
        assert!(!e.contains(&key.to_base64()));
        let group = write(dir.path(), "group", &key.to_base64(), 0o640);
        assert!(load_private_key(&group).is_err());
        let bad = write(dir.path(), "bad", "c2hvcnQ=\n", 0o600);
        let e = load_private_key(&bad).unwrap_err().to_string();
        assert!(e.contains("32 bytes") && !e.contains("c2hvcnQ="), "{e}");
        assert!(load_private_key(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("key");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(load_private_key(&fifo).map_err(|e| format!("{e:#}")));
        });
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("blocked on the FIFO")
            .unwrap_err();
        assert!(e.contains("not a regular file (a FIFO)"), "{e}");
    }
}
