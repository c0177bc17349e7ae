//! `geoedge check-host`: compares the host's live kernel settings
//! (`/proc/sys`) and this process's open-file limit with the values geoedge
//! ships in `sysctl/90-geoedge.conf` and `sysctl/90-geoedge-nofile.conf`,
//! and lists each that falls short.
//!
//! Both files are compiled in (`include_str!`), so the recommendations the
//! command checks are the ones the package installs. Parsing and comparing
//! are pure functions of the file text and a map of live values; only
//! [`run`] reads `/proc/sys` and `getrlimit`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

/// The shipped sysctl file, as installed in `/usr/lib/sysctl.d/`.
pub const SYSCTL_CONF: &str = include_str!("../../sysctl/90-geoedge.conf");

/// The shipped limits file, as installed in `/etc/security/limits.d/`.
pub const LIMITS_CONF: &str = include_str!("../../sysctl/90-geoedge-nofile.conf");

/// The name the open-file limit is listed (and looked up) under.
pub const NOFILE: &str = "RLIMIT_NOFILE (soft)";

/// How a live value is held against the recommended one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Every number at least the recommended one (one or more numbers).
    AtLeast,
    /// At most the recommended number (a timeout: lower is better).
    AtMost,
    /// Exactly the recommended number (a mode switch).
    Exactly,
    /// Two numbers `low high`: at least as many ports as recommended.
    PortRange,
    /// A bitmask: every recommended bit set.
    BitsSet,
}

impl Rule {
    /// The rule for a sysctl key: lower-is-better, range, mode and bitmask
    /// keys are named here; every other key is [`Rule::AtLeast`].
    pub fn for_key(key: &str) -> Rule {
        match key {
            "net.ipv4.tcp_fin_timeout" => Rule::AtMost,
            "net.ipv4.ip_local_port_range" => Rule::PortRange,
            "net.ipv4.tcp_tw_reuse" => Rule::Exactly,
            "net.ipv4.tcp_fastopen" => Rule::BitsSet,
            _ => Rule::AtLeast,
        }
    }
}

/// One recommended value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    /// The sysctl key (`net.core.somaxconn`), or [`NOFILE`].
    pub key: String,
    /// The recommended numbers (several for ranges and buffer triples).
    pub value: Vec<u64>,
    /// How the live value is compared.
    pub rule: Rule,
}

impl Recommendation {
    /// What the live value must be, for the table.
    pub fn wanted(&self) -> String {
        let v = join(&self.value);
        match self.rule {
            Rule::AtLeast => format!(">= {v}"),
            Rule::AtMost => format!("<= {v}"),
            Rule::Exactly => format!("= {v}"),
            Rule::PortRange => match port_count(&self.value) {
                Some(n) => format!(">= {n} ports ({v})"),
                None => format!("range {v}"),
            },
            Rule::BitsSet => format!("bits {:#x} set", self.value.first().copied().unwrap_or(0)),
        }
    }

    /// Compares a live value (as `/proc/sys` prints it; `None` when the key
    /// does not exist here) with this recommendation.
    pub fn assess(&self, live: Option<&str>) -> Finding {
        let status = match live.map(parse_numbers) {
            None | Some(None) => Status::Unavailable,
            Some(Some(live)) => {
                if self.satisfied_by(&live).unwrap_or(false) {
                    Status::Ok
                } else if live.len() == self.value.len() {
                    Status::Short
                } else {
                    Status::Unavailable
                }
            }
        };
        Finding {
            key: self.key.clone(),
            live: live.map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")),
            wanted: self.wanted(),
            status,
        }
    }

    /// Whether `live` meets the recommendation; `None` when it has the
    /// wrong shape (another count of numbers).
    fn satisfied_by(&self, live: &[u64]) -> Option<bool> {
        if live.len() != self.value.len() || live.is_empty() {
            return None;
        }
        let (l, r) = (live[0], self.value[0]);
        Some(match self.rule {
            Rule::AtLeast => live.iter().zip(&self.value).all(|(l, r)| l >= r),
            Rule::AtMost => l <= r,
            Rule::Exactly => l == r,
            Rule::BitsSet => l & r == r,
            Rule::PortRange => port_count(live)? >= port_count(&self.value)?,
        })
    }
}

