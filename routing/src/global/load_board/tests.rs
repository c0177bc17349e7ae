//! Tests take one reading of the clock as their origin; the core never reads it.
#![allow(clippy::disallowed_methods)]

use super::*;

fn report(pairs: &[(&str, u32)]) -> HashMap<BackendId, RemoteLoad> {
    pairs
        .iter()
        .map(|(b, live)| {
            (
                BackendId::new(b),
                RemoteLoad {
                    live: *live,
                    accept_rate: 0.0,
                },
            )
        })
        .collect()
}

#[test]
fn fresh_reports_add_up_and_stale_ones_fade_out() {
    let t0 = Instant::now();
    let mut board = LoadBoard::new(PopId::new("eu"), Duration::from_secs(1));
    let b = BackendId::new("us-1");
    assert!(board.handle_report(PopId::new("us"), 1, report(&[("us-1", 30)]), t0));
    assert!(board.handle_report(PopId::new("sa"), 1, report(&[("us-1", 5), ("sa-1", 9)]), t0));
    // Its own report, echoed back, is not counted.
    assert!(!board.handle_report(PopId::new("eu"), 9, report(&[("us-1", 100)]), t0));
    assert_eq!(board.remote(&b, t0), 35);
    assert_eq!(board.by_pop(&b, t0).len(), 2);
    assert_eq!(board.freshest_age(t0), Some(Duration::ZERO));
    // A late, older report changes nothing; a newer one replaces.
    let t1 = t0 + Duration::from_millis(600);
    assert!(!board.handle_report(PopId::new("us"), 1, report(&[("us-1", 1)]), t1));
    assert!(board.handle_report(PopId::new("us"), 2, report(&[("us-1", 40)]), t1));
    assert_eq!(board.remote(&b, t1), 45);
    // sa falls silent: after a second its figures no longer count.
    let t2 = t0 + Duration::from_millis(1200);
    assert_eq!(board.remote(&b, t2), 40);
    assert_eq!(board.reporting(t2), 1);
    assert_eq!(board.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    board.handle_timeout(t2);
    assert_eq!(board.poll_timeout(), Some(t1 + Duration::from_secs(1)));
    let t3 = t1 + Duration::from_secs(2);
    assert_eq!(board.remote(&b, t3), 0);
    assert_eq!(board.freshest_age(t3), None);
}
