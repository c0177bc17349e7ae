//! Network namespaces and veth pairs for the tests that need a second
//! host: [`Netns`] (created with loopback up, deleted when dropped),
//! [`Veth`] (a pair from the root namespace into one, deleted when
//! dropped), threads and commands inside a namespace, and the sweep of
//! namespaces left behind by killed test processes.
//!
//! Names carry the test process's pid (`gepop1234`) so that concurrent
//! runs never meet, and so that [`sweep_stale_namespaces`] can tell a dead
//! run's namespace from a live one's.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cmd::run;

/// A network namespace, deleted (with the veth ends and routes in it)
/// when dropped.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (`ip netns add`) and brings its loopback up.
    pub fn new(name: impl Into<String>) -> Netns {
        let ns = Netns { name: name.into() };
        run(&["ip", "netns", "add", &ns.name]);
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// [`Netns::new`], but `None` when `ip` refuses (not root, say).
    pub fn try_new(name: impl Into<String>) -> Option<Netns> {
        let name = name.into();
        let made = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            return None;
        }
        let ns = Netns { name };
        let _ = Command::new("ip")
            .args(["-n", &ns.name, "link", "set", "lo", "up"])
            .status();
        Some(ns)
    }

    /// Its name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args…` (its failure is the test's); returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec NAME program`).
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Sets a sysctl as the namespace sees it.
    pub fn sysctl(&self, key: &str, value: &str) {
        let kv = format!("{key}={value}");
        run(&["ip", "netns", "exec", &self.name, "sysctl", "-qw", &kv]);
    }

    /// The namespace's file, for setns(2).
    pub fn file(&self) -> File {
        open(&self.name)
    }

    /// Makes `cmd` start inside the namespace (setns before exec), whatever
    /// program it runs.
    pub fn enter_on_spawn(&self, cmd: &mut Command) {
        let file = self.file();
        // SAFETY: setns is async-signal-safe; the descriptor is moved into
        // the closure, so it outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Spawns a thread that runs `f` inside the namespace (setns affects
    /// the calling thread only, and threads it spawns afterwards).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        spawn_in(Some(&self.name), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn open(ns: &str) -> File {
    File::open(format!("/var/run/netns/{ns}")).unwrap_or_else(|e| panic!("namespace {ns}: {e}"))
}

/// Moves the calling thread into namespace `ns` (threads it spawns later
/// inherit it).
pub fn enter(ns: &str) {
    let file = open(ns);
    // SAFETY: setns on a namespace file we hold open; affects this thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Spawns a thread that runs `f` inside namespace `ns` (`None`: this
/// process's own). The namespace is opened before the thread starts, so a
/// missing one fails the caller.
pub fn spawn_in<T: Send + 'static>(
    ns: Option<&str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = ns.map(open);
    std::thread::spawn(move || {
        if let Some(file) = file {
            // SAFETY: setns on a namespace file we hold open; affects this
            // thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        }
        f()
    })
}

/// A veth pair from the root namespace into a namespace: the root end
/// keeps its name, the other end is moved into the namespace; each gets an
/// address and is up. Deleting the root end (when dropped, or with the
/// namespace) deletes both.
pub struct Veth {
    /// The root namespace's end.
    pub outer: String,
    /// The namespace's end.
    pub inner: String,
}

impl Veth {
    /// Creates `outer` (address `outer_cidr`, in the root namespace) and
    /// `inner` (address `inner_cidr`, inside `ns`), both up.
    pub fn new(ns: &str, outer: &str, inner: &str, outer_cidr: &str, inner_cidr: &str) -> Veth {
        run(&[
            "ip", "link", "add", outer, "type", "veth", "peer", "name", inner,
        ]);
        let veth = Veth {
            outer: outer.to_owned(),
            inner: inner.to_owned(),
        };
        run(&["ip", "link", "set", inner, "netns", ns]);
        run(&["ip", "addr", "add", outer_cidr, "dev", outer]);
        run(&["ip", "link", "set", outer, "up"]);
        run(&["ip", "-n", ns, "addr", "add", inner_cidr, "dev", inner]);
        run(&["ip", "-n", ns, "link", "set", inner, "up"]);
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        delete_link(&self.outer);
    }
}

/// Deletes a link (a veth end deletes its peer too); quiet when it is gone.
pub fn delete_link(name: &str) {
    let _ = Command::new("ip")
        .args(["link", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// The pid of the test process that created namespace `name`, when the
/// name has the shape tests give their namespaces: `ge`, lower-case
/// letters, then the pid (`gepop1234`, `gepnca1234`). Any other name is
/// not a test's and yields `None`.
pub fn namespace_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("ge")?;
    let digits = rest.find(|c: char| !c.is_ascii_lowercase())?;
    let (letters, pid) = rest.split_at(digits);
    if letters.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 1)
}

/// Removes network namespaces left behind by test processes that were
/// killed before their cleanup ran. Only a namespace whose name encodes a
/// pid ([`namespace_pid`]) and whose process no longer exists is deleted; a
/// namespace whose pid is alive (the test running, or the pid reused) is
/// never touched. Call before creating a test's namespaces.
pub fn sweep_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Some(pid) = namespace_pid(name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let removed = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if removed {
            eprintln!("removed stale namespace {name}: its test process {pid} is gone");
        }
    }
}

/// A link (a TUN device, a veth end) deleted when dropped.
pub struct Link(pub String);

impl Drop for Link {
    fn drop(&mut self) {
        delete_link(&self.0);
    }
}
