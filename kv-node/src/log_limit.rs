//! Rate-limited logging for events a remote party can repeat at will (a
//! refused peer batch, a misconfigured member): the first is logged, then at
//! most one line per interval saying how many were suppressed meanwhile, so
//! that nobody can flood the log. The count of every event is in `/metrics`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeated event is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct LogLimit {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// Whether to log this occurrence now (at `now`), and how many were
    /// suppressed since the last line that was logged.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= LOG_INTERVAL);
        if due {
            state.last_logged = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counts_what_it_suppressed() {
        let limit = LogLimit::default();
        let start = Instant::now();
        assert_eq!(limit.admit(start), Some(0));
        for i in 1..=5 {
            assert_eq!(limit.admit(start + Duration::from_millis(i)), None);
        }
        assert_eq!(limit.admit(start + LOG_INTERVAL), Some(5));
        assert_eq!(
            limit.admit(start + LOG_INTERVAL + Duration::from_secs(1)),
            None
        );
        assert_eq!(limit.admit(start + 2 * LOG_INTERVAL), Some(1));
    }
}
