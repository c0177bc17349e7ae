//! The operator documentation (`docs/*.md`, `README.md`) checked against the
//! binary it documents, so that the two cannot drift apart.
//!
//! # Which blocks run
//!
//! A fenced code block whose info string has the word `doctest` is a shell
//! script that runs as written:
//!
//! ````text
//! ```sh doctest                  run it; it must exit 0
//! ```sh doctest exit=2           it must exit 2 (a command expected to fail ends the block)
//! ```sh doctest needs=jq,curl    it uses these commands besides geoedge, sqlite3 and bash
//! ```text output                 right after a doctest block: what it must print
//! ```sh doctest-skip REASON      not run, for the reason given (listed when the test runs)
//! ````
//!
//! Renderers show only the first word (the language), so the marks are
//! invisible to readers. Unmarked blocks are not run: those that need
//! another host, root, or placeholders filled in.
//!
//! The blocks of one file run in order, each in a fresh
//! `bash -e -o pipefail`, in one temporary directory per file (so a later
//! block sees the files an earlier one made) that starts with a copy of the
//! repository's `deploy/` and `sysctl/` (so `deploy/push-routing-db.sh`
//! runs as written from the top of a checkout), with the `geoedge` under test
//! first on the PATH, the real `sqlite3`, `HOME` set to that directory, no
//! `GEOEDGE_*` or `RUST_LOG` variables, and (when run as root) in a network
//! namespace of the file's own, so examples may use the usual ports (8080,
//! 9090) without meeting other tests. Processes a block leaves in the
//! background are killed once the file is done. Each block has 90 s.
//! `GEOEDGE_TEST_DOCS=sni.md,README.md` runs the examples of those files
//! only.
//!
//! The expected output is compared with stdout and stderr together, line by
//! line, trailing whitespace ignored. A line that is `...` alone stands for
//! any number of lines (none included); `...` inside a line stands for any
//! text within it.
//!
//! # Flags
//!
//! Every `--flag` given to a `geoedge` command anywhere in the docs (run or
//! not), and every flag written alone in backticks, must be one that
//! `geoedge … --help` lists.

#[path = "docs/imports.rs"]
mod imports;
#[path = "docs/markdown.rs"]
mod markdown;
use geoedge_testkit as support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use markdown::Example;
use support::geoedge;

/// How long one block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(90);

/// The documentation files: `docs/*.md` and the README.
fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files.push(root.join("README.md"));
    files
}

/// The files whose examples run: all of [`doc_files`], or, with
/// `GEOEDGE_TEST_DOCS` set (comma-separated names, e.g.
/// `sni.md,access-log.md`), those whose file name is one of them.
fn files_to_run() -> Vec<PathBuf> {
    let files = doc_files();
    let Ok(only) = std::env::var("GEOEDGE_TEST_DOCS") else {
        return files;
    };
    let only: Vec<&str> = only.split(',').map(str::trim).collect();
    let picked: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| only.iter().any(|o| n.to_string_lossy() == *o))
        })
        .collect();
    assert!(
        !picked.is_empty(),
        "GEOEDGE_TEST_DOCS={only:?} names no doc file"
    );
    picked
}

