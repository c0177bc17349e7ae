//! `geoedge db publish`, `db log`, `db status` and `db nats-user`: the
//! operator's side of the fleet's routing table on NATS JetStream
//! ([`crate::control::fleet`]).

use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use geoedge_routing::raw_diff;

use crate::control::config::defaults::{FLEET_BUCKET, FLEET_SILENT_AFTER};
use crate::control::config::{FleetSettings, Settings};
use crate::control::fleet::creds::{self, Role};
use crate::control::fleet::file;
use crate::control::fleet::revision::{object_name, Revision, RevisionInfo};
use crate::control::fleet::status;
use crate::control::fleet::store::{self, NothingPublished, Published, Store};

/// Exit status of a publish that lost the compare-and-swap.
pub const EXIT_CAS_LOST: u8 = 3;

/// What `geoedge db publish` was asked.
#[derive(Debug, Clone)]
pub struct PublishArgs<'a> {
    /// The master routing.db (`None` with `--revision`).
    pub master: Option<&'a Path>,
    /// `--message`.
    pub message: &'a str,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--revision N`: make revision N's file current again.
    pub restore: Option<u64>,
    /// `--expect-revision N`: publish only if N is still current.
    pub expect: Option<u64>,
}

fn fleet(settings: &Settings) -> anyhow::Result<&FleetSettings> {
    settings.fleet.as_ref().context(
        "no NATS server: give --nats URL (or GEOEDGE_NATS, or nats = [...] in the config file)",
    )
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Who publishes: the user name from the environment.
fn author() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

async fn open(settings: &Settings, create: bool) -> anyhow::Result<Store> {
    let fleet = fleet(settings)?;
    let (client, errors) = store::connect(fleet, "geoedge db", None).await?;
    Store::open(&client, errors, create).await
}

/// The fleet's store, or `None` when nothing has been published yet
/// (the buckets are made by the first publish, not by reading).
async fn open_existing(settings: &Settings) -> anyhow::Result<Option<Store>> {
    match open(settings, false).await {
        Ok(store) => Ok(Some(store)),
        Err(e) if e.downcast_ref::<NothingPublished>().is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `geoedge db publish`.
pub fn publish(settings: &Settings, args: PublishArgs<'_>) -> anyhow::Result<ExitCode> {
    fleet(settings)?;
    // Checked before anything reaches NATS: an invalid table publishes
    // nothing.
    let prepared = match args.master {
        Some(master) => match file::prepare(master) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("{}: {e}", master.display());
                eprintln!("nothing published");
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    runtime()?.block_on(async {
        // A dry run reads only: before the first publish there is no
        // bucket, and the diff is against an empty table.
        let store = if args.dry_run {
            open_existing(settings).await?
        } else {
            Some(open(settings, true).await?)
        };
        let base = match &store {
            Some(store) => store.current().await?,
            None => None,
        };
        let base_revision = base.as_ref().map(|(i, _)| i.revision);
        if let Some(expect) = args.expect {
            if base_revision != Some(Revision(expect)) {
                return lost(base.map(|(i, _)| i), Some(Revision(expect)));
            }
        }
        let next = base_revision.unwrap_or_default().next();
        let info = match (&prepared, args.restore) {
            (Some(p), _) => RevisionInfo {
                revision: next,
                sha256: p.sha256.clone(),
                size: p.bytes.len() as u64,
                object: object_name(&p.sha256),
                author: author(),
                host: host(),
                time: now(),
                message: args.message.to_owned(),
                rows: p.rows,
                restores: None,
            },
            (None, Some(n)) => {
                let old = match &store {
                    Some(store) => store.revision(Revision(n)).await?,
                    None => None,
                }
                .with_context(|| {
                    format!("no revision {n} in the log (geoedge db log lists them)")
                })?;
                RevisionInfo {
                    revision: next,
                    author: author(),
                    host: host(),
                    time: now(),
                    message: if args.message.is_empty() {
                        format!("rollback to revision {n}")
                    } else {
                        args.message.to_owned()
                    },
                    restores: Some(old.revision),
                    ..old
                }
            }
            (None, None) => bail!("give MASTER or --revision N"),
        };
        if args.dry_run {
            return dry_run(
                store.as_ref(),
                base.as_ref().map(|(i, _)| i),
                &info,
                prepared.as_ref(),
            )
            .await;
        }
        let store = store.context("the fleet's store was opened to publish")?;
        if let Some((current, _)) = &base {
            if current.sha256 == info.sha256 {
                println!(
                    "unchanged: {} has this content already; nothing published",
                    current.describe()
                );
                println!("{}", current.revision);
                return Ok(ExitCode::SUCCESS);
            }
        }
        let stored = match &prepared {
            Some(p) => store.put_file(&info.object, &p.bytes).await?,
            None => {
                // The object is there (it is an earlier revision's); make
                // sure it is intact before making it current.
                store
                    .fetch(&info)
                    .await
                    .context("checking the file of the revision restored")?;
                false
            }
        };
        match store
            .make_current(&info, base.as_ref().map(|(_, seq)| *seq))
            .await?
        {
            Published::Current => {
                println!(
                    "published {} sha256 {} ({})",
                    info.describe(),
                    info.sha256,
                    info.rows
                );
                println!("{}", info.revision);
                Ok(ExitCode::SUCCESS)
            }
            Published::Lost(winner) => {
                if stored && winner.as_ref().map(|w| &w.sha256) != Some(&info.sha256) {
                    store.delete_file(&info.object).await;
                }
                lost(winner, base_revision)
            }
        }
    })
}

fn lost(winner: Option<RevisionInfo>, based_on: Option<Revision>) -> anyhow::Result<ExitCode> {
    let based = based_on.map_or("no revision".to_owned(), |r| format!("revision {r}"));
    match winner {
        Some(w) => eprintln!(
            "refused: {} was published since this publish started from {based}; nothing changed (look at it with geoedge db publish --dry-run, then publish again)",
            w.describe()
        ),
        None => eprintln!("refused: the current revision is no longer {based}; nothing changed"),
    }
    Ok(ExitCode::from(EXIT_CAS_LOST))
}

async fn dry_run(
    store: Option<&Store>,
    current: Option<&RevisionInfo>,
    info: &RevisionInfo,
    prepared: Option<&file::Prepared>,
) -> anyhow::Result<ExitCode> {
    let old = match (current, store) {
        (Some(c), Some(store)) => {
            let bytes = store.fetch(c).await?;
            Some(tokio::task::spawn_blocking(move || file::check_bytes(&bytes)).await??)
        }
        _ => None,
    };
    let new = match (prepared, store) {
        (Some(p), _) => p.raw.clone(),
        (None, None) => bail!("nothing has been published yet"),
        (None, Some(store)) => {
            let bytes = store.fetch(info).await?;
            tokio::task::spawn_blocking(move || file::check_bytes(&bytes)).await??
        }
    };
    let empty = geoedge_routing::RawTable::default();
    let diff = raw_diff::diff(old.as_ref().unwrap_or(&empty), &new);
    match current {
        Some(c) => println!("against the current {}:", c.describe()),
        None => println!("nothing published yet; against an empty table:"),
    }
    if current.map(|c| &c.sha256) == Some(&info.sha256) {
        println!("  no change (the same file)");
    } else {
        print!("{}", diff.render());
    }
    println!(
        "dry run: nothing published (it would be revision {})",
        info.revision
    );
    Ok(ExitCode::SUCCESS)
}

/// `geoedge db log`.
pub fn log(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let Some(store) = open_existing(settings).await? else {
            if json {
                println!("[]");
            } else {
                eprintln!("nothing published yet");
            }
            return Ok(ExitCode::SUCCESS);
        };
        let current = store.current().await?.map(|(i, _)| i.revision);
        let log = store.log().await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&log)?);
            return Ok(ExitCode::SUCCESS);
        }
        for r in log.iter().rev() {
            let when = humantime::format_rfc3339_seconds(
                UNIX_EPOCH + std::time::Duration::from_secs(r.time),
            );
            let mark = if Some(r.revision) == current {
                "*"
            } else {
                " "
            };
            let restores = r
                .restores
                .map_or(String::new(), |n| format!(" (restores {n})"));
            println!(
                "{mark}{:>6} {when} {}@{} {} {}b/{}r/{}c/{}p {:?}{restores}",
                r.revision,
                r.author,
                r.host,
                r.sha256.short(),
                r.rows.backends,
                r.rows.regions,
                r.rows.countries,
                r.rows.wg_peers,
                r.message
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `geoedge db status`.
pub fn status(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (current, statuses) = match open_existing(settings).await? {
            Some(store) => (
                store.current().await?.map(|(i, _)| i.revision),
                store.statuses().await?,
            ),
            None => (None, Vec::new()),
        };
        let rows = status::rows(current, &statuses, now(), FLEET_SILENT_AFTER);
        if json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!("{}", status::render(&rows));
            match current {
                Some(c) => eprintln!("current revision: {c}"),
                None => eprintln!("nothing published yet"),
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `geoedge db nats-user`: a POP's user (its region defaults to its
/// name), or the publisher's.
pub fn nats_user(
    pop: Option<&str>,
    region: Option<&str>,
    seed_file: &Path,
) -> anyhow::Result<ExitCode> {
    let role = match pop {
        Some(p) => Role::Pop {
            name: p.to_owned(),
            region: region.unwrap_or(p).to_owned(),
        },
        None => Role::Publisher,
    };
    print!("{}", creds::new_user(&role, FLEET_BUCKET, seed_file)?);
    Ok(ExitCode::SUCCESS)
}
