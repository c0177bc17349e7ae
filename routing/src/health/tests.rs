//! The health machines on injected time: rise and fall, ejection, backoff,
//! half-open trials, and the published word against the machines.

// Tests read the clock once for an arbitrary base instant; the code under
// test never does.
#![allow(clippy::disallowed_methods)]

use super::*;
use proptest::prelude::*;

fn cfg() -> HealthConfig {
    HealthConfig {
        rise: 2,
        fall: 3,
        eject_after: 3,
        backoff: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn active_checks_fall_and_rise_on_consecutive_results_only() {
    let c = cfg();
    let mut a = ActiveState::default();
    assert!(!a.is_down());
    // Two failures, a success: the count starts again.
    assert_eq!(a.on_check(false, &c), None);
    assert_eq!(a.on_check(false, &c), None);
    assert_eq!(a.on_check(true, &c), None);
    assert_eq!(a.on_check(false, &c), None);
    assert_eq!(a.on_check(false, &c), None);
    assert!(!a.is_down());
    assert_eq!(a.on_check(false, &c), Some(HealthChange::Down));
    assert!(a.is_down());
    assert_eq!(a.on_check(false, &c), None);
    // One success, a failure: still down; then two in a row bring it up.
    assert_eq!(a.on_check(true, &c), None);
    assert_eq!(a.on_check(false, &c), None);
    assert_eq!(a.on_check(true, &c), None);
    assert!(a.is_down());
    assert_eq!(a.on_check(true, &c), Some(HealthChange::Up));
    assert!(!a.is_down());
}

#[test]
fn thresholds_of_zero_act_as_one() {
    let c = HealthConfig {
        rise: 0,
        fall: 0,
        ..cfg()
    };
    let mut a = ActiveState::default();
    assert_eq!(a.on_check(false, &c), Some(HealthChange::Down));
    assert_eq!(a.on_check(true, &c), Some(HealthChange::Up));
}

#[test]
fn consecutive_connect_failures_eject_and_a_success_resets_the_count() {
    let c = cfg();
    let t0 = Instant::now();
    let mut p = PassiveState::default();
    assert_eq!(p.on_connect(false, t0, &c), None);
    assert_eq!(p.on_connect(false, t0, &c), None);
    assert_eq!(p.on_connect(true, t0, &c), None);
    assert_eq!(p.failures(), 0);
    assert_eq!(p.on_connect(false, t0, &c), None);
    assert_eq!(p.on_connect(false, t0, &c), None);
    assert!(p.admits(t0));
    assert_eq!(
        p.on_connect(false, t0, &c),
        Some(HealthChange::Ejected {
            backoff: secs(1.0),
            trial_failed: false
        })
    );
    assert!(p.is_ejected());
    assert!(!p.admits(t0));
    assert!(!p.admits(t0 + secs(0.999)));
    assert!(p.admits(t0 + secs(1.0)));
}

#[test]
fn one_trial_per_backoff_and_its_failure_doubles_the_backoff_up_to_the_cap() {
    let c = cfg();
    let t0 = Instant::now();
    let mut p = PassiveState::default();
    for _ in 0..3 {
        p.on_connect(false, t0, &c);
    }
    assert!(!p.claim_trial(t0 + secs(0.5)));
    let mut now = t0 + secs(1.0);
    let mut expected = 1.0;
    for _ in 0..6 {
        assert!(p.claim_trial(now), "trial due at {expected}");
        // Only one caller gets it.
        assert!(!p.claim_trial(now));
        assert!(!p.admits(now));
        expected = (expected * 2.0f64).min(8.0);
        assert_eq!(
            p.on_connect(false, now, &c),
            Some(HealthChange::Ejected {
                backoff: secs(expected),
                trial_failed: true
            })
        );
        assert_eq!(p.backoff(), Some(secs(expected)));
        assert!(!p.admits(now + secs(expected) - secs(0.001)));
        now += secs(expected);
    }
    assert_eq!(p.backoff(), Some(secs(8.0)));
    // The trial succeeds: re-admitted, and the next ejection starts from the base again.
    assert!(p.claim_trial(now));
    assert_eq!(p.on_connect(true, now, &c), Some(HealthChange::Readmitted));
    assert!(!p.is_ejected() && p.admits(now));
    for _ in 0..3 {
        p.on_connect(false, now, &c);
    }
    assert_eq!(p.backoff(), Some(secs(1.0)));
}

#[test]
fn failures_of_connects_begun_before_the_ejection_do_not_extend_it() {
    let c = cfg();
    let t0 = Instant::now();
    let mut p = PassiveState::default();
    for _ in 0..3 {
        p.on_connect(false, t0, &c);
    }
    let before = p;
    // Seven more clients were already dialing when the third failure came back.
    for _ in 0..7 {
        assert_eq!(p.on_connect(false, t0 + secs(0.1), &c), None);
    }
    assert_eq!(p, before);
    // A success from one of them re-admits.
    assert_eq!(
        p.on_connect(true, t0 + secs(0.2), &c),
        Some(HealthChange::Readmitted)
    );
}

#[test]
fn a_trial_that_never_reports_is_given_up_after_another_backoff() {
    let c = cfg();
    let t0 = Instant::now();
    let mut p = PassiveState::default();
    for _ in 0..3 {
        p.on_connect(false, t0, &c);
    }
    assert!(p.claim_trial(t0 + secs(1.0)));
    assert!(!p.claim_trial(t0 + secs(1.9)));
    assert!(p.claim_trial(t0 + secs(2.0)));
}

#[test]
fn eject_after_zero_turns_passive_ejection_off() {
    let c = HealthConfig {
        eject_after: 0,
        ..cfg()
    };
    let t0 = Instant::now();
    let mut p = PassiveState::default();
    for _ in 0..100 {
        assert_eq!(p.on_connect(false, t0, &c), None);
    }
    assert!(p.admits(t0));
}

#[test]
fn the_published_word_follows_both_machines_and_the_operator_wins() {
    let c = cfg();
    let t0 = Instant::now();
    let h = BackendHealth::default();
    assert!(h.admits(t0) && h.is_admitted());
    assert_eq!(h.state(true), HealthState::Up);
    assert_eq!(h.state(false), HealthState::OperatorDown);
    // A healthy backend's success takes the lock-free path and changes nothing.
    assert_eq!(h.on_connect(true, t0, &c), None);

    for _ in 0..3 {
        h.on_connect(false, t0, &c);
    }
    assert_eq!(h.ejections(), 1);
    assert_eq!(h.state(true), HealthState::Ejected);
    assert_eq!(h.state(false), HealthState::OperatorDown);
    assert!(!h.admits(t0 + secs(0.5)) && !h.is_admitted());
    assert!(h.admits(t0 + secs(1.0)));
    // Checks take it down too: down wins over ejected, and no trial is let through.
    for _ in 0..3 {
        h.on_check(false, t0 + secs(1.0), &c);
    }
    assert_eq!(h.state(true), HealthState::Down);
    assert!(!h.admits(t0 + secs(5.0)));
    assert!(!h.claim_trial(t0 + secs(5.0)));
    for _ in 0..2 {
        h.on_check(true, t0 + secs(5.0), &c);
    }
    assert_eq!(h.state(true), HealthState::Ejected);
    assert!(h.admits(t0 + secs(5.0)));
    assert!(h.claim_trial(t0 + secs(5.0)));
    assert!(!h.admits(t0 + secs(5.0)));
    assert!(!h.claim_trial(t0 + secs(5.0)));
    assert_eq!(
        h.on_connect(true, t0 + secs(5.1), &c),
        Some(HealthChange::Readmitted)
    );
    assert!(h.is_admitted());
    assert_eq!(h.state(true), HealthState::Up);
}

#[test]
fn check_results_are_counted_by_outcome() {
    let s = CheckStats::default();
    s.record(Ok(()));
    s.record(Ok(()));
    s.record(Err(ConnectFailure::Timeout));
    assert_eq!(s.ok(), 2);
    assert_eq!(s.failed(ConnectFailure::Timeout), 1);
    assert_eq!(s.failed(ConnectFailure::Refused), 0);
}

#[derive(Debug, Clone)]
enum Event {
    Check(bool),
    Connect(bool),
    Claim,
    Wait(u16),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        any::<bool>().prop_map(Event::Check),
        any::<bool>().prop_map(Event::Connect),
        Just(Event::Claim),
        (0u16..3000).prop_map(Event::Wait),
    ]
}

proptest! {
    /// Over any sequence of results, claims and waits: the published word
    /// agrees with the machines, a backend is never let through during its
    /// backoff, the backoff stays between the base and the cap, and a
    /// backend that is not ejected has fewer than `eject_after` failures
    /// counted.
    #[test]
    fn the_word_agrees_with_the_machines(events in prop::collection::vec(event(), 1..200)) {
        let c = HealthConfig {
            rise: 2,
            fall: 2,
            eject_after: 3,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1600),
        };
        let h = BackendHealth::default();
        let mut now = Instant::now();
        for e in events {
            match e {
                Event::Check(ok) => { h.on_check(ok, now, &c); }
                Event::Connect(ok) => { h.on_connect(ok, now, &c); }
                Event::Claim => {
                    let before = h.machines.lock().passive;
                    let claimed = h.claim_trial(now);
                    let down = h.machines.lock().active.is_down();
                    prop_assert_eq!(claimed, !down && before.admits(now));
                }
                Event::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
            }
            let m = *h.machines.lock();
            prop_assert_eq!(h.admits(now), !m.active.is_down() && m.passive.admits(now));
            prop_assert_eq!(h.is_down(), m.active.is_down());
            prop_assert_eq!(h.is_ejected(), m.passive.is_ejected());
            match m.passive.backoff() {
                Some(b) => {
                    prop_assert!(b >= c.backoff && b <= c.backoff_max);
                    prop_assert!(m.passive.open_at().unwrap() <= now + b);
                }
                None => prop_assert!(m.passive.failures() < c.eject_after),
            }
        }
    }
}

