//! Linearizability checking of key-value client histories.
