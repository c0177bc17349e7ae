//! The edge's life cycle as the health endpoints report it: starting
//! (loading routing.db and GeoIP, binding listeners), ready, draining.
//! `/healthz` answers as long as the process serves HTTP; `/readyz` only
//! while [`Health::is_ready`].

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the edge is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading, or binding the client listeners.
    Starting,
    /// Routing and GeoIP loaded, listeners bound: taking clients.
    Ready,
    /// Stopped accepting; open connections are finishing.
    Draining,
}

impl Phase {
    /// Lower-case word, as `/readyz` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
        }
    }
}

/// The shared phase: one atomic, set by the run command, read by the
/// health endpoints and the metrics.
#[derive(Debug, Default)]
pub struct Health {
    phase: AtomicU8,
}

impl Health {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Whether clients should be sent here.
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Ready
    }

    /// Marks the edge ready (once routing, GeoIP and listeners are up).
    pub fn set_ready(&self) {
        // Never back from draining.
        let _ = self
            .phase
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Marks the edge draining: not ready again until it restarts.
    pub fn set_draining(&self) {
        self.phase.store(2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_ready_draining_and_never_back() {
        let h = Health::default();
        assert_eq!(h.phase(), Phase::Starting);
        assert!(!h.is_ready());
        h.set_ready();
        assert!(h.is_ready());
        h.set_draining();
        h.set_ready();
        assert_eq!(h.phase(), Phase::Draining);
        assert!(!h.is_ready());
    }
}
