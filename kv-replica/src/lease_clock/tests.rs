//! The leader's countdowns: counting, keepalives, restarts on a new
//! leadership, and expiries proposed once and again when lost.

use super::*;

const TICK_MS: u64 = 10;

/// Syncs as leader of `term` with `leases`, as if a new entry was applied.
fn leading(clock: &mut LeaseClock, term: u64, leases: &[(u64, u64)]) {
    let applied = clock.synced_at.map_or(1, |index| index + 1);
    clock.sync(Some(Term(term)), applied, leases.iter().copied());
}

/// Ticks until the clock asks for an expiry; returns the ticks it took
/// and the leases due (bounded).
fn ticks_until_due(clock: &mut LeaseClock) -> (u64, Vec<u64>) {
    for ticks in 1..=100_000 {
        let due = clock.tick();
        if !due.is_empty() {
            return (ticks, due);
        }
    }
    panic!("no lease came due in 100,000 ticks");
}

#[test]
fn a_lease_expires_after_its_ttl_in_ticks_plus_one() {
    let mut clock = LeaseClock::new(TICK_MS);
    leading(&mut clock, 1, &[(7, 1_000)]);
    assert_eq!(clock.remaining_ms(7), Some(1_000));
    let (ticks, due) = ticks_until_due(&mut clock);
    assert_eq!(due, [7]);
    assert_eq!(ticks, 1_000 / TICK_MS + 1);
    // A TTL that is not a whole number of ticks rounds up.
    let mut clock = LeaseClock::new(TICK_MS);
    leading(&mut clock, 1, &[(7, 1_005)]);
    assert_eq!(ticks_until_due(&mut clock).0, 102);
}

#[test]
fn a_keepalive_restarts_the_countdown_at_the_full_ttl() {
    let mut clock = LeaseClock::new(TICK_MS);
    leading(&mut clock, 1, &[(7, 1_000)]);
    for _ in 0..90 {
        assert!(clock.tick().is_empty());
    }
    assert_eq!(clock.remaining_ms(7), Some(100));
    clock.keepalive(7, 1_000).unwrap();
    assert_eq!(clock.remaining_ms(7), Some(1_000));
    assert_eq!(ticks_until_due(&mut clock).0, 101);
}

#[test]
fn becoming_leader_again_or_in_a_new_term_restarts_every_countdown() {
    let mut clock = LeaseClock::new(TICK_MS);
    leading(&mut clock, 1, &[(7, 1_000), (9, 2_000)]);
    for _ in 0..80 {
        clock.tick();
    }
    // Leadership lost: nothing counts, keepalives are refused.
    clock.sync(None, 5, [(7, 1_000), (9, 2_000)].into_iter());
    assert!(clock.tick().is_empty());
    assert_eq!(clock.remaining_ms(7), None);
    assert_eq!(clock.keepalive(7, 1_000), Err(KeepaliveRefused::NotLeader));
    // Leading again, in a later term: full TTL for every lease.
    leading(&mut clock, 3, &[(7, 1_000), (9, 2_000)]);
    assert_eq!(clock.remaining_ms(7), Some(1_000));
    assert_eq!(clock.remaining_ms(9), Some(2_000));
    // A new term without a tick in between restarts too.
    for _ in 0..50 {
        clock.tick();
    }
    leading(&mut clock, 4, &[(7, 1_000), (9, 2_000)]);
    assert_eq!(clock.remaining_ms(7), Some(1_000));
}

#[test]
fn an_expiry_is_asked_for_once_then_again_only_if_it_was_lost() {
    let mut clock = LeaseClock::new(TICK_MS);
    leading(&mut clock, 1, &[(7, 100)]);
    let (_, due) = ticks_until_due(&mut clock);
    assert_eq!(due, [7]);
    // Not reported proposed (the proposal was refused): asked again at once.
    assert_eq!(clock.tick(), [7]);
    clock.expire_proposed(7);
    assert_eq!(clock.remaining_ms(7), Some(0));
    // While it is in flight, keepalives are refused and nothing is asked.
    assert_eq!(clock.keepalive(7, 100), Err(KeepaliveRefused::NotFound));
    for _ in 1..EXPIRE_RETRY_TICKS {
        assert!(clock.tick().is_empty());
    }
    // The entry never removed the lease: asked again, once.
    assert_eq!(clock.tick(), [7]);
    clock.expire_proposed(7);
    assert!(clock.tick().is_empty());
    // Once applied, the lease is gone from the state machine and forgotten.
    leading(&mut clock, 1, &[]);
    assert_eq!(clock.remaining_ms(7), None);
    for _ in 0..EXPIRE_RETRY_TICKS {
        assert!(clock.tick().is_empty());
    }
}

#[test]
fn a_new_lease_starts_at_its_full_ttl_and_a_revoked_one_is_forgotten() {
    let mut clock = LeaseClock::new(TICK_MS);
    leading(&mut clock, 1, &[(7, 1_000)]);
    for _ in 0..50 {
        clock.tick();
    }
    leading(&mut clock, 1, &[(7, 1_000), (8, 1_000)]);
    assert_eq!(clock.remaining_ms(7), Some(500));
    assert_eq!(clock.remaining_ms(8), Some(1_000));
    leading(&mut clock, 1, &[(8, 1_000)]);
    assert_eq!(clock.remaining_ms(7), None);
    assert_eq!(clock.keepalive(7, 1_000), Err(KeepaliveRefused::NotFound));
}

#[test]
fn a_sync_at_the_same_applied_index_and_term_changes_nothing() {
    let mut clock = LeaseClock::new(TICK_MS);
    clock.sync(Some(Term(1)), 4, [(7, 1_000)].into_iter());
    // The same index: the leases cannot have changed, the list is not read.
    clock.sync(Some(Term(1)), 4, std::iter::empty());
    assert_eq!(clock.remaining_ms(7), Some(1_000));
    clock.sync(Some(Term(1)), 5, std::iter::empty());
    assert_eq!(clock.remaining_ms(7), None);
}

#[test]
fn a_ttl_too_large_to_count_saturates_instead_of_wrapping_to_an_early_expiry() {
    let clock = LeaseClock::new(1);
    assert_eq!(clock.ticks_for(u64::MAX), u64::MAX);
    assert_eq!(clock.ticks_for(1_000), 1_001);
}