fn name(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn examples_in_the_docs_run_as_written() {
    if !support::tool_or_skip("sqlite3") {
        return;
    }
    let files = files_to_run();
    let results: Vec<(PathBuf, Result<usize, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| (f.clone(), s.spawn(|| run_file(f))))
            .collect();
        handles
            .into_iter()
            .map(|(f, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(format!("{}: the runner panicked", name(&f))));
                (f, r)
            })
            .collect()
    });
    let mut failures = Vec::new();
    let mut ran = BTreeMap::new();
    for (file, result) in results {
        match result {
            Ok(n) => {
                ran.insert(name(&file), n);
            }
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "doc examples run: {} ({ran:?})",
        ran.values().sum::<usize>()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
    // The convention itself must not be lost: these files are built on it.
    for must in [
        "docs/routing.md",
        "docs/cookbook.md",
        "docs/troubleshooting.md",
    ] {
        if let Some(&n) = ran.get(must) {
            assert!(n >= 5, "{must}: only {n} examples ran");
        }
    }
}

/// Runs every example of one file; the number run.
fn run_file(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", name(path)))?;
    let (examples, skipped) =
        markdown::examples(&text).map_err(|e| format!("{}: {e}", name(path)))?;
    for s in &skipped {
        eprintln!("{}:{}: not run: {}", name(path), s.line, s.reason);
    }
    if examples.is_empty() {
        return Ok(0);
    }
    let needs: BTreeSet<&str> = examples
        .iter()
        .flat_map(|e| e.needs.iter().map(String::as_str))
        .collect();
    for tool in needs {
        if !support::tool_or_skip(tool) {
            support::skip(&format!("{}: {tool} is not installed", name(path)));
            return Ok(0);
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for tree in REPO_TREES {
        copy_tree(&root.join(tree), &dir.path().join(tree))
            .map_err(|e| format!("copying {tree}/: {e}"))?;
    }
    let sandbox = Sandbox::new();
    for ex in &examples {
        run_example(&sandbox, dir.path(), ex).map_err(|e| {
            format!(
                "{}:{}:\n{}\n--- script ---\n{}",
                name(path),
                ex.line,
                e,
                ex.script
            )
        })?;
    }
    Ok(examples.len())
}

/// The repository's directories each file's blocks find in their working
/// directory, as at the top of a checkout.
const REPO_TREES: &[&str] = &["deploy", "sysctl"];

/// Copies a directory tree (files keep their mode, so scripts stay
/// executable).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Where a file's blocks run: a network namespace of its own when one can
/// be made (root), and the process groups its blocks started, killed when
/// dropped (with the namespace).
struct Sandbox {
    /// The namespace, when there is one (deleted after the groups are
    /// killed).
    netns: Option<support::Netns>,
    /// Process groups of the blocks run so far.
    groups: std::sync::Mutex<Vec<i32>>,
}

impl Sandbox {
    fn new() -> Sandbox {
        static N: AtomicUsize = AtomicUsize::new(0);
        let mut netns = None;
        if support::privileged_skip_reason(&["ip"]).is_none() {
            netns = support::Netns::try_new(format!(
                "gedoc{}x{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
        }
        if netns.is_none() {
            eprintln!("doc examples run in the host's network namespace (not root)");
        }
        Sandbox {
            netns,
            groups: Default::default(),
        }
    }

    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => ns.exec("bash"),
            None => Command::new("bash"),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for &g in self.groups.lock().unwrap().iter() {
            // SAFETY: kill has no memory preconditions; the group is one
            // this test started.
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
    }
}

fn run_example(sandbox: &Sandbox, dir: &Path, ex: &Example) -> Result<(), String> {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_geoedge")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out_path = dir.join(".doctest-output");
    let out = File::create(&out_path).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = sandbox.command();
    cmd.args(["--noprofile", "--norc", "-e", "-o", "pipefail", "-c"])
        .arg(&ex.script)
        .current_dir(dir)
        .env("PATH", path)
        .env("HOME", dir)
        // A `geoedge demo` the sandbox kills leaves its files here.
        .env("TMPDIR", dir)
        .env("NO_COLOR", "1")
        .env("TZ", "UTC")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    for (k, _) in std::env::vars() {
        if k.starts_with("GEOEDGE_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().map_err(|e| format!("starting bash: {e}"))?;
    sandbox.groups.lock().unwrap().push(child.id() as i32);
    let deadline = Instant::now() + BLOCK_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            // SAFETY: as in Sandbox::drop.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            let printed = std::fs::read_to_string(&out_path).unwrap_or_default();
            return Err(format!(
                "still running after {BLOCK_TIMEOUT:?}; printed:\n{printed}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let printed = std::fs::read_to_string(&out_path).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out_path);
    if status.code() != Some(ex.exit) {
        return Err(format!(
            "exited with {status}, expected exit status {}; printed:\n{printed}",
            ex.exit
        ));
    }
    if let Some(expected) = &ex.output {
        if !markdown::matches(expected, &printed) {
            return Err(format!(
                "printed something else.\n--- expected ---\n{expected}--- printed ---\n{printed}"
            ));
        }
    }
    Ok(())
}

/// The `geoedge` subcommands, as word paths.
const COMMANDS: &[&[&str]] = &[
    &["route"],
    &["db", "init"],
    &["db", "check"],
    &["db", "migrate"],
    &["db", "publish"],
    &["db", "log"],
    &["db", "status"],
    &["db", "nats-user"],
    &["run"],
    &["wg", "genkey"],
    &["wg", "pubkey"],
    &["wg", "up"],
    &["demo"],
    &["probe"],
    &["check-host"],
    &["admin", ADDR, "bindings"],
    &["admin", ADDR, "clear-bindings"],
    &["admin", ADDR, "backends"],
    &["admin", ADDR, "revision"],
];

/// In [`COMMANDS`], a word that stands for any (the address `geoedge
/// admin` asks); its `--help` is asked with a sample address.
const ADDR: &str = "ADDR";

/// Whether `words` start with the command path `command`.
fn starts_with_command(words: &[&str], command: &[&str]) -> bool {
    words.len() >= command.len() && command.iter().zip(words).all(|(c, w)| *c == ADDR || c == w)
}

/// The `--flags` a `--help` text lists.
fn flags_in_help(words: &[&str]) -> BTreeSet<String> {
    let words: Vec<&str> = words
        .iter()
        .map(|w| if *w == ADDR { "127.0.0.1:9090" } else { w })
        .collect();
    let out = geoedge().args(&words).arg("--help").output().unwrap();
    assert!(out.status.success(), "geoedge {words:?} --help");
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(String::from)
        .collect()
}

/// The lines of a text's code blocks (continuation lines joined, comments
/// dropped), and its inline code spans.
fn code(text: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    for fence in markdown::fences(text) {
        let joined = fence.body.replace("\\\n", " ");
        for line in joined.lines() {
            let line = line.split(" #").next().unwrap_or("");
            if !line.trim_start().starts_with('#') {
                lines.push(line.to_owned());
            }
        }
    }
    let mut spans = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            spans.extend(line.split('`').skip(1).step_by(2).map(String::from));
        }
    }
    (lines, spans)
}

/// Each `geoedge SUBCOMMAND … --flag` in a line: the subcommand and flag.
fn invocations(line: &str) -> Vec<(Vec<String>, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if *w != "geoedge" {
            continue;
        }
        let Some(sub) = COMMANDS
            .iter()
            .filter(|c| starts_with_command(&words[i + 1..], c))
            .max_by_key(|c| c.len())
        else {
            continue;
        };
        for w in &words[i + 1 + sub.len()..] {
            if matches!(*w, "|" | "||" | "&&" | ";" | "&") || w.starts_with('>') {
                break;
            }
            if let Some(flag) = w.strip_prefix("--").filter(|f| !f.is_empty()) {
                let flag = flag.split('=').next().unwrap();
                out.push((
                    sub.iter().map(|s| s.to_string()).collect(),
                    format!("--{flag}"),
                ));
            }
        }
    }
    out
}

#[test]
fn geoedge_flags_in_the_docs_exist() {
    let helps: BTreeMap<Vec<String>, BTreeSet<String>> = COMMANDS
        .iter()
        .map(|c| (c.iter().map(|s| s.to_string()).collect(), flags_in_help(c)))
        .collect();
    let any: BTreeSet<&String> = helps.values().flatten().collect();
    let mut unknown = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let (lines, spans) = code(&text);
        for line in lines.iter().chain(&spans) {
            for (sub, flag) in invocations(line) {
                checked += 1;
                if !helps[&sub].contains(&flag) {
                    unknown.push(format!("{}: geoedge {} {flag}", name(&file), sub.join(" ")));
                }
            }
        }
        // A flag alone in backticks (`--region ID`) in prose or a table.
        for span in &spans {
            let first = span.split_whitespace().next().unwrap_or("");
            if let Some(flag) = first
                .strip_prefix("--")
                .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            {
                checked += 1;
                if !any.contains(&format!("--{flag}")) {
                    unknown.push(format!("{}: {first}", name(&file)));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} flags found: is the scan broken?"
    );
    assert!(
        unknown.is_empty(),
        "flags the binary does not know:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn invocations_are_found() {
    let got = invocations("sudo geoedge db check --x a.db | grep --y; geoedge run --wg-mtu=1400");
    assert_eq!(
        got,
        [
            (vec!["db".to_string(), "check".into()], "--x".to_string()),
            (vec!["run".to_string()], "--wg-mtu".to_string()),
        ]
    );
    // `geoedge admin` names the edge's address before its subcommand.
    assert_eq!(
        invocations("geoedge admin 127.0.0.1:9090 bindings --client 1.2.3.4"),
        [(
            vec!["admin".to_string(), ADDR.into(), "bindings".into()],
            "--client".to_string()
        )]
    );
}

/// The README's first block is what a newcomer types: the demo on the
/// embedded default and the whole test suite, as printed from the top of a
/// fresh checkout; and `geoedge` is installed before an example types it.
#[test]
fn the_readme_opens_with_two_commands_that_run_as_printed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("README.md")).unwrap();
    let fences = markdown::fences(&text);
    let commands = |body: &str| -> Vec<String> {
        body.lines()
            .map(|l| l.split(" #").next().unwrap_or("").trim().to_owned())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    };
    let first = fences.first().expect("the README has code blocks");
    assert_eq!(
        commands(&first.body),
        ["cargo run --release -- demo", ".ci/run"],
        "README.md:{}",
        first.line
    );
    // `.ci/run` runs as printed: it is executable.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join(".ci/run"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, ".ci/run is not executable: {mode:o}");
    // The first block that types `geoedge` comes after one that installs it.
    let install = fences
        .iter()
        .position(|f| {
            commands(&f.body)
                .iter()
                .any(|c| c.starts_with("cargo install") && c.contains("--path ."))
        })
        .expect("the README says how to install geoedge");
    let typed = fences
        .iter()
        .position(|f| commands(&f.body).iter().any(|c| c.starts_with("geoedge ")))
        .expect("the README has geoedge examples");
    assert!(
        install < typed,
        "README.md:{}: `geoedge` typed before README.md:{} installs it",
        fences[typed].line,
        fences[install].line
    );
}
