//! The command line: subcommands and their arguments (clap), dispatched to
//! the command modules.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use geoedge_wireguard::PrivateKey;

use crate::control::config::{defaults, Layer, Settings};

/// geoedge: a geo-aware TCP edge proxy.
#[derive(Debug, Parser)]
#[command(name = "geoedge", version, about)]
pub struct Cli {
    /// TOML settings file; every key is also a flag and a GEOEDGE_* variable.
    #[arg(long, env = "GEOEDGE_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Settings shared by the commands.
    #[command(flatten)]
    pub settings: Layer,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print, as JSON, the decision a fresh client from IP would get, with every candidate scored.
    Route {
        /// The client address.
        ip: IpAddr,
        /// Ask the running edge whose metrics listener is ADDR instead of reading the files: the same JSON from its live router, with each candidate's live `active` and `health`, and the client's `binding` (docs/admin.md).
        #[arg(long, value_name = "ADDR")]
        live: Option<SocketAddr>,
    },
    /// Ask a running edge through the admin endpoints of its metrics listener ADDR (docs/admin.md).
    Admin {
        /// The edge's metrics listener (its --metrics-listen), e.g. 127.0.0.1:9090.
        addr: SocketAddr,
        /// What to ask.
        #[command(subcommand)]
        ask: AdminCommand,
    },
    /// Create and check routing.db files.
    #[command(subcommand)]
    Db(DbCommand),
    /// Run the edge proxy.
    Run {
        /// Start beside another geoedge serving the same addresses and take its sticky bindings over (a zero-downtime restart: stop the other once this one is ready); without it, a start on an address another geoedge serves exits 2.
        #[arg(long, env = "GEOEDGE_TAKEOVER", value_parser = clap::builder::BoolishValueParser::new())]
        takeover: bool,
    },
    /// WireGuard keys.
    #[command(subcommand)]
    Wg(WgCommand),
    /// Run the whole edge offline on an embedded default: three in-process backends, a generated routing.db, the sample mmdb.
    Demo {
        /// Start beside another geoedge serving the same addresses and take its sticky bindings over; without it, a start on an address another geoedge serves exits 2.
        #[arg(long, env = "GEOEDGE_TAKEOVER", value_parser = clap::builder::BoolishValueParser::new())]
        takeover: bool,
    },
    /// Connect to ADDR claiming client address IP in a PROXY v1 header, and print the backend's first line.
    Probe {
        /// The edge's address.
        addr: SocketAddr,
        /// The client address to claim.
        #[arg(long = "as", value_name = "IP")]
        claim: IpAddr,
        /// Text to send after the header.
        #[arg(long)]
        send: Option<String>,
    },
    /// List the kernel settings and open-file limit below geoedge's recommendation (sysctl/90-geoedge.conf).
    CheckHost {
        /// Exit 1 when any value falls short.
        #[arg(long)]
        strict: bool,
    },
}

