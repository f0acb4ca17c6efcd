//! Polling before sleeping (`--spin-wait-us`): after a light turn the
//! driver keeps polling its channels and sockets for a short while instead
//! of parking its thread at once.
//!
//! Why: one lone write crosses about eight thread hand-offs (HTTP worker,
//! driver, WAL thread, the follower's driver and WAL thread, back). On a
//! virtual machine whose idle vCPUs halt, each hand-off to a sleeping
//! thread costs 30-40 us, as much as an fsync's share of the write; a
//! thread that is still polling when its input arrives takes it in a few
//! microseconds, and its vCPU never halts, so the other threads' wake-ups
//! on it are cheap too (measured in BENCHMARKS.md, "Stop 34").
//!
//! When it must not: under load the driver has work queued anyway, and a
//! polling thread would take CPU from the threads that produce that work
//! and cut the batching of what arrives while it sleeps. So it polls only
//! after a light turn (woken by one client request, one peer batch or one
//! acknowledgement of the persist stage, with nothing else queued), only
//! up to the budget, and it gives the CPU up (`sched_yield`) between
//! polls, stopping at once when another thread took the CPU for longer
//! than [`CONTENDED`]. Ticks never start a poll: an idle cluster costs
//! nothing but the poll after each heartbeat.
//!
//! What it still costs: when every CPU is busy, a few percent of the
//! throughput at 64 connections (about 11 % of linearizable gets), which
//! no signal inside the guest predicts (a polling vCPU slows its busy
//! sibling on the host). `--spin-wait-us 0` turns it off.

use std::time::{Duration, Instant};

/// A yield that gave the CPU away for longer than this means another
/// thread wanted it: the poll ends and the driver sleeps.
const CONTENDED: Duration = Duration::from_micros(20);

/// A poll that ended without an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PollEnded {
    /// From the poll's start.
    pub(super) lasted: Duration,
    /// The whole budget went by: CPU spent for nothing (else another
    /// thread took the CPU and the poll stopped early).
    pub(super) ran_out: bool,
}

/// The driver's poll-before-sleep state.
#[derive(Debug)]
pub(super) struct SpinWait {
    budget: Duration,
    /// While polling: when the poll gives up (it began `budget` before).
    until: Option<Instant>,
}

impl SpinWait {
    /// `budget` zero turns polling off.
    pub(super) fn new(budget: Duration) -> SpinWait {
        SpinWait {
            budget,
            until: None,
        }
    }

    /// After a turn: a light one starts a poll, any other leaves the loop
    /// to sleep.
    pub(super) fn after_turn(&mut self, light: bool) {
        self.until = (light && !self.budget.is_zero()).then(|| Instant::now() + self.budget);
    }

    /// Whether the loop should poll rather than sleep.
    pub(super) fn polling(&self) -> bool {
        self.until.is_some()
    }

    /// Called when a poll found nothing: gives the CPU to any other thread
    /// that wants it, and says whether to poll again. `None` to poll
    /// again; once the budget is spent or another thread took the CPU, how
    /// the poll ended, and the loop then sleeps until its next input.
    pub(super) fn poll_again(&mut self) -> Option<PollEnded> {
        let until = self.until?;
        let before = Instant::now();
        std::thread::yield_now();
        let after = Instant::now();
        let ran_out = after >= until;
        if ran_out || after - before > CONTENDED {
            let lasted = self.stop(after);
            return Some(PollEnded { lasted, ran_out });
        }
        None
    }

    /// An input arrived: the time the poll lasted if one was running (the
    /// input was taken without a wake-up), else `None`.
    pub(super) fn input_arrived(&mut self) -> Option<Duration> {
        self.until.is_some().then(|| self.stop(Instant::now()))
    }

    fn stop(&mut self, now: Instant) -> Duration {
        self.until.take().map_or(Duration::ZERO, |until| {
            now.saturating_duration_since(until - self.budget)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_budget_never_polls() {
        let mut spin = SpinWait::new(Duration::ZERO);
        spin.after_turn(true);
        assert!(!spin.polling());
        assert_eq!(spin.input_arrived(), None);
    }

    #[test]
    fn a_light_turn_polls_until_the_budget_is_spent() {
        let mut spin = SpinWait::new(Duration::from_millis(2));
        // Before the poll starts: the time it reports runs from its start.
        let started = Instant::now();
        spin.after_turn(true);
        assert!(spin.polling());
        let mut polls = 0u32;
        // Bounded: the budget ends it within 2 ms on an idle CPU, a busy
        // one ends it at its first long yield.
        let lasted = loop {
            if let Some(ended) = spin.poll_again() {
                break ended.lasted;
            }
            polls += 1;
            assert!(polls < 10_000_000, "the poll never ended");
        };
        assert!(!spin.polling());
        assert!(lasted <= started.elapsed());
        assert_eq!(spin.input_arrived(), None, "an ended poll takes no input");
    }

    #[test]
    fn a_heavy_turn_leaves_the_loop_to_sleep() {
        let mut spin = SpinWait::new(Duration::from_secs(60));
        spin.after_turn(true);
        assert!(spin.polling());
        spin.after_turn(false);
        assert!(!spin.polling());
        assert_eq!(spin.input_arrived(), None);
    }

    #[test]
    fn an_input_during_a_poll_ends_it_and_tells_how_long_it_lasted() {
        let mut spin = SpinWait::new(Duration::from_secs(60));
        spin.after_turn(true);
        std::thread::sleep(Duration::from_millis(2));
        let lasted = spin.input_arrived().expect("it was polling");
        assert!(lasted >= Duration::from_millis(2));
        assert!(!spin.polling());
        assert_eq!(spin.input_arrived(), None);
    }

    #[test]
    fn a_poll_whose_budget_is_spent_says_it_ran_out() {
        // A nanosecond's budget is spent by the time the first yield returns.
        let mut spin = SpinWait::new(Duration::from_nanos(1));
        spin.after_turn(true);
        let ended = spin.poll_again().expect("the budget is spent");
        assert!(ended.ran_out);
        assert!(!spin.polling());
        assert_eq!(spin.poll_again(), None, "an ended poll polls no more");
    }
}
