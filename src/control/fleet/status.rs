//! Each POP's report (the `status.POP` key its edge writes) and how
//! `geoedge db status` reads the reports against the current revision:
//! current, behind, diverged (routing.db edited by hand), silent (no report
//! for [`FLEET_SILENT_AFTER`]) or none installed. No IO: `now` is passed in.
//!
//! [`FLEET_SILENT_AFTER`]: crate::control::config::defaults::FLEET_SILENT_AFTER

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::revision::{Revision, Sha256Digest};

/// What one POP's edge reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopStatus {
    /// The POP's name (`--pop`).
    pub pop: String,
    /// The revision installed (`None`: none yet; routing.db came from
    /// elsewhere).
    pub revision: Option<Revision>,
    /// The sha256 of the installed revision's file.
    pub sha256: Option<Sha256Digest>,
    /// When that revision was installed (seconds since the epoch).
    pub installed_at: Option<u64>,
    /// When this report was written (seconds since the epoch).
    pub reported_at: u64,
    /// routing.db differs from the installed revision (edited by hand).
    pub diverged: bool,
    /// The reason of the last failed follow step, while it is failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a POP stands against the current revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// It runs the current revision.
    Current,
    /// It runs an older revision, or none.
    Behind,
    /// Its routing.db was edited by hand since the install.
    Diverged,
    /// It has not reported for longer than the silence threshold.
    Silent,
}

impl State {
    /// The word printed.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Behind => "behind",
            State::Diverged => "diverged",
            State::Silent => "silent",
        }
    }
}

/// One line of `geoedge db status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    /// The POP.
    pub pop: String,
    /// Its installed revision (`None`: none).
    pub revision: Option<Revision>,
    /// Seconds since the POP last reported.
    pub age_seconds: u64,
    /// Seconds since it installed that revision.
    pub installed_age_seconds: Option<u64>,
    /// How it stands.
    pub state: State,
    /// Revisions it is behind the current one (0 when current).
    pub behind_by: u64,
    /// Its last follow error, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The rows for `reports` against `current`, sorted by POP name. A POP is
/// silent when its report is older than `silent_after`; silence wins over
/// the other states (what it last said may no longer hold).
pub fn rows(
    current: Option<Revision>,
    reports: &[PopStatus],
    now: u64,
    silent_after: Duration,
) -> Vec<StatusRow> {
    let mut rows: Vec<StatusRow> = reports
        .iter()
        .map(|r| {
            let age_seconds = now.saturating_sub(r.reported_at);
            let behind_by = match (current, r.revision) {
                (Some(c), Some(i)) => c.0.saturating_sub(i.0),
                (Some(c), None) => c.0,
                (None, _) => 0,
            };
            let state = if age_seconds > silent_after.as_secs() {
                State::Silent
            } else if r.diverged {
                State::Diverged
            } else if behind_by > 0 {
                State::Behind
            } else {
                State::Current
            };
            StatusRow {
                pop: r.pop.clone(),
                revision: r.revision,
                age_seconds,
                installed_age_seconds: r.installed_at.map(|t| now.saturating_sub(t)),
                state,
                behind_by,
                error: r.error.clone(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.pop.cmp(&b.pop));
    rows
}

/// The text form: one line per POP, `POP REVISION` first, then the age of
/// its report, its state and, for a POP behind, by how much.
pub fn render(rows: &[StatusRow]) -> String {
    let width = rows.iter().map(|r| r.pop.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in rows {
        let revision = r.revision.map_or("-".to_owned(), |v| v.to_string());
        let _ = write!(
            out,
            "{:<width$} {:>8} {:>6}s {}",
            r.pop,
            revision,
            r.age_seconds,
            r.state.as_str()
        );
        if r.state == State::Behind {
            let _ = write!(out, " (by {})", r.behind_by);
        }
        if let Some(i) = r.installed_age_seconds {
            let _ = write!(out, " installed {i}s ago");
        }
        if let Some(e) = &r.error {
            let _ = write!(out, " error: {e}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
