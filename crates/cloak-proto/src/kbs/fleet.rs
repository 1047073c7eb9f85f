//! Fleets: one HPKE key shared by every replica of a service, so that an encapsulated request
//! sealed to the key in any replica's claims opens at any of them.
//!
//! The broker generates each key itself and releases it exactly like a model key: under the
//! fleet's policy, to an ephemeral key bound into fresh evidence, audited. A key lives in the
//! broker as the record [`fleet_record`]`(fleet, generation)`; rotating adds the next
//! generation and keeps the previous one live, so that clients holding the previous key
//! configuration are still answered while they learn the new one. The X25519 private key is the
//! 32 released bytes; its Oblivious HTTP key id is [`fleet_key_id`]`(generation)`.

use serde::{Deserialize, Serialize};

/// The prefix of every fleet record's name (not a valid model name, so no model can take it).
pub const RECORD_PREFIX: &str = "fleet:";
/// Live generations at most: the current one and the one before.
pub const MAX_LIVE: usize = 2;

/// The broker record holding generation `generation` of `fleet`'s key: `fleet:NAME:G`.
pub fn fleet_record(fleet: &str, generation: u32) -> String {
    format!("{RECORD_PREFIX}{fleet}:{generation}")
}

/// The fleet and generation of a record name made by [`fleet_record`] (the fleet part
/// unchecked), if it is one.
pub fn parse_fleet_record(record: &str) -> Option<(&str, u32)> {
    let (fleet, digits) = record.strip_prefix(RECORD_PREFIX)?.rsplit_once(':')?;
    let generation: u32 = digits.parse().ok()?;
    // One spelling per generation: no sign, no leading zero, no zero.
    (generation > 0 && generation.to_string() == digits).then_some((fleet, generation))
}

/// The Oblivious HTTP key id of generation `generation`: 2 to 255, never 1 (each server's own
/// key), and distinct for any two generations fewer than 254 apart.
pub fn fleet_key_id(generation: u32) -> u8 {
    u8::try_from(generation.saturating_sub(1) % 254).map_or(2, |id| id.saturating_add(2))
}

/// `PUT /kbs/v1/admin/fleets/{name}`: create a fleet (the broker generates its first key).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddFleetRequest {
    /// The release policy, as for a model.
    pub policy: String,
}

/// One live generation of a fleet's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// The generation (from 1).
    pub generation: u32,
    /// Its Oblivious HTTP key id ([`fleet_key_id`]).
    pub key_id: u8,
    /// When the broker made it (Unix seconds).
    pub created: u64,
}

/// `GET /kbs/v1/fleets/{name}` (public: it names no key) and the answer to a rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetStatus {
    /// The fleet.
    pub fleet: String,
    /// The live generations, newest first ([`MAX_LIVE`] at most).
    pub generations: Vec<Generation>,
    /// The generation replicas put in their claims: the newest one made at least the
    /// broker's propagation time ago (so that every replica holds it before any client is
    /// sent to it), else the oldest live one.
    pub advertise: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_read_back_and_nothing_else_reads() {
        assert_eq!(fleet_record("chat", 7), "fleet:chat:7");
        assert_eq!(parse_fleet_record("fleet:chat:7"), Some(("chat", 7)));
        assert_eq!(parse_fleet_record("fleet:a:b:12"), Some(("a:b", 12)));
        for other in [
            "chat",
            "fleet:chat",
            "fleet:chat:0",
            "fleet:chat:07",
            "fleet:chat:+7",
            "fleet:chat:-1",
            "fleet:chat:",
            "fleet::x",
            "fleet:chat:4294967296",
        ] {
            assert_eq!(parse_fleet_record(other), None, "{other}");
        }
    }

    #[test]
    fn key_ids_skip_zero_and_differ_between_neighbours() {
        assert_eq!(fleet_key_id(1), 2);
        assert_eq!(fleet_key_id(254), 255);
        assert_eq!(fleet_key_id(255), 2);
        assert_eq!(fleet_key_id(0), 2);
        for generation in 1..2000u32 {
            assert!(fleet_key_id(generation) >= 2);
            assert_ne!(fleet_key_id(generation), fleet_key_id(generation + 1));
        }
    }
}
