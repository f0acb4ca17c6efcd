//! Threads that do bulk work beside the driver (writing a snapshot,
//! decoding one from the leader) run at a lower scheduling priority: on a
//! busy machine the driver's ticks and heartbeats come first, so that a
//! 100 MB snapshot never delays them past an election timeout.

/// The nice value of background threads (0 normal, 19 lowest).
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority (Linux: a per-thread nice value;
/// `setpriority(PRIO_PROCESS, tid)` applies to that thread alone). Best
/// effort: on failure the thread runs at the normal priority.
pub fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if let Err(error) =
            rustix::process::setpriority_process(Some(tid), current.max(BACKGROUND_NICE))
        {
            tracing::debug!(%error, "background thread keeps the normal priority");
        }
    }
}

/// Drops `garbage` on a low-priority thread of its own: freeing half a
/// million log entries or a replaced state machine of a million keys
/// holds a thread for a tenth of a second or more, which the driver
/// thread (ticks, heartbeats) cannot spare. Inline if no thread starts.
pub fn free_later<T: Send + 'static>(garbage: T) {
    let spawned = std::thread::Builder::new()
        .name("free-later".into())
        .spawn(move || {
            lower_this_threads_priority();
            drop(garbage);
        });
    if let Err(error) = spawned {
        // The closure, and the garbage with it, was dropped here.
        tracing::debug!(%error, "freed on the calling thread");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The nice value applies to the calling thread only.
    #[test]
    fn only_the_calling_thread_is_lowered() {
        let nice_of = |tid| rustix::process::getpriority_process(Some(tid)).unwrap();
        let caller = rustix::thread::gettid();
        let before = nice_of(caller);
        let lowered = std::thread::spawn(move || {
            super::lower_this_threads_priority();
            nice_of(rustix::thread::gettid())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, before.max(super::BACKGROUND_NICE));
        assert_eq!(nice_of(caller), before, "the caller's thread is untouched");
    }
}
