//! The `sni_routes` table: TLS server names routed to an app.
//!
//! A hostname is written lower-case, as an exact name (`api.example.com`)
//! or a wildcard whose first label is `*` (`*.example.com`). A wildcard
//! matches every name that ends in the rest with a dot before it, at any
//! depth (`a.example.com`, `a.b.example.com`), never the rest itself
//! (`example.com`). Lookup takes the exact name first, then the longest
//! wildcard (`*.b.example.com` before `*.example.com`).
//!
//! Hostnames are lower-case ASCII letters, digits, `-` and `.`: labels of
//! 1 to 63 characters, 253 at most in all, no leading or trailing dot. The
//! app must be one the table knows: a `backends.app` (of any row, deleted
//! or not) or an `apps.app`.

use super::cells::Cells;
use super::{FastMap, RowError};
use crate::model::AppId;
use crate::raw::SniRouteRow;

/// Longest hostname, in characters.
pub const MAX_HOSTNAME: usize = 253;

/// Longest label of a hostname, in characters.
pub const MAX_LABEL: usize = 63;

/// The validated `sni_routes`: exact names and wildcard suffixes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SniRoutes {
    /// Exact hostname → app.
    pub(crate) exact: FastMap<Box<str>, AppId>,
    /// Wildcard `*.rest`, by `rest` → app.
    pub(crate) wildcard: FastMap<Box<str>, AppId>,
}

impl SniRoutes {
    /// The app of a server name (lower-case, as clients send it): the exact
    /// name, else the longest wildcard whose suffix it ends in. Hash lookups
    /// of slices of `name`: no allocation.
    pub(crate) fn route(&self, name: &str) -> Option<&AppId> {
        if let Some(app) = self.exact.get(name) {
            return Some(app);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let mut rest = name;
        // Each step drops the first label; the first suffix that a wildcard
        // names is the longest one. An empty label matches nothing.
        while let Some(dot) = rest.find('.') {
            if dot == 0 {
                return None;
            }
            rest = &rest[dot + 1..];
            if let Some(app) = self.wildcard.get(rest) {
                return Some(app);
            }
        }
        None
    }

    /// Number of routes (exact and wildcard).
    pub(crate) fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}

/// Why a hostname is not valid, or whether it is a wildcard and its name
/// (without the `*.`).
fn parse(host: &str) -> Result<(bool, &str), String> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{host:?} has upper-case letters: write it lower-case ({:?})",
            host.to_ascii_lowercase()
        ));
    }
    if host == "*" {
        return Err(
            "\"*\" alone is not allowed: write \"*.example.com\" for the names under a domain"
                .into(),
        );
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.contains('*') {
        return Err(format!(
            "{host:?}: \"*\" is allowed only as the whole first label (\"*.example.com\")"
        ));
    }
    if host.len() > MAX_HOSTNAME {
        return Err(format!(
            "{host:?} is {} characters long, more than {MAX_HOSTNAME}",
            host.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return Err(format!(
            "{host:?} has {c:?}: a hostname is lower-case letters, digits, '-' and '.'"
        ));
    }
    if name.starts_with('.') || name.ends_with('.') {
        return Err(format!("{host:?} must not start or end with a dot"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("{host:?} has an empty label (\"..\")"));
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "{host:?} has a label of {} characters, more than {MAX_LABEL}",
                label.len()
            ));
        }
    }
    Ok((wildcard, name))
}