/// Ports in a `low high` range.
fn port_count(range: &[u64]) -> Option<u64> {
    match range {
        [low, high] if low <= high => Some(high - low + 1),
        _ => None,
    }
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

/// Whitespace-separated unsigned numbers; `unlimited` reads as `u64::MAX`.
fn parse_numbers(s: &str) -> Option<Vec<u64>> {
    s.split_whitespace()
        .map(|w| match w {
            "unlimited" | "infinity" => Some(u64::MAX),
            w => w.parse().ok(),
        })
        .collect()
}

/// How a live value compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Meets the recommendation.
    Ok,
    /// Falls short of it.
    Short,
    /// The key does not exist in this kernel or network namespace (or its
    /// value could not be read as numbers); never a failure.
    Unavailable,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Short => "SHORT",
            Status::Unavailable => "unavailable",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The key.
    pub key: String,
    /// The live value, whitespace normalised; `None` when unavailable.
    pub live: Option<String>,
    /// What it should be ([`Recommendation::wanted`]).
    pub wanted: String,
    /// The verdict.
    pub status: Status,
}

/// Parses a sysctl.d file: `key = value` lines, `#`/`;` comments, an
/// optional leading `-` (ignore errors when applying). Every value must be
/// numbers, in the shape its [`Rule`] needs.
pub fn parse_sysctl(text: &str) -> anyhow::Result<Vec<Recommendation>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("line {}: no '=' in {line:?}", n + 1))?;
        let key = key.trim().trim_start_matches('-').replace('/', ".");
        let value = parse_numbers(value)
            .filter(|v| !v.is_empty())
            .with_context(|| format!("line {}: {key}: value is not numbers", n + 1))?;
        let rule = Rule::for_key(&key);
        let shape_ok = match rule {
            Rule::PortRange => port_count(&value).is_some(),
            Rule::AtLeast => true,
            Rule::AtMost | Rule::Exactly | Rule::BitsSet => value.len() == 1,
        };
        if !shape_ok {
            bail!("line {}: {key}: value has the wrong shape", n + 1);
        }
        out.push(Recommendation { key, value, rule });
    }
    Ok(out)
}

/// The soft `nofile` limit of a limits.conf file (the highest one named
/// for `soft` or `-`).
pub fn parse_nofile(text: &str) -> anyhow::Result<u64> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").split_whitespace())
        .filter_map(|mut w| {
            let (_domain, kind, item, value) = (w.next()?, w.next()?, w.next()?, w.next()?);
            (item == "nofile" && matches!(kind, "soft" | "-")).then_some(value)
        })
        .map(|v| {
            parse_numbers(v)
                .and_then(|n| n.first().copied())
                .with_context(|| format!("nofile {v:?} is not a number"))
        })
        .try_fold(None, |max: Option<u64>, v| {
            v.map(|v| Some(max.map_or(v, |m| m.max(v))))
        })?
        .context("no soft nofile line")
}

/// Everything geoedge recommends: the sysctl file's keys, then the
/// open-file limit.
pub fn shipped() -> anyhow::Result<Vec<Recommendation>> {
    let mut recs = parse_sysctl(SYSCTL_CONF).context("the built-in 90-geoedge.conf")?;
    recs.push(Recommendation {
        key: NOFILE.into(),
        value: vec![parse_nofile(LIMITS_CONF).context("the built-in limits file")?],
        rule: Rule::AtLeast,
    });
    Ok(recs)
}

/// Compares every recommendation with the live values (keyed like the
/// recommendations; a missing key is unavailable).
pub fn check(recs: &[Recommendation], live: &BTreeMap<String, String>) -> Vec<Finding> {
    recs.iter()
        .map(|r| r.assess(live.get(&r.key).map(String::as_str)))
        .collect()
}

