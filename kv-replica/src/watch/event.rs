//! Watch events and the recorder the state machine writes them into.

use crate::state_machine::Key;
use std::fmt;
use std::sync::Arc;

/// One change to one key, as a watcher sees it (API.md, Watch).
///
/// Key and value are shared with the state machine's map: recording an
/// event copies two reference counts, never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The revision (log index) of the entry that made the change.
    pub revision: u64,
    pub key: Key,
    /// The new value of a put; `None` for a delete.
    pub value: Option<Arc<str>>,
}

impl WatchEvent {
    pub fn put(revision: u64, key: &str, value: &str) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.into(),
            value: Some(value.into()),
        }
    }

    pub fn delete(revision: u64, key: &str) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.into(),
            value: None,
        }
    }

    pub fn is_delete(&self) -> bool {
        self.value.is_none()
    }

    /// What the event costs a history or a batch: key, value and the JSON
    /// framing around them.
    pub fn cost_bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, |v| v.len()) + EVENT_OVERHEAD_BYTES
    }
}

/// What one event costs beyond its key and value: the JSON framing of its
/// line (`{"revision":N,"type":"delete","key":"","value":""}`).
pub const EVENT_OVERHEAD_BYTES: usize = 64;

impl fmt::Debug for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "put@{} {:?}={:?}", self.revision, self.key, value),
            None => write!(f, "delete@{} {:?}", self.revision, self.key),
        }
    }
}

/// The events applied since the last [`EventRecorder::take`], recorded
/// only when switched on (a replica nobody watches pays one branch per
/// change).
///
/// Not part of the replicated state: equality ignores it, and a clone
/// (a snapshot capture) starts empty and switched off, so recording never
/// reaches a snapshot, a digest or a comparison between replicas.
#[derive(Default)]
pub struct EventRecorder {
    on: bool,
    pending: Vec<WatchEvent>,
}

impl EventRecorder {
    pub fn set_on(&mut self, on: bool) {
        self.on = on;
        if !on {
            self.pending = Vec::new();
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Records a put (`value` set) or a delete of `key` at `revision`.
    pub fn record(&mut self, revision: u64, key: &Key, value: Option<&Arc<str>>) {
        if self.on {
            self.pending.push(WatchEvent {
                revision,
                key: key.clone(),
                value: value.map(Arc::clone),
            });
        }
    }

    /// The events recorded since the last call, in the order applied.
    pub fn take(&mut self) -> Vec<WatchEvent> {
        std::mem::take(&mut self.pending)
    }
}

impl Clone for EventRecorder {
    fn clone(&self) -> Self {
        EventRecorder::default()
    }
}

impl PartialEq for EventRecorder {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for EventRecorder {}

impl fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EventRecorder(on: {}, pending: {})",
            self.on,
            self.pending.len()
        )
    }
}
