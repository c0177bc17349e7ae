//! Tests take one reading of the clock as their origin; the core never reads it.
#![allow(clippy::disallowed_methods)]

use proptest::prelude::*;

use super::*;

fn ids() -> (BackendId, PopId, PopId) {
    (BackendId::new("us-1"), PopId::new("eu"), PopId::new("sa"))
}

#[test]
fn the_owner_lends_only_what_fits_and_admits_its_own_around_it() {
    let (b, eu, sa) = ids();
    let t0 = Instant::now();
    let term = Duration::from_secs(5);
    let mut ledger = Ledger::new(term);
    // Limit 10, the owner holds 4: eu gets 5 of the 6 left, sa the last 1.
    assert_eq!(ledger.handle_request(&b, &eu, 5, 4, 10, t0).slots, 5);
    assert_eq!(ledger.handle_request(&b, &sa, 5, 4, 10, t0).slots, 1);
    assert_eq!(ledger.lent(&b, t0), 6);
    assert!(!ledger.may_admit_own(&b, 4, 10, t0));
    // eu renews asking for fewer: its old 5 count until they expire.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(ledger.handle_request(&b, &eu, 2, 4, 10, t1).slots, 2);
    assert_eq!(ledger.lent_to(&b, &eu, t1), 5);
    let t2 = t0 + term;
    assert_eq!(ledger.lent_to(&b, &eu, t2), 2);
    assert_eq!(ledger.lent(&b, t2), 2, "sa's lease expired");
    assert!(ledger.may_admit_own(&b, 4, 10, t2));
    assert_eq!(ledger.poll_timeout(), Some(t0 + term));
    ledger.handle_timeout(t2);
    assert_eq!(ledger.poll_timeout(), Some(t1 + term));
    ledger.handle_release(&b, &eu);
    assert_eq!(ledger.lent(&b, t2), 0);
    assert_eq!(ledger.poll_timeout(), None);
}

#[test]
fn a_holder_admits_within_its_lease_counted_from_its_request() {
    let (b, _, _) = ids();
    let t0 = Instant::now();
    let term = Duration::from_secs(5);
    let mut h = Holder::new(Fallback::Strict);
    // No lease: waiting for one; strict, not even as a last resort.
    assert_eq!(h.try_admit(&b, 10, 3, t0, false), Admit::Waiting);
    assert_eq!(h.try_admit(&b, 10, 3, t0, true), Admit::Full);
    let id = h.handle_sent(&b, t0);
    // The grant arrives 2 s later: the lease still ends 5 s after the send.
    assert!(h.handle_grant(
        &b,
        id,
        Grant {
            slots: 2,
            lasts: term
        }
    ));
    let t1 = t0 + Duration::from_secs(2);
    assert_eq!(h.try_admit(&b, 10, 3, t1, false), Admit::Lease);
    assert_eq!(h.try_admit(&b, 10, 3, t1, false), Admit::Lease);
    assert_eq!(h.try_admit(&b, 10, 3, t1, false), Admit::Full);
    assert!(h.wants_renewal(&b, term, t1), "full: more wanted");
    h.release(&b);
    assert_eq!(h.try_admit(&b, 10, 3, t1, false), Admit::Lease);
    assert_eq!(h.slots(&b, t0 + term), 0);
    // A grant for an unknown or older request is ignored.
    assert!(!h.handle_grant(
        &b,
        99,
        Grant {
            slots: 9,
            lasts: term
        }
    ));
    let old = h.handle_sent(&b, t1);
    let new = h.handle_sent(&b, t1 + Duration::from_millis(10));
    assert!(h.handle_grant(
        &b,
        new,
        Grant {
            slots: 3,
            lasts: term
        }
    ));
    assert!(!h.handle_grant(
        &b,
        old,
        Grant {
            slots: 9,
            lasts: term
        }
    ));
    assert_eq!(h.slots(&b, t1), 3);
    assert_eq!(h.want(&b, 4), 4);
    h.give_back(&b);
    assert_eq!(h.slots(&b, t1), 0);
}

