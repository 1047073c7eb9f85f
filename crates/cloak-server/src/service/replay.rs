//! The replay cache for encapsulated requests: each request's random id is remembered for
//! twice the freshness window, by the monotonic clock, so a request whose time is still within
//! the window when it comes again is recognised. Bounded: when full of live ids, new requests
//! are refused (503) rather than old ids forgotten early.
//!
//! What the host can still do: the enclave reads wall-clock time from the host. A host that
//! sets the clock back by more than the window, after an id has left the cache, can make an old
//! request look fresh to the same server process. Restarting the server does not help it: a
//! new process has a new HPKE key, and requests sealed to the old one no longer open.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cloak_proto::freshness::{ID_LEN, WINDOW_SECONDS, within_window};

/// Why an encapsulated request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplayRefusal {
    /// Its time is outside the window around the server's clock.
    Stale,
    /// Its id was seen within the window: a replay.
    Replayed,
    /// The cache is full of ids still within the window.
    Full,
}

/// Ids seen recently, with when each may be forgotten.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    capacity: usize,
    keep: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ids: HashSet<[u8; ID_LEN]>,
    /// (forget at, id), oldest first.
    expiries: BTreeSet<(Instant, [u8; ID_LEN])>,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            keep: Duration::from_secs(2 * WINDOW_SECONDS),
            state: Mutex::new(State::default()),
        }
    }

    /// Admits a request made at `time` (Unix seconds) with `id`, when the server's clock reads
    /// `now`; remembers the id.
    pub(crate) fn admit(&self, time: u64, id: [u8; ID_LEN], now: u64) -> Result<(), ReplayRefusal> {
        if !within_window(time, now) {
            return Err(ReplayRefusal::Stale);
        }
        let monotonic = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&(at, old)) = state.expiries.first() {
            if at > monotonic {
                break;
            }
            state.expiries.pop_first();
            state.ids.remove(&old);
        }
        if state.ids.contains(&id) {
            return Err(ReplayRefusal::Replayed);
        }
        if state.ids.len() >= self.capacity {
            return Err(ReplayRefusal::Full);
        }
        state.ids.insert(id);
        state.expiries.insert((monotonic + self.keep, id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn an_id_is_admitted_once_and_a_stale_time_never() {
        let cache = ReplayCache::new(8);
        assert_eq!(cache.admit(NOW, [1; ID_LEN], NOW), Ok(()));
        assert_eq!(
            cache.admit(NOW, [1; ID_LEN], NOW + 1),
            Err(ReplayRefusal::Replayed)
        );
        assert_eq!(cache.admit(NOW - 5, [2; ID_LEN], NOW), Ok(()));
        let late = NOW + WINDOW_SECONDS + 1;
        assert_eq!(
            cache.admit(NOW, [3; ID_LEN], late),
            Err(ReplayRefusal::Stale)
        );
        let early = NOW - WINDOW_SECONDS - 1;
        assert_eq!(
            cache.admit(NOW, [3; ID_LEN], early),
            Err(ReplayRefusal::Stale)
        );
    }

    #[test]
    fn a_full_cache_refuses_instead_of_forgetting() {
        let cache = ReplayCache::new(2);
        cache.admit(NOW, [1; ID_LEN], NOW).unwrap();
        cache.admit(NOW, [2; ID_LEN], NOW).unwrap();
        assert_eq!(cache.admit(NOW, [3; ID_LEN], NOW), Err(ReplayRefusal::Full));
        // The ids it holds are still refused as replays.
        assert_eq!(
            cache.admit(NOW, [1; ID_LEN], NOW),
            Err(ReplayRefusal::Replayed)
        );
    }
}
