//! Tests take one reading of the clock as their origin; the code never
//! reads it.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use super::*;
use crate::snapshot::build;
use crate::table::Reservation;
use crate::testutil::{backend, table};

fn one(region: &str, hard: u32) -> Arc<Backend> {
    let s = build(
        &table(vec![backend("x", region, Some("DE"), 1, i64::from(hard))]),
        |_| Arc::default(),
    )
    .unwrap();
    Arc::clone(&s.backends[0])
}

#[test]
fn the_owners_own_clients_and_its_loans_share_the_hard_limit() {
    let x = one("eu", 5);
    let t0 = Instant::now();
    let owner = LeaseOwner::new(Duration::from_secs(5), None);
    let (us, sa) = (PopId::new("us"), PopId::new("sa"));
    let mine: Vec<_> = (0..2).map(|_| Reservation::try_new(&x).unwrap()).collect();
    assert_eq!(owner.handle_request(&x, &us, 2, t0).slots, 2);
    assert_eq!(
        x.load.active(),
        2,
        "lent slots are not this edge's connections"
    );
    assert_eq!(x.load.lent(), 2);
    assert_eq!(x.load.reserved(), 4);
    assert_eq!(owner.handle_request(&x, &sa, 4, t0).slots, 1);
    // Full: neither the owner nor a new loan gets a slot.
    assert!(Reservation::try_new(&x).is_none());
    assert_eq!(owner.handle_request(&x, &PopId::new("ap"), 1, t0).slots, 0);
    // sa gives back, us's lease expires: the slots come back.
    owner.handle_release(&x, &sa, t0);
    assert_eq!(x.load.lent(), 2);
    let later = t0 + Duration::from_secs(5);
    owner.handle_timeout([&*x].into_iter(), later);
    assert_eq!((x.load.lent(), x.load.reserved()), (0, 2));
    drop(mine);
    assert_eq!(x.load.reserved(), 0);
}

#[test]
fn a_remote_backend_admits_within_the_lease_and_its_slots_come_back() {
    let x = one("eu", 10);
    let t0 = Instant::now();
    let gate = Arc::new(LeaseGate::new(
        PopId::new("us-a"),
        RegionId::new("us"),
        Fallback::Share,
    ));
    assert!(gate.is_remote(&x));
    assert!(
        !LeaseGate::new(PopId::new("fra"), RegionId::new("eu"), Fallback::Strict).is_remote(&x)
    );
    gate.set_pops(3);
    // No lease and the owner silent: the share, 10 / 3.
    let silent = gate.with_holder(|h| h.handle_sent(&x.id, t0));
    gate.with_holder(|h| h.handle_unanswered(&x.id, silent));
    let held: Vec<_> = (0..5)
        .filter_map(|_| LeaseSlot::try_new(&gate, &x, t0, false).ok())
        .collect();
    assert_eq!(held.len(), 3);
    assert_eq!(gate.by_fallback.load(Ordering::Relaxed), 3);
    assert_eq!(gate.refused.load(Ordering::Relaxed), 2);
    drop(held);
    // With a lease of 1.
    let id = gate.with_holder(|h| h.handle_sent(&x.id, t0));
    gate.with_holder(|h| {
        h.handle_grant(
            &x.id,
            id,
            Grant {
                slots: 1,
                lasts: Duration::from_secs(5),
            },
        )
    });
    let a = LeaseSlot::try_new(&gate, &x, t0, false).unwrap();
    assert!(LeaseSlot::try_new(&gate, &x, t0, false).is_err());
    drop(a);
    assert!(LeaseSlot::try_new(&gate, &x, t0, false).is_ok());
}
