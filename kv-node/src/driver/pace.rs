//! Write pacing (issue 12): a bulk load must not run ahead of the
//! snapshots it makes due.
//!
//! A snapshot is written in the background while writes go on; one at a
//! time. A load faster than the snapshot writer leaves snapshots due
//! behind it, and their writes then land on whatever comes after the load
//! (at 10M keys, 20-25 s of halved throughput right after a bulk load).
//! While the snapshots are behind (one in flight and the writes since its
//! capture already asking for the next, `Replica::snapshots_behind`), the
//! driver admits writes at half the rate the writer made its last snapshot
//! durable, in bytes: the writer catches up during the load, as a
//! log-structured store slows writes while its compaction lags (RocksDB's
//! delayed write rate). Single-key writes never come near the rate; only
//! batches do. A write waits at most [`MAX_HOLD`] (or a quarter of the
//! request timeout if that is shorter): pacing delays, it never fails a
//! request.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Writes are admitted at this share of the snapshot writer's rate while
/// the snapshots are behind: below one, so that they catch up.
const PACE_SHARE: f64 = 0.5;
/// Never slower than this many bytes per second, whatever was measured.
const MIN_RATE: f64 = (1 << 20) as f64;
/// The budget saved up while nothing was admitted, in time at the rate.
const BURST: Duration = Duration::from_millis(20);
/// The longest a write is held.
const MAX_HOLD: Duration = Duration::from_secs(1);
/// At most this many writes are held; beyond it they are admitted at once
/// (each holds a waiting client, so this is never reached in practice).
const MAX_HELD: usize = 16 * 1024;

/// Holds writes while the snapshots are behind and admits them in order at
/// the paced rate. Generic in what it holds, so that it is tested alone.
#[derive(Debug)]
pub(super) struct WritePacer<T> {
    /// Bytes per second the writer made its last timed snapshot durable at.
    writer_rate: Option<f64>,
    /// When the snapshot in flight started, if one is timed.
    write_started: Option<Instant>,
    /// Bytes that may be admitted now (may go below 0 after a large write).
    budget: f64,
    refilled_at: Option<Instant>,
    /// Held writes, oldest first: when each was held, its size, itself.
    held: VecDeque<(Instant, usize, T)>,
    /// The longest a write is held.
    max_hold: Duration,
}

impl<T> WritePacer<T> {
    /// A pacer for requests that time out after `request_timeout`.
    pub(super) fn new(request_timeout: Duration) -> Self {
        Self {
            writer_rate: None,
            write_started: None,
            budget: 0.0,
            refilled_at: None,
            held: VecDeque::new(),
            max_hold: MAX_HOLD.min(request_timeout / 4),
        }
    }

    /// Times the snapshot write in flight from `now`, unless it is timed
    /// already (called after every turn while one is in flight).
    pub(super) fn snapshot_in_flight(&mut self, now: Instant) {
        self.write_started.get_or_insert(now);
    }

    /// The snapshot write in flight ended: `bytes` written if it became
    /// durable (None: refused or overtaken; nothing learned).
    pub(super) fn snapshot_ended(&mut self, bytes: Option<u64>, now: Instant) {
        let started = self.write_started.take();
        if let (Some(started), Some(bytes)) = (started, bytes) {
            let took = now.duration_since(started).max(Duration::from_millis(1));
            self.writer_rate = Some(bytes as f64 / took.as_secs_f64());
        }
    }

    /// The rate writes are admitted at while the snapshots are behind, in
    /// bytes per second (None until a snapshot write was timed).
    pub(super) fn paced_rate(&self) -> Option<f64> {
        self.writer_rate
            .map(|rate| (rate * PACE_SHARE).max(MIN_RATE))
    }

    /// Offers a write of `bytes`: returns it if it may go now, else holds
    /// it (behind the writes held before it) and returns None.
    pub(super) fn offer(
        &mut self,
        behind: bool,
        bytes: usize,
        write: T,
        now: Instant,
    ) -> Option<T> {
        if self.held.len() >= MAX_HELD || (self.held.is_empty() && self.spend(behind, bytes, now)) {
            return Some(write);
        }
        self.held.push_back((now, bytes, write));
        None
    }

    /// The held writes that may go now, oldest first: those the budget
    /// covers, all of them once the snapshots are level again, and any held
    /// for the longest hold.
    pub(super) fn release(&mut self, behind: bool, now: Instant) -> Vec<T> {
        let mut released = Vec::new();
        while let Some(&(since, bytes, _)) = self.held.front() {
            let overdue = now.duration_since(since) >= self.max_hold;
            if !overdue && !self.spend(behind, bytes, now) {
                break;
            }
            if let Some((_, _, write)) = self.held.pop_front() {
                released.push(write);
            }
        }
        released
    }