/// The report: one row per key, then a summary line.
pub fn render(findings: &[Finding]) -> String {
    let width = |f: fn(&Finding) -> usize, title: &str| {
        findings.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let kw = width(|f| f.key.len(), "key");
    let lw = width(|f| f.live.as_deref().unwrap_or("-").len(), "live");
    let ww = width(|f| f.wanted.len(), "recommended");
    let mut out = String::new();
    let mut row = |k: &str, l: &str, w: &str, s: &str| {
        let _ = writeln!(out, "{k:kw$}  {l:lw$}  {w:ww$}  {s}");
    };
    row("key", "live", "recommended", "status");
    for f in findings {
        let live = f.live.as_deref().unwrap_or("-");
        row(&f.key, live, &f.wanted, f.status.label());
    }
    let count = |s| findings.iter().filter(|f| f.status == s).count();
    let _ = writeln!(
        out,
        "{} short, {} ok, {} unavailable (recommended: sysctl/90-geoedge.conf and sysctl/90-geoedge-nofile.conf in the source tree, installed by the Debian package as /usr/lib/sysctl.d/90-geoedge.conf and /etc/security/limits.d/90-geoedge.conf)",
        count(Status::Short),
        count(Status::Ok),
        count(Status::Unavailable),
    );
    out
}

/// What to do about the short rows (empty when none is): the `sysctl -w`
/// commands that apply them until the next boot (keeping what the host has
/// beyond the recommendation), the open-file limit's setting, and how to
/// keep them (the files of the source tree, which the Debian package
/// installs).
pub fn advice(recs: &[Recommendation], findings: &[Finding]) -> String {
    let mut out = String::new();
    let short: Vec<(&Recommendation, &Finding)> = recs
        .iter()
        .zip(findings)
        .filter(|(_, f)| f.status == Status::Short)
        .collect();
    if short.is_empty() {
        return out;
    }
    let _ = writeln!(out, "to apply them now (as root, until the next boot):");
    for (r, f) in short {
        let live = f
            .live
            .as_deref()
            .and_then(parse_numbers)
            .unwrap_or_default();
        if r.key == NOFILE {
            let _ = writeln!(
                out,
                "  LimitNOFILE={v} in geoedge's systemd unit (deploy/systemd's units have it), or ulimit -n {v} in the shell that starts it",
                v = join(&r.value)
            );
            continue;
        }
        let value = match r.rule {
            Rule::BitsSet if live.len() == 1 => vec![live[0] | r.value[0]],
            Rule::AtLeast if live.len() == r.value.len() => {
                live.iter().zip(&r.value).map(|(l, w)| *l.max(w)).collect()
            }
            _ => r.value.clone(),
        };
        let value = join(&value);
        if value.contains(' ') {
            let _ = writeln!(out, "  sysctl -w {}=\"{value}\"", r.key);
        } else {
            let _ = writeln!(out, "  sysctl -w {}={value}", r.key);
        }
    }
    let _ = writeln!(
        out,
        "to keep them: copy sysctl/90-geoedge.conf to /etc/sysctl.d/ (then sysctl --system) and sysctl/90-geoedge-nofile.conf to /etc/security/limits.d/ (the Debian package installs both)"
    );
    out
}

/// Reads `/proc/sys/<key with dots as slashes>`; `None` when it does not
/// exist or cannot be read.
fn read_sysctl(key: &str) -> Option<String> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(path).ok()
}

/// This process's soft open-file limit, as `/proc/sys` would print it.
fn nofile_soft() -> Option<String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some(if lim.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        lim.rlim_cur.to_string()
    })
}

