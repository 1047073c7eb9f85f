//! The limits a connection is held to, and the per-address connection count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What one service's connections are held to. Every field has a default sized for a small
/// server; `cloak serve` and `cloak kbs serve` have a flag for each.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once (in their TLS handshake or serving); more are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 client: its /64); more are
    /// closed at once. Behind a load balancer every connection comes from the balancer's
    /// addresses: raise this to `max_connections` there.
    pub max_per_address: usize,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Longest a connection may go with no request in progress — before its first request's
    /// headers are complete, or between requests — before it is closed.
    pub idle_timeout: Duration,
    /// Slowest a request body may arrive, in bytes per second averaged since the body began,
    /// once [`body_grace`](Self::body_grace) has passed. A slower body fails (its request gets
    /// an error) and its connection is closed.
    pub min_body_rate: u64,
    /// Time a request body may take before the rate applies (latency, a slow start).
    pub body_grace: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_h2_streams: u32,
    /// HTTP/2 keep-alive: a ping after this long without frames, and the connection is dropped
    /// if the ping is not answered within the same time.
    pub h2_keep_alive: Duration,
    /// After shutdown begins, how long requests in progress may take to finish.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_address: 128,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            min_body_rate: 32 * 1024,
            body_grace: Duration::from_secs(10),
            max_h2_streams: 32,
            h2_keep_alive: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Open connections per client address, capped.
#[derive(Debug)]
pub(crate) struct Addresses {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Addresses {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for a connection from `ip`, or `None` when its address has `max` open.
    pub(crate) fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            key,
            open: Arc::clone(&self.open),
        })
    }
}

/// One connection's place in its address's count, given back on drop.
pub(crate) struct AddressSlot {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The unit one client controls: an IPv4 address (also when mapped into IPv6), or an IPv6 /64
/// (a single host is routinely given a whole /64). Per-client limits key on this.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_capped_and_its_slots_come_back() {
        let addresses = Addresses::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = addresses.take(a).unwrap();
        let _second = addresses.take(a).unwrap();
        assert!(addresses.take(a).is_none(), "a third from one address");
        assert!(
            addresses.take(b).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert!(
            addresses.take(a).is_some(),
            "a closed connection's slot comes back"
        );
    }

    #[test]
    fn one_ipv6_64_counts_as_one_address_and_mapped_ipv4_as_its_ipv4() {
        let addresses = Addresses::new(1);
        let _held = addresses.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(
            addresses
                .take("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_none()
        );
        assert!(addresses.take("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = addresses.take("192.0.2.7".parse().unwrap()).unwrap();
        assert!(
            addresses
                .take("::ffff:192.0.2.7".parse().unwrap())
                .is_none()
        );
    }
}