    /// Writes held now.
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes `bytes` from the budget if it has any left; always true when
    /// the snapshots are level or no rate is known yet.
    fn spend(&mut self, behind: bool, bytes: usize, now: Instant) -> bool {
        let Some(rate) = self.paced_rate().filter(|_| behind) else {
            self.refilled_at = None;
            return true;
        };
        let burst = rate * BURST.as_secs_f64();
        self.budget = match self.refilled_at {
            Some(at) => (self.budget + rate * now.duration_since(at).as_secs_f64()).min(burst),
            None => burst,
        };
        self.refilled_at = Some(now);
        if self.budget <= 0.0 {
            return false;
        }
        self.budget -= bytes as f64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    /// A pacer whose writer made 40 MiB durable in one second: writes go at
    /// 20 MiB/s while behind.
    fn timed_pacer(t0: Instant) -> WritePacer<u32> {
        let mut pacer = WritePacer::new(Duration::from_secs(5));
        pacer.snapshot_in_flight(t0);
        pacer.snapshot_ended(Some(40 * MB), t0 + Duration::from_secs(1));
        pacer
    }

    #[test]
    fn level_snapshots_or_an_unknown_rate_hold_nothing() {
        let t0 = Instant::now();
        let mut untimed = WritePacer::new(Duration::from_secs(5));
        for i in 0..1_000 {
            assert_eq!(untimed.offer(true, 1 << 20, i, t0), Some(i), "no rate yet");
        }
        let mut pacer = timed_pacer(t0);
        for i in 0..1_000 {
            assert_eq!(pacer.offer(false, 1 << 20, i, t0), Some(i), "level");
        }
        assert_eq!(pacer.held(), 0);
    }

    #[test]
    fn the_rate_is_half_the_writers_and_never_below_the_floor() {
        let t0 = Instant::now();
        assert_eq!(timed_pacer(t0).paced_rate(), Some((20 * MB) as f64));
        let mut slow = WritePacer::<u32>::new(Duration::from_secs(5));
        slow.snapshot_in_flight(t0);
        slow.snapshot_ended(Some(1_000), t0 + Duration::from_secs(10));
        assert_eq!(slow.paced_rate(), Some(MIN_RATE));
        // A write refused or overtaken teaches nothing.
        let mut pacer = timed_pacer(t0);
        pacer.snapshot_in_flight(t0 + Duration::from_secs(2));
        pacer.snapshot_ended(None, t0 + Duration::from_secs(3));
        assert_eq!(pacer.paced_rate(), Some((20 * MB) as f64));
    }

    /// Behind, what goes through in a second is the paced rate (plus one
    /// burst and one write), in the order offered.
    #[test]
    fn behind_writes_go_in_order_at_the_paced_rate() {
        let t0 = Instant::now();
        let mut pacer = timed_pacer(t0);
        let write_bytes = 64 << 10;
        let mut admitted = Vec::new();
        let mut next = 0u32;
        // 64 clients, each with one write outstanding: each admitted write
        // is followed by a new one a millisecond later, for a second.
        let mut to_offer = 64;
        for ms in 0..1_000u64 {
            let now = t0 + Duration::from_millis(ms);
            let mut answered = 0;
            for write in pacer.release(true, now) {
                admitted.push(write);
                answered += 1;
            }
            for _ in 0..to_offer {
                if let Some(write) = pacer.offer(true, write_bytes, next, now) {
                    admitted.push(write);
                    answered += 1;
                }
                next += 1;
            }
            to_offer = answered;
        }
        let bytes = admitted.len() as f64 * write_bytes as f64;
        let rate = pacer.paced_rate().unwrap();
        assert!(
            bytes >= rate * 0.9 && bytes <= rate + rate * 0.02 + 2.0 * write_bytes as f64,
            "{bytes} bytes admitted in a second at {rate} bytes/s"
        );
        assert!(admitted.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(pacer.held() + to_offer, 64, "every client waits or writes");
    }

    #[test]
    fn held_writes_all_go_once_level_and_none_waits_past_the_bound() {
        let t0 = Instant::now();
        let mut pacer = timed_pacer(t0);
        // Spend the burst, then hold.
        let mut held = 0;
        for i in 0..100 {
            if pacer.offer(true, 1 << 20, i, t0).is_none() {
                held += 1;
            }
        }
        assert_eq!(held, 99, "one write spends the 20 ms burst");
        // Released as the driver's turns come, every 10 ms.
        let mut released = Vec::new();
        for ms in (10..=100).step_by(10) {
            released.extend(pacer.release(true, t0 + Duration::from_millis(ms)));
        }
        assert_eq!(released, [1, 2], "2 MiB in 100 ms at 20 MiB/s");
        let later = t0 + Duration::from_millis(100);
        assert_eq!(pacer.release(false, later).len(), 97, "level: all");
        assert_eq!(pacer.held(), 0);
        // Behind for long: held writes go after MAX_HOLD however little
        // budget there is.
        for i in 0..10 {
            let _ = pacer.offer(true, 100 << 20, i, later);
        }
        assert!(pacer.release(true, later + MAX_HOLD / 2).len() < 10);
        let overdue = pacer.release(true, later + MAX_HOLD);
        assert!(!overdue.is_empty());
        assert_eq!(pacer.held(), 0, "none waits past the bound");
    }

    #[test]
    fn a_short_request_timeout_shortens_the_hold() {
        let t0 = Instant::now();
        let mut pacer = WritePacer::new(Duration::from_millis(400));
        pacer.snapshot_in_flight(t0);
        pacer.snapshot_ended(Some(1 << 20), t0 + Duration::from_secs(1));
        assert_eq!(pacer.offer(true, 100 << 20, 0, t0), Some(0));
        assert_eq!(pacer.offer(true, 1, 1, t0), None);
        assert!(
            pacer
                .release(true, t0 + Duration::from_millis(99))
                .is_empty()
        );
        assert_eq!(pacer.release(true, t0 + Duration::from_millis(100)), [1]);
    }
}
