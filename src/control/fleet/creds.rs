//! NATS credentials: reading the file `--nats-creds` names (refused when
//! group- or world-readable, like a WireGuard key, and never logged), and
//! making the users of the servers' configuration (`geoedge db
//! nats-user`): the publisher may write the fleet's buckets; a POP may read
//! them and write only its own status key.
//!
//! Two kinds of file are read: a user nkey seed (`SU…`, one line: the
//! users this module makes, listed by public key in `nats-server.conf`),
//! and a `.creds` file (a user JWT and its seed, for servers run in JWT
//! mode with accounts made by `nsc`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
#[cfg(test)]
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use zeroize::Zeroizing;

/// What a credentials file holds.
pub enum Credentials {
    /// A user nkey seed.
    Seed(Zeroizing<String>),
    /// A `.creds` file: a user JWT and its seed.
    Creds(Zeroizing<String>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Seed(_) => "Credentials::Seed(..)",
            Credentials::Creds(_) => "Credentials::Creds(..)",
        })
    }
}

/// Reads a credentials file: a regular file, not accessible by group or
/// others, holding a user nkey seed or a `.creds` file. Errors name the
/// file and what is wrong, never the content.
pub fn load(path: &Path) -> anyhow::Result<Credentials> {
    let text = crate::control::secret_file::read(path, "NATS credentials file", 16 * 1024)?;
    if text.contains("-----BEGIN NATS USER JWT-----") {
        return Ok(Credentials::Creds(text));
    }
    let seed = Zeroizing::new(text.trim().to_owned());
    if seed.starts_with("SU") && nkeys::KeyPair::from_seed(&seed).is_ok() {
        return Ok(Credentials::Seed(seed));
    }
    bail!(
        "NATS credentials file {}: neither a user nkey seed (SU…, from `geoedge db nats-user`) nor a .creds file",
        path.display()
    )
}

/// `options` authenticating with `creds`.
pub fn apply(
    options: async_nats::ConnectOptions,
    creds: &Credentials,
) -> anyhow::Result<async_nats::ConnectOptions> {
    Ok(match creds {
        Credentials::Seed(seed) => options.nkey(seed.to_string()),
        Credentials::Creds(text) => options
            .credentials(text)
            .context("reading the .creds file")?,
    })
}

/// Whom a user is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The operator: publishes revisions (and makes the buckets), and
    /// reads the edges' load reports (`geoedge route`).
    Publisher,
    /// A POP's edge: reads the buckets, writes its own status key and
    /// load, asks for leases, and answers the lease requests of its
    /// region's backends.
    Pop {
        /// The POP's name (`--pop`).
        name: String,
        /// Its region (`--region`).
        region: String,
    },
}

/// The `permissions` block of a user of `role`, for the fleet's `bucket`.
/// A POP may ask the JetStream API only about the fleet's two streams,
/// read them (consumers and direct gets), and publish only to its own
/// status key and its own load reports; it cannot publish a revision,
/// move `current`, or write another POP's status or load.
pub fn permissions(role: &Role, bucket: &str) -> String {
    let kv = format!("KV_{bucket}");
    let obj = format!("OBJ_{bucket}");
    match role {
        Role::Publisher => format!(
            r#"{{ publish: {{ allow: ["$JS.API.INFO", "$JS.API.STREAM.INFO.{kv}", "$JS.API.STREAM.INFO.{obj}", "$JS.API.STREAM.CREATE.{kv}", "$JS.API.STREAM.CREATE.{obj}", "$JS.API.STREAM.MSG.GET.{kv}", "$JS.API.STREAM.MSG.GET.{obj}", "$JS.API.DIRECT.GET.{kv}", "$JS.API.DIRECT.GET.{kv}.>", "$JS.API.DIRECT.GET.{obj}", "$JS.API.DIRECT.GET.{obj}.>", "$JS.API.CONSUMER.CREATE.{kv}", "$JS.API.CONSUMER.CREATE.{kv}.>", "$JS.API.CONSUMER.CREATE.{obj}", "$JS.API.CONSUMER.CREATE.{obj}.>", "$JS.API.CONSUMER.DELETE.{kv}.>", "$JS.API.CONSUMER.DELETE.{obj}.>", "$JS.API.STREAM.PURGE.{obj}", "$KV.{bucket}.>", "$O.{bucket}.>", "$JS.FC.{kv}.>", "$JS.FC.{obj}.>", "$JS.ACK.{kv}.>", "$JS.ACK.{obj}.>"] }}, subscribe: {{ allow: ["_INBOX.>", "geoedge.load.*"] }} }}"#
        ),
        Role::Pop { name: pop, region } => format!(
            r#"{{ publish: {{ allow: ["$JS.API.INFO", "$JS.API.STREAM.INFO.{kv}", "$JS.API.STREAM.INFO.{obj}", "$JS.API.STREAM.MSG.GET.{kv}", "$JS.API.STREAM.MSG.GET.{obj}", "$JS.API.DIRECT.GET.{kv}", "$JS.API.DIRECT.GET.{kv}.>", "$JS.API.DIRECT.GET.{obj}", "$JS.API.DIRECT.GET.{obj}.>", "$JS.API.CONSUMER.CREATE.{kv}", "$JS.API.CONSUMER.CREATE.{kv}.>", "$JS.API.CONSUMER.CREATE.{obj}", "$JS.API.CONSUMER.CREATE.{obj}.>", "$JS.API.CONSUMER.DELETE.{kv}.>", "$JS.API.CONSUMER.DELETE.{obj}.>", "$KV.{bucket}.status.{pop}", "geoedge.load.{pop}", "geoedge.lease.*", "$JS.FC.{kv}.>", "$JS.FC.{obj}.>", "$JS.ACK.{kv}.>", "$JS.ACK.{obj}.>"] }}, subscribe: {{ allow: ["_INBOX.>", "geoedge.load.*", "geoedge.lease.{region}"] }}, allow_responses: true }}"#
        ),
    }
}

