//! What a following edge does with the current revision it sees: the
//! decision only, from what is installed and the digest of routing.db on
//! disk now. No IO and no clock: [`super::follow`] reads the key, hashes
//! the file and carries out the [`Step`].
//!
//! The rules:
//! - a revision older than the installed one is ignored (a stale read
//!   never takes a POP back; a rollback is a newer revision);
//! - the installed revision is kept while the file on disk is still the
//!   one installed;
//! - a file changed on disk since the install (an emergency edit by hand)
//!   is *diverged*: kept, reported, and replaced by the next revision
//!   published;
//! - a newer revision is installed, or only recorded when the file on
//!   disk already is that revision's (after a crash between the rename and
//!   the record, or a POP first seeded by hand).

use serde::{Deserialize, Serialize};

use super::revision::{Revision, RevisionInfo, Sha256Digest};

/// The revision an edge installed, as recorded beside routing.db.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Its number.
    pub revision: Revision,
    /// The sha256 of the file installed.
    pub sha256: Sha256Digest,
    /// When it was installed, in seconds since the Unix epoch.
    pub installed_at: u64,
}

/// What to do about the current revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Fetch, verify, validate and install this revision.
    Install(RevisionInfo),
    /// The file on disk is this revision's already: record it as installed.
    Adopt(RevisionInfo),
    /// Nothing to do: the installed revision is current and on disk.
    UpToDate,
    /// The file on disk is not the installed revision's (edited by hand):
    /// keep it until a newer revision is published.
    Diverged,
    /// The revision seen is older than the one installed: ignore it.
    Older,
}

/// A following edge's view: what it installed and whether routing.db has
/// been changed by hand since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Follower {
    installed: Option<Installed>,
    diverged: bool,
}

impl Follower {
    /// Starts from what the record beside routing.db says was installed.
    pub fn new(installed: Option<Installed>) -> Self {
        Follower {
            installed,
            diverged: false,
        }
    }

    /// The revision installed, if any.
    pub fn installed(&self) -> Option<&Installed> {
        self.installed.as_ref()
    }

    /// Whether routing.db was found changed by hand at the last look.
    pub fn diverged(&self) -> bool {
        self.diverged
    }

    /// Decides about `current`, given the sha256 of routing.db on disk now
    /// (`None`: no file).
    pub fn handle_current(
        &mut self,
        current: &RevisionInfo,
        on_disk: Option<&Sha256Digest>,
    ) -> Step {
        if let Some(installed) = &self.installed {
            if current.revision < installed.revision {
                return Step::Older;
            }
            if current.revision == installed.revision {
                self.diverged = on_disk != Some(&installed.sha256);
                return if self.diverged {
                    Step::Diverged
                } else {
                    Step::UpToDate
                };
            }
        }
        if on_disk == Some(&current.sha256) {
            Step::Adopt(current.clone())
        } else {
            Step::Install(current.clone())
        }
    }

    /// Checks the file on disk against the installed revision without a
    /// current revision at hand (NATS unreachable): whether it diverged.
    pub fn handle_disk(&mut self, on_disk: Option<&Sha256Digest>) -> bool {
        if let Some(installed) = &self.installed {
            self.diverged = on_disk != Some(&installed.sha256);
        }
        self.diverged
    }

    /// Records that `info` is now installed (after [`Step::Install`] or
    /// [`Step::Adopt`] was carried out) at `now` (seconds since the epoch).
    pub fn handle_installed(&mut self, info: &RevisionInfo, now: u64) -> Installed {
        let installed = Installed {
            revision: info.revision,
            sha256: info.sha256.clone(),
            installed_at: now,
        };
        self.installed = Some(installed.clone());
        self.diverged = false;
        installed
    }
}

#[cfg(test)]
mod tests;
