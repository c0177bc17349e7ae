use proptest::prelude::*;

use super::*;
use crate::control::fleet::revision::{object_name, RowCounts};

fn rev(n: u64, content: &str) -> RevisionInfo {
    let sha256 = Sha256Digest::of(content.as_bytes());
    RevisionInfo {
        revision: Revision(n),
        object: object_name(&sha256),
        sha256,
        size: content.len() as u64,
        author: "alice".into(),
        host: "ops1".into(),
        time: 1_800_000_000 + n,
        message: String::new(),
        rows: RowCounts::default(),
        restores: None,
    }
}

fn digest(content: &str) -> Sha256Digest {
    Sha256Digest::of(content.as_bytes())
}

#[test]
fn a_new_pop_installs_the_current_revision_unless_its_file_is_that_one() {
    let mut f = Follower::new(None);
    assert_eq!(
        f.handle_current(&rev(1, "a"), None),
        Step::Install(rev(1, "a"))
    );
    assert_eq!(
        f.handle_current(&rev(1, "a"), Some(&digest("old"))),
        Step::Install(rev(1, "a"))
    );
    assert_eq!(
        f.handle_current(&rev(1, "a"), Some(&digest("a"))),
        Step::Adopt(rev(1, "a"))
    );
}

#[test]
fn an_installed_revision_is_kept_and_an_older_one_ignored() {
    let mut f = Follower::new(None);
    f.handle_installed(&rev(5, "e"), 10);
    assert_eq!(
        f.handle_current(&rev(5, "e"), Some(&digest("e"))),
        Step::UpToDate
    );
    assert_eq!(
        f.handle_current(&rev(4, "d"), Some(&digest("e"))),
        Step::Older
    );
    assert_eq!(
        f.handle_current(&rev(4, "d"), Some(&digest("d"))),
        Step::Older
    );
    assert_eq!(
        f.handle_current(&rev(6, "f"), Some(&digest("e"))),
        Step::Install(rev(6, "f"))
    );
    assert_eq!(f.installed().unwrap().revision, Revision(5));
}

#[test]
fn a_hand_edit_is_diverged_until_the_next_publish_replaces_it() {
    let mut f = Follower::new(Some(Installed {
        revision: Revision(2),
        sha256: digest("b"),
        installed_at: 0,
    }));
    assert!(f.handle_disk(Some(&digest("b-drained"))));
    assert_eq!(
        f.handle_current(&rev(2, "b"), Some(&digest("b-drained"))),
        Step::Diverged
    );
    assert!(f.diverged());
    // A rollback or any new publish is a newer revision: it replaces the
    // hand edit.
    let next = rev(3, "b");
    assert_eq!(
        f.handle_current(&next, Some(&digest("b-drained"))),
        Step::Install(next.clone())
    );
    f.handle_installed(&next, 1);
    assert!(!f.diverged());
    assert_eq!(f.handle_current(&next, Some(&digest("b"))), Step::UpToDate);
    // A file removed by hand is diverged too.
    assert!(f.handle_disk(None));
}

proptest! {
    /// Whatever order revisions are seen in (a watch, the periodic check,
    /// a stale read after a partition), the installed revision never goes
    /// back and ends at the newest one seen.
    #[test]
    fn the_installed_revision_never_goes_back(seen in proptest::collection::vec(1u64..20, 1..40)) {
        let mut f = Follower::new(None);
        let mut disk: Option<Sha256Digest> = None;
        let mut last = 0;
        for n in &seen {
            let r = rev(*n, &n.to_string());
            match f.handle_current(&r, disk.as_ref()) {
                Step::Install(i) | Step::Adopt(i) => {
                    prop_assert!(i.revision.0 > last);
                    disk = Some(i.sha256.clone());
                    f.handle_installed(&i, 0);
                    last = i.revision.0;
                }
                Step::UpToDate | Step::Older => {}
                Step::Diverged => prop_assert!(false, "never edited by hand here"),
            }
        }
        prop_assert_eq!(last, *seen.iter().max().unwrap());
    }
}