/// `geoedge check-host [--strict]`: prints the report; with `strict`,
/// exits 1 when any value falls short.
pub fn run(strict: bool) -> anyhow::Result<ExitCode> {
    let recs = shipped()?;
    let live: BTreeMap<String, String> = recs
        .iter()
        .filter_map(|r| {
            let v = if r.key == NOFILE {
                nofile_soft()
            } else {
                read_sysctl(&r.key)
            };
            v.map(|v| (r.key.clone(), v))
        })
        .collect();
    let findings = check(&recs, &live);
    print!("{}", render(&findings));
    print!("{}", advice(&recs, &findings));
    let short = findings.iter().any(|f| f.status == Status::Short);
    Ok(if strict && short {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &[u64]) -> Recommendation {
        Recommendation {
            key: key.into(),
            value: value.to_vec(),
            rule: Rule::for_key(key),
        }
    }

    fn status(key: &str, value: &[u64], live: &str) -> Status {
        rec(key, value).assess(Some(live)).status
    }

    #[test]
    fn the_shipped_files_parse_and_every_key_has_a_reason() {
        let recs = shipped().unwrap();
        assert!(recs.len() >= 14, "{recs:?}");
        let keys: Vec<&str> = recs.iter().map(|r| r.key.as_str()).collect();
        for key in [
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_fastopen",
            "net.core.netdev_max_backlog",
            "net.core.rmem_max",
            "net.core.wmem_max",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem",
            "fs.file-max",
            NOFILE,
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        // One comment block right above each key says why.
        let lines: Vec<&str> = SYSCTL_CONF.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if !l.trim().is_empty() && !l.starts_with('#') {
                assert!(i > 0 && lines[i - 1].starts_with("# "), "no comment on {l}");
            }
        }
        // The WireGuard socket's 4 MiB fits under the buffer caps.
        let get = |k: &str| recs.iter().find(|r| r.key == k).unwrap().value.clone();
        let wg = geoedge_wireguard::device::SOCKET_BUFFER as u64;
        assert!(get("net.core.rmem_max")[0] >= wg);
        assert!(get("net.core.wmem_max")[0] >= wg);
        // The limit cannot exceed what fs.nr_open allows.
        assert!(get(NOFILE)[0] <= get("fs.nr_open")[0]);
    }

    #[test]
    fn numbers_compare_in_the_direction_of_their_key() {
        assert_eq!(status("net.core.somaxconn", &[4096], "4096"), Status::Ok);
        assert_eq!(status("net.core.somaxconn", &[4096], "65535"), Status::Ok);
        assert_eq!(status("net.core.somaxconn", &[4096], "128"), Status::Short);
        // Lower is better for a timeout.
        let fin = "net.ipv4.tcp_fin_timeout";
        assert_eq!(status(fin, &[15], "10"), Status::Ok);
        assert_eq!(status(fin, &[15], "60"), Status::Short);
        // Triples compare element by element.
        let rmem = "net.ipv4.tcp_rmem";
        let want = [4096, 131072, 16777216];
        assert_eq!(status(rmem, &want, "4096\t131072\t33554432"), Status::Ok);
        assert_eq!(status(rmem, &want, "4096 131072 6291456"), Status::Short);
        assert_eq!(status(rmem, &want, "4096 87380 33554432"), Status::Short);
        // "unlimited" is above anything.
        assert_eq!(status(NOFILE, &[1048576], "unlimited"), Status::Ok);
    }

    #[test]
    fn port_ranges_compare_by_their_width() {
        let key = "net.ipv4.ip_local_port_range";
        let want = [10000, 65535];
        assert_eq!(status(key, &want, "10000\t65535"), Status::Ok);
        // Wider, or as wide elsewhere, is fine.
        assert_eq!(status(key, &want, "1024 65535"), Status::Ok);
        assert_eq!(status(key, &want, "1024 56559"), Status::Ok);
        assert_eq!(status(key, &want, "32768 60999"), Status::Short);
        assert_eq!(
            rec(key, &want).wanted(),
            ">= 55536 ports (10000 65535)".to_string()
        );
    }

    #[test]
    fn modes_and_bitmasks() {
        let tw = "net.ipv4.tcp_tw_reuse";
        assert_eq!(status(tw, &[1], "1"), Status::Ok);
        assert_eq!(status(tw, &[1], "2"), Status::Short);
        assert_eq!(status(tw, &[1], "0"), Status::Short);
        let tfo = "net.ipv4.tcp_fastopen";
        assert_eq!(status(tfo, &[1], "1"), Status::Ok);
        assert_eq!(status(tfo, &[1], "3"), Status::Ok);
        assert_eq!(status(tfo, &[1], "1027"), Status::Ok);
        assert_eq!(status(tfo, &[1], "2"), Status::Short);
        assert_eq!(status(tfo, &[3], "1"), Status::Short);
    }

    #[test]
    fn missing_or_odd_values_are_unavailable_not_failures() {
        let r = rec("net.core.netdev_max_backlog", &[16384]);
        let f = r.assess(None);
        assert_eq!((f.status, f.live), (Status::Unavailable, None));
        assert_eq!(r.assess(Some("")).status, Status::Unavailable);
        assert_eq!(r.assess(Some("lots")).status, Status::Unavailable);
        assert_eq!(r.assess(Some("1 2")).status, Status::Unavailable);
    }

    #[test]
    fn check_and_render_a_whole_host() {
        let recs = shipped().unwrap();
        // A host with every recommended value except a low somaxconn and
        // no netdev_max_backlog (as in a network namespace).
        let mut live: BTreeMap<String, String> = recs
            .iter()
            .map(|r| (r.key.clone(), join(&r.value)))
            .collect();
        live.insert("net.core.somaxconn".into(), "128".into());
        live.remove("net.core.netdev_max_backlog");
        let findings = check(&recs, &live);
        let short: Vec<&str> = findings
            .iter()
            .filter(|f| f.status == Status::Short)
            .map(|f| f.key.as_str())
            .collect();
        assert_eq!(short, ["net.core.somaxconn"]);
        let text = render(&findings);
        let row = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{key} ")))
                .unwrap_or_else(|| panic!("no row for {key} in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            row("net.core.somaxconn"),
            "net.core.somaxconn 128 >= 4096 SHORT"
        );
        assert_eq!(
            row("net.core.netdev_max_backlog"),
            "net.core.netdev_max_backlog - >= 16384 unavailable"
        );
        assert_eq!(
            row("net.ipv4.tcp_fin_timeout"),
            "net.ipv4.tcp_fin_timeout 15 <= 15 ok"
        );
        let advice = advice(&recs, &findings);
        assert_eq!(
            advice.lines().collect::<Vec<_>>()[..2],
            [
                "to apply them now (as root, until the next boot):",
                "  sysctl -w net.core.somaxconn=4096"
            ],
            "{advice}"
        );
        assert!(advice.contains("sysctl/90-geoedge.conf to /etc/sysctl.d/"));
        // A short buffer triple keeps what the host has beyond the
        // recommendation; a bitmask gains the missing bits.
        let mut live = BTreeMap::new();
        live.insert(
            "net.ipv4.tcp_wmem".to_owned(),
            "8192 16384 4194304".to_owned(),
        );
        live.insert("net.ipv4.tcp_fastopen".to_owned(), "2".to_owned());
        let findings = check(&recs, &live);
        let advice = super::advice(&recs, &findings);
        assert!(
            advice.contains("  sysctl -w net.ipv4.tcp_wmem=\"8192 16384 16777216\"\n"),
            "{advice}"
        );
        assert!(
            advice.contains("  sysctl -w net.ipv4.tcp_fastopen=3\n"),
            "{advice}"
        );
        assert!(super::advice(&recs, &[]).is_empty());
        assert!(text.ends_with(&format!(
            "1 short, {} ok, 1 unavailable (recommended: sysctl/90-geoedge.conf and sysctl/90-geoedge-nofile.conf in the source tree, installed by the Debian package as /usr/lib/sysctl.d/90-geoedge.conf and /etc/security/limits.d/90-geoedge.conf)\n",
            recs.len() - 2
        )));
    }

    #[test]
    fn sysctl_and_limits_syntax() {
        let recs = parse_sysctl("; c\n# c\n-net/core/somaxconn=512\n\n").unwrap();
        assert_eq!(recs, [rec("net.core.somaxconn", &[512])]);
        assert!(parse_sysctl("net.core.somaxconn 512").is_err());
        assert!(parse_sysctl("net.core.somaxconn = many").is_err());
        assert!(parse_sysctl("net.ipv4.ip_local_port_range = 5 1").is_err());
        assert!(parse_sysctl("net.ipv4.tcp_fin_timeout = 1 2").is_err());
        let limits = "# x\n@ops hard nofile 9\n* soft nofile 10 # y\ngeoedge - nofile 20\n";
        assert_eq!(parse_nofile(limits).unwrap(), 20);
        assert!(parse_nofile("geoedge hard nofile 9\n").is_err());
        assert!(parse_nofile("geoedge soft nofile x\n").is_err());
    }
}