/// Validates the `sni_routes` rows; `known` says whether an app is one the
/// table knows.
pub(super) fn validate(
    rows: &[SniRouteRow],
    known: impl Fn(&str) -> bool,
    errors: &mut Vec<RowError>,
) -> SniRoutes {
    let mut out = SniRoutes::default();
    for r in rows {
        let mut c = Cells {
            errors,
            table: "sni_routes",
            id: &r.hostname,
            rowid: r.rowid,
        };
        let host = c
            .text("hostname", &r.hostname, true)
            .and_then(|h| match parse(h) {
                Ok(parsed) => Some(parsed),
                Err(msg) => {
                    c.err(Some("hostname"), msg);
                    None
                }
            });
        let app = c.text("app", &r.app, true).and_then(|a| {
            if known(a) {
                Some(a)
            } else {
                c.err(Some("app"), format!("unknown app {a:?}"));
                None
            }
        });
        let (Some((wildcard, name)), Some(app)) = (host, app) else {
            continue;
        };
        let map = if wildcard {
            &mut out.wildcard
        } else {
            &mut out.exact
        };
        if map.insert(name.into(), AppId::new(app)).is_some() {
            c.err(Some("hostname"), "duplicate hostname".into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rowid: i64, host: &str, app: &str) -> SniRouteRow {
        SniRouteRow {
            rowid,
            hostname: host.into(),
            app: app.into(),
        }
    }

    fn routes(rows: &[SniRouteRow]) -> (SniRoutes, Vec<String>) {
        let mut errors = Vec::new();
        let r = validate(rows, |a| a != "nope", &mut errors);
        (r, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn exact_first_then_the_longest_wildcard() {
        let (r, errors) = routes(&[
            row(1, "api.example.com", "api"),
            row(2, "*.example.com", "web"),
            row(3, "*.b.example.com", "b"),
            row(4, "example.com", "root"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(r.len(), 4);
        let app = |n: &str| r.route(n).map(|a| a.to_string());
        assert_eq!(app("api.example.com").as_deref(), Some("api"));
        assert_eq!(app("a.example.com").as_deref(), Some("web"));
        assert_eq!(app("x.api.example.com").as_deref(), Some("web"));
        assert_eq!(app("a.b.example.com").as_deref(), Some("b"));
        assert_eq!(app("x.a.b.example.com").as_deref(), Some("b"));
        assert_eq!(app("b.example.com").as_deref(), Some("web"));
        assert_eq!(app("example.com").as_deref(), Some("root"));
        assert_eq!(app("com"), None);
        assert_eq!(app("other.org"), None);
        assert_eq!(app(""), None);
        assert_eq!(app(".example.com"), None);
        assert_eq!(app("a..example.com"), None);
        let (r, _) = routes(&[row(1, "*.example.com", "web")]);
        assert_eq!(r.route("example.com"), None);
    }

    #[test]
    fn bad_hostnames_and_apps_are_row_errors() {
        let long_label = "a".repeat(64);
        let long_name = format!("{}.com", ["abcdefghi"; 26].join("."));
        let (_, errors) = routes(&[
            row(1, "API.example.com", "api"),
            row(2, "*", "api"),
            row(3, "a.*.example.com", "api"),
            row(4, "**.example.com", "api"),
            row(5, ".example.com", "api"),
            row(6, "example.com.", "api"),
            row(7, "a..example.com", "api"),
            row(8, &format!("{long_label}.com"), "api"),
            row(9, &long_name, "api"),
            row(10, "a_b.example.com", "api"),
            row(11, "ok.example.com", "nope"),
            row(12, "", "api"),
            row(13, "dup.example.com", "api"),
            row(14, " dup.example.com", "api"),
        ]);
        let expect = [
            "sni_routes \"API.example.com\" column hostname: \"API.example.com\" has upper-case letters: write it lower-case (\"api.example.com\")",
            "sni_routes \"*\" column hostname: \"*\" alone is not allowed: write \"*.example.com\" for the names under a domain",
            "sni_routes \"a.*.example.com\" column hostname: \"a.*.example.com\": \"*\" is allowed only as the whole first label (\"*.example.com\")",
            "sni_routes \"**.example.com\" column hostname: \"**.example.com\": \"*\" is allowed only as the whole first label (\"*.example.com\")",
            "sni_routes \".example.com\" column hostname: \".example.com\" must not start or end with a dot",
            "sni_routes \"example.com.\" column hostname: \"example.com.\" must not start or end with a dot",
            "sni_routes \"a..example.com\" column hostname: \"a..example.com\" has an empty label (\"..\")",
        ];
        for (e, want) in errors.iter().zip(expect) {
            assert_eq!(e, want);
        }
        assert!(
            errors[7].contains("has a label of 64 characters, more than 63"),
            "{}",
            errors[7]
        );
        assert!(
            errors[8].contains("characters long, more than 253"),
            "{}",
            errors[8]
        );
        assert!(
            errors[9].contains("has '_': a hostname is lower-case letters, digits, '-' and '.'"),
            "{}",
            errors[9]
        );
        assert_eq!(
            errors[10],
            "sni_routes \"ok.example.com\" column app: unknown app \"nope\""
        );
        assert_eq!(
            errors[11],
            "sni_routes rowid 12 column hostname: must not be empty"
        );
        assert_eq!(
            errors[12],
            "sni_routes \"dup.example.com\" column hostname: duplicate hostname"
        );
        assert_eq!(errors.len(), 13, "{errors:#?}");
    }
}