#[test]
fn without_a_lease_share_admits_an_equal_part_of_the_limit() {
    let (b, _, _) = ids();
    let t0 = Instant::now();
    let term = Duration::from_secs(5);
    let mut h = Holder::new(Fallback::Share);
    // Before the owner is known to be silent, a client without a lease
    // waits for one (a lease is wanted), unless nothing else would take
    // it: then the share applies already.
    assert_eq!(h.try_admit(&b, 10, 3, t0, false), Admit::Waiting);
    assert_eq!(h.try_admit(&b, 10, 3, t0, true), Admit::Fallback);
    h.release(&b);
    assert!(h.wants_renewal(&b, term, t0), "a lease is wanted");
    let id = h.handle_sent(&b, t0);
    assert!(!h.wants_renewal(&b, term, t0 + Duration::from_secs(1)));
    // Unanswered: the owner is silent; the share applies, and a lease is
    // asked for again at the next look.
    h.handle_unanswered(&b, id);
    let admitted = (0..10)
        .filter(|_| h.try_admit(&b, 10, 3, t0, false) == Admit::Fallback)
        .count();
    assert_eq!(admitted, 3, "10 / 3 POPs");
    assert!(h.wants_renewal(&b, term, t0 + Duration::from_secs(1)));
    // A request lost without a word is asked again after a term.
    h.handle_sent(&b, t0);
    assert!(!h.wants_renewal(&b, term, t0 + Duration::from_secs(1)));
    assert!(h.wants_renewal(&b, term, t0 + term));
    // A lease ends the fallback.
    let id = h.handle_sent(&b, t0 + term);
    assert!(h.handle_grant(
        &b,
        id,
        Grant {
            slots: 4,
            lasts: term
        }
    ));
    assert_eq!(h.total_slots(t0 + term), 4);
}

/// One step of the simulated fleet: a holder sends a request, the owner
/// answers one in flight, a holder receives an answer, admits or releases
/// a client, the owner admits or releases one of its own, or time passes.
#[derive(Debug, Clone)]
enum Step {
    Send {
        holder: usize,
        want: u32,
    },
    Answer {
        which: usize,
    },
    Deliver {
        which: usize,
    },
    Admit {
        holder: usize,
        last_resort: bool,
    },
    Release {
        holder: usize,
    },
    OwnAdmit,
    OwnRelease,
    Wait {
        ms: u64,
    },
    /// The owner restarts: its ledger and its own connections are gone;
    /// the holders keep what they hold, messages in flight still arrive.
    Restart,
}

#[test]
fn the_view_says_lease_or_fallback_and_what_is_used() {
    let (b, _, _) = ids();
    let t0 = Instant::now();
    let mut h = Holder::new(Fallback::Share);
    assert_eq!(h.view(&b, 30, 3, t0), None);
    assert_eq!(h.try_admit(&b, 30, 3, t0, false), Admit::Waiting);
    let waiting = h.view(&b, 30, 3, t0).unwrap();
    assert_eq!((waiting.valid, waiting.slots), (false, 0));
    let unanswered = h.handle_sent(&b, t0);
    h.handle_unanswered(&b, unanswered);
    assert_eq!(h.try_admit(&b, 30, 3, t0, false), Admit::Fallback);
    let fallback = h.view(&b, 30, 3, t0).unwrap();
    assert_eq!(
        (fallback.valid, fallback.slots, fallback.used),
        (false, 10, 1)
    );
    let id = h.handle_sent(&b, t0);
    let lasts = Duration::from_secs(3);
    assert!(h.handle_grant(&b, id, Grant { slots: 6, lasts }));
    let t1 = t0 + Duration::from_secs(1);
    let lease = h.view(&b, 30, 3, t1).unwrap();
    assert_eq!(
        lease,
        LeaseView {
            valid: true,
            slots: 6,
            used: 1,
            expires_in_ms: 2000
        }
    );
    assert!(!h.view(&b, 30, 3, t0 + lasts).unwrap().valid);
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 0..8u32).prop_map(|(holder, want)| Step::Send { holder, want }),
        (0..8usize).prop_map(|which| Step::Answer { which }),
        (0..8usize).prop_map(|which| Step::Deliver { which }),
        (0..3usize, any::<bool>()).prop_map(|(holder, last_resort)| Step::Admit {
            holder,
            last_resort
        }),
        (0..3usize).prop_map(|holder| Step::Release { holder }),
        Just(Step::OwnAdmit),
        Just(Step::OwnRelease),
        (0..3000u64).prop_map(|ms| Step::Wait { ms }),
        Just(Step::Restart),
    ]
}