/// `geoedge admin ADDR …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print the number of bindings and the table's capacity; with --client, that client's binding (exit 1 when it has none).
    Bindings {
        /// The client address (its binding for --app, default: the edge's first listener's app).
        #[arg(long, value_name = "IP")]
        client: Option<IpAddr>,
        /// Print the endpoint's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Clear one client's binding (--client) or every binding: its next connection is decided afresh. The edge must run with --admin-write on (exit 1 otherwise).
    ClearBindings {
        /// The client address (its binding for --app, default: the edge's first listener's app); without it, every binding.
        #[arg(long, value_name = "IP")]
        client: Option<IpAddr>,
        /// Print the endpoint's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print every backend of the table in force: app, region, address, health state, live connections, limits, weight, whether it takes new clients.
    Backends {
        /// Print the endpoint's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the routing.db in force: its generation, schema version, last reload and its result; in a fleet, the installed revision.
    Revision {
        /// Print the endpoint's JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `geoedge db …`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create a routing.db with the schema and a sample region and country map and backends.
    Init {
        /// The file to create (must not exist).
        path: PathBuf,
        /// Create only the schema, with no sample rows.
        #[arg(long)]
        empty: bool,
    },
    /// Validate a routing.db; exit non-zero and list every row-level error when invalid.
    Check {
        /// The file to check.
        path: PathBuf,
    },
    /// Upgrade a routing.db in place to the current schema version: a backup PATH.bak-vN first (never overwritten), then the missing optional tables (apps, sni_routes) and user_version in one transaction; then validate it. A no-op on a current file.
    Migrate {
        /// The file to upgrade.
        path: PathBuf,
    },
    /// Publish a master routing.db to the fleet (NATS): checked, stored as a new revision, made current by compare-and-swap; prints the revision on its last line (exit 3: someone published in between; 1: invalid table).
    Publish {
        /// The master routing.db (a consistent copy is published).
        master: Option<PathBuf>,
        /// Why: shown by `geoedge db log`.
        #[arg(long, short, default_value = "")]
        message: String,
        /// Print the rows added, removed and changed against the current revision; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Make revision N's file current again (a new revision; history stays linear).
        #[arg(long, value_name = "N", conflicts_with = "master")]
        revision: Option<u64>,
        /// Publish only if revision N is still the current one (as a dry run showed it).
        #[arg(long, value_name = "N")]
        expect_revision: Option<u64>,
    },
    /// List the fleet's published revisions, newest first (* marks the current one).
    Log {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print each POP's installed revision and the age of its last report, one line per POP (POP REVISION AGE STATE), marking POPs behind, diverged or silent.
    Status {
        /// Print a JSON list of objects (pop, revision, age_seconds, state, ...).
        #[arg(long)]
        json: bool,
    },
    /// Make a NATS user for the fleet: write a new nkey seed to SEED_FILE (mode 600) and print its entry for nats-server.conf with its permissions.
    NatsUser {
        /// The file to create for the seed (never overwritten).
        seed_file: PathBuf,
        /// A POP's user (reads the routing buckets, writes only its own status); without it, the publisher's.
        #[arg(long = "for-pop", value_name = "NAME")]
        for_pop: Option<String>,
        /// The POP's region (its `--region`; default: NAME): its user answers lease requests for that region's backends.
        #[arg(long = "pop-region", value_name = "REGION", requires = "for_pop")]
        pop_region: Option<String>,
    },
}

impl Cli {
    /// The command line, each setting's help ending with its default from
    /// the one place defaults are written ([`defaults::shown`]), and each
    /// command's `--help` offering only the settings it reads ([`reads`]).
    /// Settings stay global: one given where it does nothing is accepted
    /// (a config file or `GEOEDGE_*` variables serve every command).
    pub fn command_with_defaults() -> clap::Command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        for (id, default) in defaults::shown() {
            cmd = cmd.mut_arg(id, |arg| with_default(arg, &default));
        }
        let settings = setting_ids();
        // Every command gets its own copy of each global setting, hidden
        // where the command does not read it (the build copies a global
        // only into a command that has none of that id yet).
        let globals: Vec<clap::Arg> = cmd
            .get_arguments()
            .filter(|a| a.is_global_set() && settings.iter().any(|s| s == a.get_id().as_str()))
            .cloned()
            .collect();
        fn copy(cmd: clap::Command, path: &str, globals: &[clap::Arg]) -> clap::Command {
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|s| s.get_name().to_owned())
                .collect();
            let mut cmd = cmd;
            for name in names {
                let sub_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path} {name}")
                };
                cmd = cmd.mut_subcommand(name, |mut sub| {
                    for arg in globals {
                        let read = reads(&sub_path, arg.get_id().as_str());
                        let mut arg = arg.clone().hide(!read);
                        if sub_path == "demo" {
                            if let Some((_, d)) = defaults::demo_shown()
                                .into_iter()
                                .find(|(id, _)| arg.get_id() == *id)
                            {
                                arg = with_default(arg, &d);
                            }
                        }
                        sub = sub.arg(arg);
                    }
                    copy(sub, &sub_path, globals)
                });
            }
            cmd
        }
        let mut cmd = copy(cmd, "", &globals);
        for arg in &globals {
            let id = arg.get_id().to_string();
            let read = reads("", &id);
            cmd = cmd.mut_arg(id, |a| a.hide(!read));
        }
        cmd
    }

    /// Parses the process's arguments; exits with clap's message (and
    /// status 2) when they are wrong, and after `--help` or `--version`.
    pub fn parse_args() -> Cli {
        let matches = Self::command_with_defaults().get_matches();
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The log level when `RUST_LOG` is unset: `info` for the long-running
    /// commands, `warn` for one-shot ones.
    pub fn default_log_level(&self) -> &'static str {
        if self.long_running() {
            "info"
        } else {
            "warn"
        }
    }

    /// Whether the command serves until stopped (rather than printing an
    /// answer and exiting).
    pub fn long_running(&self) -> bool {
        matches!(
            self.command,
            Command::Run { .. } | Command::Demo { .. } | Command::Wg(WgCommand::Up)
        )
    }
}

