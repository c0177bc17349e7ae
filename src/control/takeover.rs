//! Another geoedge on this edge's addresses. `SO_REUSEPORT`, which the
//! restart handover needs, would let any second geoedge bind the same
//! address and split the clients between two routing tables; so before
//! anything binds, each fixed address (the client listeners and the metrics
//! listener) is probed with a plain bind (no `SO_REUSEPORT`). When that
//! finds the address in use, the owner of the listening socket is looked
//! up: its inode in `/proc/net/tcp` and `/proc/net/tcp6`, then the process
//! holding that inode among `/proc/*/fd`. A geoedge there refuses the start
//! (naming its pid) unless the start was asked to take over from it
//! (`--takeover`); any other program refuses it too, by name.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// A process listening on an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub name: String,
    /// Whether it is a geoedge (its executable's or command's name).
    pub geoedge: bool,
}

/// Why a start is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Another geoedge serves the address.
    #[error("{addr} is served by another geoedge (pid {pid}); pass --takeover to take over from it (a zero-downtime restart)")]
    Geoedge {
        /// The address.
        addr: SocketAddr,
        /// The other geoedge.
        pid: u32,
    },
    /// Another program listens on it.
    #[error("binding {addr}: address in use by {name} (pid {pid})")]
    Other {
        /// The address.
        addr: SocketAddr,
        /// The program.
        name: String,
        /// Its pid.
        pid: u32,
    },
    /// Something listens on it that this user cannot see.
    #[error("binding {addr}: address in use (by a process this user cannot see; if it is another geoedge, pass --takeover to take over from it)")]
    Unseen {
        /// The address.
        addr: SocketAddr,
    },
}

/// Checks every address with a fixed port: returns the pids of the
/// geoedges serving any of them (empty: none), or refuses the start when
/// one is found without `takeover`, or another program holds one.
pub fn check(addrs: &[SocketAddr], takeover: bool) -> Result<Vec<u32>, Refused> {
    let mut found = BTreeSet::new();
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u32;
    for &addr in addrs {
        if addr.port() == 0 || !in_use(addr) {
            continue;
        }
        let owners: Vec<Owner> = owners(addr).into_iter().filter(|o| o.pid != me).collect();
        if let Some(other) = owners.iter().find(|o| o.geoedge) {
            if !takeover {
                return Err(Refused::Geoedge {
                    addr,
                    pid: other.pid,
                });
            }
            tracing::info!(%addr, pid = other.pid, "taking over from the geoedge serving this address (--takeover)");
            found.extend(owners.iter().filter(|o| o.geoedge).map(|o| o.pid));
        } else if let Some(other) = owners.first() {
            return Err(Refused::Other {
                addr,
                name: other.name.clone(),
                pid: other.pid,
            });
        } else if !takeover {
            return Err(Refused::Unseen { addr });
        }
    }
    Ok(found.into_iter().collect())
}

/// Whether a plain bind of `addr` (`SO_REUSEADDR`, no `SO_REUSEPORT`) fails
/// with "address in use": something listens on it or on a wildcard of
/// its port. Any other failure is left to the real bind to report.
fn in_use(addr: SocketAddr) -> bool {
    let Ok(socket) = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
    else {
        return false;
    };
    if addr.is_ipv6() {
        // As the listeners are: an IPv6 wildcard takes IPv4 clients too.
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_reuse_address(true);
    matches!(socket.bind(&addr.into()), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

/// The processes holding a socket that listens on an address overlapping
/// `addr` (the same port, and the same address or a wildcard on either
/// side), as far as this user can see them.
pub fn owners(addr: SocketAddr) -> Vec<Owner> {
    let mut inodes = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            inodes.extend(listening_inodes(&text, addr));
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let pids: Vec<u32> = match std::fs::read_dir("/proc") {
        Ok(procs) => procs
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return Vec::new(),
    };
    // The geoedges first: the descriptors of every process of a busy host
    // are many more to read.
    let (geoedges, others): (Vec<Owner>, Vec<Owner>) =
        pids.into_iter().map(owner).partition(|o| o.geoedge);
    let found = holding(geoedges, &inodes);
    if !found.is_empty() {
        return found;
    }
    holding(others, &inodes)
}

/// Those of `candidates` holding a socket of `inodes`.
fn holding(candidates: Vec<Owner>, inodes: &BTreeSet<u64>) -> Vec<Owner> {
    let mut owners = Vec::new();
    for candidate in candidates {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", candidate.pid)) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|inode| inodes.contains(&inode))
            })
        });
        if holds {
            owners.push(candidate);
        }
    }
    owners
}

/// A process's name, and whether it is a geoedge.
fn owner(pid: u32) -> Owner {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // A binary replaced by a package upgrade reads "geoedge (deleted)".
    let geoedge = name == "geoedge" || exe == "geoedge" || exe.starts_with("geoedge ");
    Owner { pid, name, geoedge }
}

/// The inodes of the listening sockets in a `/proc/net/tcp{,6}` table whose
/// local address overlaps `addr`.
fn listening_inodes(table: &str, addr: SocketAddr) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != LISTEN {
                return None;
            }
            let local = parse_local(f[1])?;
            overlaps(local, addr).then(|| f[9].parse().ok())?
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the kernel
/// prints each 32-bit word of the address in host order.
fn parse_local(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether two listening addresses take clients from each other: the same
/// port, and the same address or a wildcard on either side.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port() && (x == y || x.is_unspecified() || y.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_are_read_as_the_kernel_writes_them() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
   3: 0200007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4545 1 0000000000000000 100 0 0 10 0
";
        let at = |s: &str| listening_inodes(v4, s.parse().unwrap());
        // 127.0.0.1:8080 listens (4242); the established connection on it
        // (4444) and 127.0.0.2:8080 (4545) are not it.
        assert_eq!(at("127.0.0.1:8080"), [4242]);
        // A wildcard takes every address of its port, and is taken by any.
        assert_eq!(at("0.0.0.0:8080"), [4242, 4545]);
        assert_eq!(at("192.0.2.1:8081"), [4343]);
        assert!(at("127.0.0.1:9000").is_empty());
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5252 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(
            listening_inodes(v6, "127.0.0.1:8080".parse().unwrap()),
            [5151]
        );
        assert_eq!(listening_inodes(v6, "[::1]:8082".parse().unwrap()), [5252]);
    }

    #[test]
    fn a_listener_of_this_process_is_found_and_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(in_use(addr));
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() } as u32;
        let found = owners(addr);
        assert!(found.iter().any(|o| o.pid == me), "{found:?}");
        // Not a geoedge (a test binary): the start is refused, by name.
        drop(listener);
        assert!(!in_use(addr));
        assert_eq!(check(&[addr], false).unwrap(), Vec::<u32>::new());
    }
}