#[test]
fn the_word_sits_beside_the_connection_count() {
    let l = crate::BackendLoad::default();
    let base = &l as *const _ as usize;
    let word = &l.health().word as *const _ as usize;
    assert!(word - base < 64, "{}", word - base);
}

#[test]
fn a_loop_ejects_at_once_for_the_longest_backoff() {
    let c = cfg();
    let t0 = Instant::now();
    let h = BackendHealth::default();
    assert!(h.admits(t0));
    assert_eq!(
        h.on_loop(t0, &c),
        HealthChange::Ejected {
            backoff: c.backoff_max,
            trial_failed: false
        }
    );
    assert_eq!(h.ejections(), 1);
    // A connect that completes meanwhile (the one that looped, seen to
    // complete after its loop) does not take the ejection back.
    assert_eq!(h.on_connect(true, t0 + secs(0.001), &c), None);
    assert!(!h.is_admitted());
    // Not a moment before the longest backoff has passed.
    assert!(!h.admits(t0 + c.backoff_max - secs(0.001)));
    assert!(h.admits(t0 + c.backoff_max));
    // A trial that connects re-admits it, as after any ejection.
    assert!(h.claim_trial(t0 + c.backoff_max));
    assert_eq!(
        h.on_connect(true, t0 + c.backoff_max, &c),
        Some(HealthChange::Readmitted)
    );
    assert!(h.is_admitted());
    // A loop while ejected pushes the trial out again.
    h.on_loop(t0 + secs(20.0), &c);
    assert_eq!(h.passive().open_at(), Some(t0 + secs(20.0) + c.backoff_max));
}