/// A setting's help ending with `[default: DEFAULT].` (in place of the one
/// it had).
fn with_default(arg: clap::Arg, default: &str) -> clap::Arg {
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let help = help.split(" [default: ").next().unwrap_or_default();
    let help = help.trim_end_matches('.');
    arg.help(format!("{help} [default: {default}]."))
}

/// `geoedge wg …`
#[derive(Debug, Subcommand)]
pub enum WgCommand {
    /// Print a new private key (base64, as `wg genkey` does).
    Genkey,
    /// Read a private key on standard input and print its public key (as `wg pubkey` does).
    Pubkey,
    /// Run only the WireGuard endpoint (a backend POP host): the wg_* settings, peers from routing.db if given.
    Up,
}

/// The ids of the settings (every key of [`Layer`], and `config`).
fn setting_ids() -> Vec<String> {
    let layer = <Layer as clap::Args>::augment_args(clap::Command::new("settings"));
    let mut ids: Vec<String> = layer
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    ids.push("config".into());
    ids
}

/// Whether the command at `path` (`run`, `wg up`; empty for the top level)
/// reads setting `id`: its `--help` offers only those.
fn reads(path: &str, id: &str) -> bool {
    let wg = id.starts_with("wg_");
    match path {
        // The decision of `route` is for one app; `run` serves each
        // listener's.
        "run" => id != "app",
        // The demo makes its own routing.db and has no backhaul.
        "demo" => !matches!(id, "app" | "routing_db") && !wg,
        "route" => {
            matches!(
                id,
                "config"
                    | "routing_db"
                    | "geoip"
                    | "region"
                    | "app"
                    | "log_format"
                    | "nats"
                    | "nats_creds"
                    | "pop"
            ) || id.starts_with("binding_")
        }
        "wg up" => wg || matches!(id, "config" | "routing_db" | "log_format"),
        // The admin commands ask a running edge: only the app a binding
        // is looked up for.
        "admin bindings" | "admin clear-bindings" => matches!(id, "app" | "log_format"),
        "admin backends" | "admin revision" => id == "log_format",
        "db publish" | "db log" | "db status" => {
            matches!(id, "config" | "nats" | "nats_creds" | "log_format")
        }
        // The top level lists the commands; each lists its settings.
        "" => id == "config",
        _ => false,
    }
}

/// `GEOEDGE_*` variables that are not settings: where the test suite and
/// the benchmarks find the public City databases. Names starting with
/// `GEOEDGE_TEST_` are the test suite's own too.
const NOT_SETTINGS: &[&str] = &["GEOEDGE_GEODATA_DIR"];

/// The `GEOEDGE_*` names among `names` that are no setting's variable,
/// each with the closest one that is (when one is close), as an unknown
/// key of the TOML file is reported.
pub fn unknown_variables<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    fn collect(cmd: &clap::Command, into: &mut std::collections::BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                into.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            collect(sub, into);
        }
    }
    let mut known = std::collections::BTreeSet::new();
    collect(&<Cli as clap::CommandFactory>::command(), &mut known);
    let mut unknown = Vec::new();
    for name in names {
        let name = name.as_ref().to_string_lossy();
        if !name.starts_with("GEOEDGE_")
            || name.starts_with("GEOEDGE_TEST_")
            || known.contains(name.as_ref())
            || NOT_SETTINGS.contains(&name.as_ref())
        {
            continue;
        }
        let closest = known
            .iter()
            .map(|k| (strsim::levenshtein(k, &name), k))
            .min()
            .filter(|(d, _)| *d <= 3);
        unknown.push(match closest {
            Some((_, k)) => format!("{name} (did you mean {k}?)"),
            None => name.into_owned(),
        });
    }
    unknown
}

