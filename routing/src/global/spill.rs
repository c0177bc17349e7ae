//! Spill without stampedes: when the nearest backends are at their soft
//! limit, several edges acting on the same few-hundred-millisecond-old
//! figures would all pick the same next-best backend and push it over. An
//! edge instead picks among the next few with room, each in proportion to
//! its remaining headroom, so the edges' choices spread the way the room
//! is spread. A pure function: the caller draws the random number.

/// Picks one of the first `k` entries of `headroom` (candidates in order
/// of preference; each value the room left below the soft limit, by the
/// fleet's load) that has room, with probability proportional to that
/// room, by `draw` in `[0, 1)`. `None` when none of them has room.
pub fn choose(headroom: &[u32], k: usize, draw: f64) -> Option<usize> {
    let window = &headroom[..headroom.len().min(k)];
    let total: u64 = window.iter().map(|h| u64::from(*h)).sum();
    if total == 0 {
        return None;
    }
    let draw = if draw.is_finite() {
        draw.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // The point in [0, total) the draw falls on.
    let mut point = ((draw * total as f64) as u64).min(total - 1);
    for (i, h) in window.iter().enumerate() {
        let h = u64::from(*h);
        if point < h {
            return Some(i);
        }
        point -= h;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn room_is_shared_in_proportion_and_full_ones_never_chosen() {
        assert_eq!(choose(&[0, 0, 0], 3, 0.5), None);
        assert_eq!(choose(&[], 3, 0.5), None);
        assert_eq!(choose(&[0, 5, 0, 9], 3, 0.99), Some(1));
        assert_eq!(
            choose(&[0, 0, 0, 9], 3, 0.2),
            None,
            "only the first k count"
        );
        // 1000 evenly spread draws over headroom 10, 30, 60.
        let mut counts = [0u32; 3];
        for i in 0..1000 {
            counts[choose(&[10, 30, 60], 3, f64::from(i) / 1000.0).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 300, 600]);
        assert_eq!(choose(&[4], 3, f64::NAN), Some(0));
        assert_eq!(choose(&[4, 4], 3, 1.0), Some(1));
    }

    proptest! {
        #[test]
        fn a_choice_always_has_room(
            headroom in proptest::collection::vec(0..50u32, 0..8),
            k in 1..5usize,
            draw in proptest::num::f64::ANY,
        ) {
            if let Some(i) = choose(&headroom, k, draw) {
                prop_assert!(i < k && headroom[i] > 0);
            } else {
                prop_assert!(headroom.iter().take(k).all(|h| *h == 0));
            }
        }
    }
}
