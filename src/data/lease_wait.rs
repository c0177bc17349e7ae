//! A client's short wait for a lease (a fleet with `--nats`): when the
//! backend that would serve it is another POP's and this edge is still
//! asking the owner for slots of it, the connection asks for the request
//! to go out at once ([`LeaseWait::want`]), waits up to
//! [`LeaseWait::patience`] for an answer ([`LeaseWait::granted`]), and
//! decides again, instead of going at once to the next best backend. The
//! lease task of the control plane is on the other side of both signals.
//!
//! The tokio pipeline waits on [`LeaseWait::next_answer`]; the epoll
//! worker, which has no runtime, keeps its waiting clients itself and
//! registers a wake-up of its loop ([`LeaseWait::on_answer`]) that every
//! answer calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// A wake-up called at each lease answer (an epoll worker's waker).
pub type OnAnswer = Box<dyn Fn() + Send + Sync>;

/// The two signals between connections waiting for a lease and the task
/// that asks for leases.
pub struct LeaseWait {
    /// A connection wants a lease asked for now.
    wanted: Notify,
    /// A lease answer arrived.
    answered: Notify,
    /// Answers so far: read before a decision, so that one arriving before
    /// the connection signs up for the next is not waited for in vain.
    answers: AtomicU64,
    /// How long a connection waits for one.
    patience: Duration,
    /// Called at each answer (registered once per epoll worker, at its
    /// start; the lock is taken there and at an answer, never across an
    /// await).
    on_answer: Mutex<Vec<OnAnswer>>,
}

impl std::fmt::Debug for LeaseWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseWait")
            .field("answers", &self.answers())
            .field("patience", &self.patience)
            .finish_non_exhaustive()
    }
}

impl LeaseWait {
    /// Connections wait up to `patience` for a lease.
    pub fn new(patience: Duration) -> Self {
        LeaseWait {
            wanted: Notify::new(),
            answered: Notify::new(),
            answers: AtomicU64::new(0),
            patience,
            on_answer: Mutex::new(Vec::new()),
        }
    }

    /// Registers `wake`, called at every answer from now on.
    pub fn on_answer(&self, wake: OnAnswer) {
        self.on_answer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(wake);
    }

    /// How long a connection waits.
    pub fn patience(&self) -> Duration {
        self.patience
    }

    /// A connection wants the leases wanted asked for now.
    pub fn want(&self) {
        self.wanted.notify_one();
    }

    /// Completes when a connection wants leases asked for (the lease task).
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// An answer to a lease request arrived: every waiting connection
    /// decides again.
    pub fn answered(&self) {
        self.answers.fetch_add(1, Ordering::Release);
        self.answered.notify_waiters();
        for wake in self
            .on_answer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            wake();
        }
    }

    /// Answers so far (a connection reads it before deciding).
    pub fn answers(&self) -> u64 {
        self.answers.load(Ordering::Acquire)
    }

    /// Waits for the next answer, at most until `deadline`; `armed`, taken
    /// before this is called, catches an answer arriving in between.
    pub async fn granted(
        &self,
        armed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        deadline: tokio::time::Instant,
    ) {
        let _ = tokio::time::timeout_at(deadline, armed).await;
    }

    /// A future completing at the next answer, to arm before deciding.
    pub fn next_answer(&self) -> tokio::sync::futures::Notified<'_> {
        self.answered.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_answer_wakes_the_waiting_and_patience_bounds_the_wait() {
        let w = LeaseWait::new(Duration::from_millis(250));
        // An answer between arming and waiting is not missed, and counted.
        let armed = w.next_answer();
        tokio::pin!(armed);
        armed.as_mut().enable();
        let before = w.answers();
        w.answered();
        assert_eq!(w.answers(), before + 1);
        let t = tokio::time::Instant::now();
        let deadline = t + w.patience();
        w.granted(armed.as_mut(), deadline).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
        // No answer: back at the deadline.
        let armed = w.next_answer();
        tokio::pin!(armed);
        armed.as_mut().enable();
        w.granted(armed.as_mut(), deadline).await;
        assert_eq!(t.elapsed(), Duration::from_millis(250));
        // A want reaches the lease task even when it is not waiting yet.
        w.want();
        tokio::time::timeout(Duration::from_secs(1), w.wanted())
            .await
            .unwrap();
    }

    #[test]
    fn every_answer_calls_each_registered_wake_up() {
        use std::sync::Arc;
        let w = LeaseWait::new(Duration::from_millis(250));
        let woken = Arc::new(AtomicU64::new(0));
        for _ in 0..2 {
            let woken = Arc::clone(&woken);
            w.on_answer(Box::new(move || {
                woken.fetch_add(1, Ordering::Relaxed);
            }));
        }
        w.answered();
        w.answered();
        assert_eq!(woken.load(Ordering::Relaxed), 4);
        assert_eq!(w.answers(), 2);
    }
}