proptest! {
    /// Whatever the delays, the order of messages and the owner's
    /// restarts, the owner's own connections plus the slots the holders
    /// believe they hold never exceed the hard limit, and neither do the
    /// connections admitted under leases plus the owner's.
    #[test]
    fn leases_never_let_the_fleet_past_the_hard_limit(
        hard in 0..12u32,
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let b = BackendId::new("x");
        let pops: Vec<PopId> = ["a", "b", "c"].iter().map(|p| PopId::new(p)).collect();
        let term = Duration::from_secs(5);
        let mut now = Instant::now();
        let mut ledger = Ledger::new(term);
        let mut holders: Vec<Holder> = (0..3).map(|_| Holder::new(Fallback::Strict)).collect();
        let mut own = 0u32;
        // Requests on their way to the owner, answers on their way back.
        let mut requests: Vec<(usize, u64, u32)> = Vec::new();
        let mut answers: Vec<(usize, u64, Grant)> = Vec::new();
        // Clients admitted under a lease, by holder.
        let mut leased = [0u32; 3];
        for s in steps {
            match s {
                Step::Send { holder, want } => {
                    let id = holders[holder].handle_sent(&b, now);
                    requests.push((holder, id, want));
                }
                Step::Answer { which } if !requests.is_empty() => {
                    let (holder, id, want) = requests.remove(which % requests.len());
                    let g = ledger.handle_request(&b, &pops[holder], want, own, hard, now);
                    answers.push((holder, id, g));
                }
                Step::Deliver { which } if !answers.is_empty() => {
                    let (holder, id, g) = answers.remove(which % answers.len());
                    holders[holder].handle_grant(&b, id, g);
                }
                Step::Admit {
                    holder,
                    last_resort,
                } => {
                    if holders[holder].try_admit(&b, hard, 3, now, last_resort) == Admit::Lease {
                        leased[holder] += 1;
                    }
                }
                Step::Release { holder } => {
                    if leased[holder] > 0 {
                        leased[holder] -= 1;
                        holders[holder].release(&b);
                    }
                }
                Step::OwnAdmit => {
                    if ledger.may_admit_own(&b, own, hard, now) {
                        own += 1;
                    }
                }
                Step::OwnRelease => own = own.saturating_sub(1),
                Step::Wait { ms } => now += Duration::from_millis(ms),
                Step::Restart => {
                    ledger = Ledger::restarted(term, now);
                    own = 0;
                }
                Step::Answer { .. } | Step::Deliver { .. } => {}
            }
            let believed: u32 = holders.iter().map(|h| h.slots(&b, now)).sum();
            prop_assert!(own + ledger.lent(&b, now) <= hard);
            prop_assert!(own + believed <= hard, "own {own} believed {believed} hard {hard}");
            // What a previous run lent is not in the ledger while it is
            // quiet; after that, nothing is held that it did not lend.
            if !ledger.quiet(now) {
                for (i, h) in holders.iter().enumerate() {
                    prop_assert!(h.slots(&b, now) <= ledger.lent_to(&b, &pops[i], now));
                }
            }
        }
    }
}