/// Makes a user of `role`: writes a new user nkey seed to `seed_file`
/// (created with mode 600; an existing file is never overwritten) and
/// returns the entry of `authorization.users` in `nats-server.conf` that
/// lets it in with its permissions.
pub fn new_user(role: &Role, bucket: &str, seed_file: &Path) -> anyhow::Result<String> {
    let pair = nkeys::KeyPair::new_user();
    let seed = Zeroizing::new(pair.seed().context("encoding the new seed")?);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(seed_file)
        .with_context(|| format!("creating {}", seed_file.display()))?;
    file.write_all(format!("{}\n", *seed).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", seed_file.display()))?;
    let who = match role {
        Role::Publisher => "the fleet's publisher".to_owned(),
        Role::Pop { name, region } => format!("POP {name} (region {region})"),
    };
    Ok(format!(
        "# {who}: seed in {}\n{{ nkey: \"{}\", permissions: {} }}\n",
        seed_file.display(),
        pair.public_key(),
        permissions(role, bucket)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_user_is_a_private_seed_file_and_a_config_entry() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("fra.nk");
        let entry = new_user(
            &Role::Pop {
                name: "fra".into(),
                region: "eu".into(),
            },
            "geoedge_routing",
            &seed,
        )
        .unwrap();
        let mode = std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(load(&seed).unwrap(), Credentials::Seed(_)));
        let text = std::fs::read_to_string(&seed).unwrap();
        let pair = nkeys::KeyPair::from_seed(text.trim()).unwrap();
        assert!(entry.contains(&pair.public_key()), "{entry}");
        assert!(!entry.contains(text.trim()), "the seed is not in the entry");
        assert!(
            entry.contains("$KV.geoedge_routing.status.fra\""),
            "{entry}"
        );
        assert!(!entry.contains("$KV.geoedge_routing.>"), "{entry}");
        // Its own load; lease requests for its region's backends.
        assert!(entry.contains("\"geoedge.load.fra\""), "{entry}");
        assert!(entry.contains("\"geoedge.lease.eu\""), "{entry}");
        assert!(!entry.contains("\"geoedge.lease.fra\""), "{entry}");
        // Never overwritten.
        assert!(new_user(&Role::Publisher, "geoedge_routing", &seed).is_err());
    }

    #[test]
    fn open_files_and_other_content_are_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("p.nk");
        new_user(&Role::Publisher, "b", &seed).unwrap();
        let text = std::fs::read_to_string(&seed).unwrap();
        std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(&seed).unwrap_err().to_string();
        assert!(
            e.contains("group or others") && !e.contains(text.trim()),
            "{e}"
        );
        let other = dir.path().join("other");
        std::fs::write(&other, "SUnotaseed\n").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(&other).unwrap_err().to_string();
        assert!(e.contains("neither") && !e.contains("SUnotaseed"), "{e}");
    }
}