/// Refuses to start with a `GEOEDGE_*` variable that names no setting (a
/// misspelled one would otherwise be ignored without a word).
fn check_environment() -> anyhow::Result<()> {
    let unknown = unknown_variables(std::env::vars_os().map(|(k, _)| k));
    if unknown.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "unknown setting in the environment: {} (every setting's variable is listed by --help)",
        unknown.join(", ")
    )
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    check_environment()?;
    let settings = || Settings::resolve(cli.settings.clone(), cli.config.as_deref());
    match &cli.command {
        Command::Route {
            ip,
            live: Some(addr),
        } => crate::commands::admin::explain(*addr, *ip, cli.settings.app.as_deref()),
        Command::Route { ip, live: None } => crate::commands::route::run(&settings()?, *ip),
        Command::Admin { addr, ask } => {
            use crate::commands::admin::Ask;
            let (ask, json) = match ask {
                AdminCommand::Bindings { client, json } => (Ask::Bindings(*client), json),
                AdminCommand::ClearBindings { client, json } => (Ask::ClearBindings(*client), json),
                AdminCommand::Backends { json } => (Ask::Backends, json),
                AdminCommand::Revision { json } => (Ask::Revision, json),
            };
            crate::commands::admin::run(*addr, &ask, cli.settings.app.as_deref(), *json)
        }
        Command::Db(DbCommand::Init { path, empty }) => crate::commands::db::init(path, !*empty),
        Command::Db(DbCommand::Check { path }) => crate::commands::db::check(path),
        Command::Db(DbCommand::Migrate { path }) => crate::commands::db::migrate(path),
        Command::Db(DbCommand::Publish {
            master,
            message,
            dry_run,
            revision,
            expect_revision,
        }) => crate::commands::fleet::publish(
            &settings()?,
            crate::commands::fleet::PublishArgs {
                master: master.as_deref(),
                message,
                dry_run: *dry_run,
                restore: *revision,
                expect: *expect_revision,
            },
        ),
        Command::Db(DbCommand::Log { json }) => crate::commands::fleet::log(&settings()?, *json),
        Command::Db(DbCommand::Status { json }) => {
            crate::commands::fleet::status(&settings()?, *json)
        }
        Command::Db(DbCommand::NatsUser {
            seed_file,
            for_pop,
            pop_region,
        }) => {
            crate::commands::fleet::nats_user(for_pop.as_deref(), pop_region.as_deref(), seed_file)
        }
        Command::Run { takeover } => {
            let (layer, config) = (cli.settings.clone(), cli.config.clone());
            let resolve: crate::control::lifecycle::Resolve =
                std::sync::Arc::new(move || Settings::resolve(layer.clone(), config.as_deref()));
            crate::commands::run::run(&resolve()?, resolve, *takeover)
        }
        Command::Wg(WgCommand::Up) => crate::commands::wg::up(&settings()?),
        Command::Wg(WgCommand::Genkey) => {
            println!("{}", PrivateKey::generate()?.to_base64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Wg(WgCommand::Pubkey) => {
            let mut text = String::new();
            std::io::stdin().read_line(&mut text)?;
            let key: PrivateKey = text
                .trim()
                .parse()
                .context("reading a private key on standard input")?;
            println!("{}", key.public_key());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { takeover } => {
            // The demo listens on loopback, trusts PROXY headers from it, and
            // tells its backends who the client is.
            // Its `--help` shows these (defaults::demo_shown).
            let mut layer = cli.settings.clone();
            layer
                .listen
                .get_or_insert_with(|| vec![defaults::DEMO_LISTEN.into()]);
            layer.proxy_protocol_from.get_or_insert_with(|| {
                defaults::DEMO_PROXY_PROTOCOL_FROM
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            });
            layer
                .send_proxy_protocol
                .get_or_insert_with(|| defaults::DEMO_SEND_PROXY_PROTOCOL.into());
            crate::commands::demo::run(&Settings::resolve(layer, cli.config.as_deref())?, *takeover)
        }
        Command::Probe { addr, claim, send } => {
            crate::commands::demo::probe(*addr, *claim, send.as_deref())
        }
        Command::CheckHost { strict } => crate::commands::check_host::run(*strict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelled_variable_is_named_with_the_one_meant() {
        let unknown = unknown_variables([
            "GEOEDGE_IDLE_TIMOUT",
            "GEOEDGE_IDLE_TIMEOUT",
            "GEOEDGE_CONFIG",
            "GEOEDGE_WG_PRIVATE_KEY_FILE",
            "GEOEDGE_GEODATA_DIR",
            "GEOEDGE_TEST_ANYTHING",
            "PATH",
            "GEOEDGE_NOTHING_LIKE_IT",
        ]);
        assert_eq!(
            unknown,
            [
                "GEOEDGE_IDLE_TIMOUT (did you mean GEOEDGE_IDLE_TIMEOUT?)",
                "GEOEDGE_NOTHING_LIKE_IT"
            ]
        );
    }

    #[test]
    fn every_setting_with_a_default_shows_it_once_in_its_help() {
        let cmd = Cli::command_with_defaults();
        for (id, default) in defaults::shown() {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("no setting {id}"));
            let help = arg.get_help().unwrap().to_string();
            assert!(
                help.ends_with(&format!("[default: {default}].")),
                "{id}: {help}"
            );
            assert_eq!(help.matches("[default").count(), 1, "{id}: {help}");
        }
    }

    #[test]
    fn a_flag_and_the_file_are_held_to_the_same_bounds_with_the_same_message() {
        for (key, bad) in [
            ("connect_attempts", "20"),
            ("binding_ipv4_prefix", "40"),
            ("binding_ipv6_prefix", "200"),
            ("workers", "5000"),
            ("health_check_rise", "0"),
            ("health_check_max_rate", "0"),
            ("eject_after", "1001"),
            ("idle_timeout", "ten"),
        ] {
            let flag = format!("--{}={bad}", key.replace('_', "-"));
            let from_flag = <Cli as clap::Parser>::try_parse_from(["geoedge", "run", &flag])
                .map_err(|e| e.to_string())
                .and_then(|cli| Settings::resolve(cli.settings, None).map_err(|e| e.to_string()));
            let quoted = if bad.parse::<u64>().is_ok() {
                bad.to_owned()
            } else {
                format!("'{bad}'")
            };
            let from_file = toml::from_str::<Layer>(&format!("{key} = {quoted}"))
                .map_err(|e| e.to_string())
                .and_then(|l| Settings::resolve(l, None).map_err(|e| e.to_string()));
            let (Err(flag_error), Err(file_error)) = (&from_flag, &from_file) else {
                panic!("{key} = {bad} accepted: {from_flag:?} {from_file:?}")
            };
            if key != "idle_timeout" {
                // Checked once, after the layers are merged: one message.
                assert_eq!(flag_error, file_error, "{key}");
            }
            assert!(
                flag_error.contains(bad) && file_error.contains(bad),
                "{key}: {flag_error} / {file_error}"
            );
        }
    }

    /// The help text of the command at `path`.
    fn help(path: &[&str]) -> String {
        let mut cmd = Cli::command_with_defaults();
        let mut at = &mut cmd;
        for name in path {
            at = at.find_subcommand_mut(name).unwrap();
        }
        at.render_long_help().to_string()
    }

    #[test]
    fn a_commands_help_offers_only_the_settings_it_reads() {
        // `wg genkey` reads no setting.
        let genkey = help(&["wg", "genkey"]);
        assert!(
            !genkey.contains("--routing-db") && !genkey.contains("--config"),
            "{genkey}"
        );
        // `run` serves each listener's app: `--app` does nothing there.
        let run = help(&["run"]);
        assert!(
            run.contains("--routing-db") && run.contains("--wg-interface"),
            "{run}"
        );
        assert!(!run.contains("--app "), "{run}");
        let route = help(&["route"]);
        assert!(
            route.contains("--app ") && route.contains("--binding-ttl"),
            "{route}"
        );
        assert!(
            !route.contains("--listen") && !route.contains("--wg-mtu"),
            "{route}"
        );
        let up = help(&["wg", "up"]);
        assert!(
            up.contains("--wg-private-key-file") && !up.contains("--listen"),
            "{up}"
        );
        let demo = help(&["demo"]);
        assert!(
            demo.contains("--listen") && !demo.contains("--routing-db"),
            "{demo}"
        );
        // The demo's help shows the defaults the demo runs with.
        for (_, default) in defaults::demo_shown() {
            assert!(
                demo.contains(&format!("[default: {default}].")),
                "{default}: {demo}"
            );
        }
        assert!(!demo.contains("0.0.0.0:8080"), "{demo}");
        assert!(demo.contains("--metrics-listen"), "{demo}");
        // Still accepted where they do nothing (a config file serves all).
        assert!(<Cli as clap::Parser>::try_parse_from([
            "geoedge", "wg", "genkey", "--region", "us"
        ])
        .is_ok());
    }
}
