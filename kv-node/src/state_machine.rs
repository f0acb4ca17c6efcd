//! The deterministic key-value state machine.
