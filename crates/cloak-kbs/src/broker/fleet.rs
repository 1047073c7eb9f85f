//! Fleets (see [`cloak_proto::kbs::fleet`]): keys the broker generates and holds, one
//! generation per record `fleet:NAME:G`, released like model keys under the fleet's policy.
//!
//! The newest generation number ever made is kept in the database (a meta counter that only
//! rises), so a fleet removed and made again never reuses a generation, and so never a key id a
//! client may still hold. Two replicas rotating at once compute the same next generation; the
//! record insert decides, and the loser is told `fleet-conflict`.

use cloak_crypto::key::ModelKey;
use cloak_proto::kbs::SetPolicyRequest;
use cloak_proto::kbs::fleet::{
    AddFleetRequest, FleetStatus, Generation, MAX_LIVE, fleet_key_id, fleet_record,
};

use super::{Broker, validate_model_name};
use crate::BrokerError;
use crate::policy::parse_release_policy;
use crate::store::ModelRecord;

const EVENT_ADD_FLEET: &str = "add-fleet";
const EVENT_ROTATE_FLEET: &str = "rotate-fleet";
const EVENT_SET_FLEET_POLICY: &str = "set-fleet-policy";
const EVENT_REMOVE_FLEET: &str = "remove-fleet";

/// How far below the newest generation ever made live ones are looked for (rotation keeps
/// [`MAX_LIVE`]; a failed rotation may leave a gap of one).
const LOOK_BACK: u32 = 3;

/// The audit name of a fleet as a whole: `fleet:NAME`.
fn audit_fleet(name: &str) -> String {
    format!("{}{name}", cloak_proto::kbs::fleet::RECORD_PREFIX)
}

fn counter(name: &str) -> String {
    format!("fleet-generation:{name}")
}

impl Broker {
    /// The live generations of `name`'s key, newest first, with their records.
    fn live_generations(&self, name: &str) -> Result<Vec<(u32, ModelRecord)>, BrokerError> {
        validate_model_name(name)?;
        let newest = self
            .store
            .meta(&counter(name))?
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        let mut live = Vec::new();
        // One above the counter too: a rotation inserts its record before raising the counter.
        let top = newest.saturating_add(1);
        for generation in (top.saturating_sub(LOOK_BACK).max(1)..=top).rev() {
            if let Some(record) = self.store.model(&fleet_record(name, generation))? {
                live.push((generation, record));
            }
        }
        Ok(live)
    }

    /// What replicas of `name` need to know (public: names no key): its live generations and
    /// the one to advertise.
    pub fn fleet_status(&self, name: &str) -> Result<FleetStatus, BrokerError> {
        let live = self.live_generations(name)?;
        let now = self.clock.now();
        let generations: Vec<Generation> = live
            .iter()
            .take(MAX_LIVE)
            .map(|(generation, record)| Generation {
                generation: *generation,
                key_id: fleet_key_id(*generation),
                created: record.created,
            })
            .collect();
        let propagated = generations
            .iter()
            .find(|g| g.created.saturating_add(self.config.fleet_propagation) <= now);
        let advertise = propagated
            .or(generations.last())
            .map(|g| g.generation)
            .ok_or(BrokerError::UnknownFleet)?;
        Ok(FleetStatus {
            fleet: name.to_owned(),
            generations,
            advertise,
        })
    }

    /// Creates fleet `name` with a new key (administrator).
    pub fn add_fleet(
        &self,
        token: Option<&str>,
        client: &str,
        name: &str,
        request: &AddFleetRequest,
    ) -> Result<FleetStatus, BrokerError> {
        let now = self.clock.now();
        let result = self.authorize(token).and_then(|()| {
            parse_release_policy(&request.policy)?;
            if !self.live_generations(name)?.is_empty() {
                return Err(BrokerError::FleetConflict(
                    "a fleet of that name exists already (rotate its key, or remove it first)",
                ));
            }
            let newest = self
                .store
                .meta(&counter(name))?
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0);
            self.new_generation(name, newest.saturating_add(1), &request.policy, now)?;
            Ok(())
        });
        self.administered(EVENT_ADD_FLEET, &audit_fleet(name), client, now, result)?;
        self.fleet_status(name)
    }

    /// Makes the next generation of fleet `name`'s key, with the policy of the newest, and
    /// retires all but the one before it (administrator).
    pub fn rotate_fleet(
        &self,
        token: Option<&str>,
        client: &str,
        name: &str,
    ) -> Result<FleetStatus, BrokerError> {
        let now = self.clock.now();
        let result = self.authorize(token).and_then(|()| {
            let live = self.live_generations(name)?;
            let Some((newest, record)) = live.first() else {
                return Err(BrokerError::UnknownFleet);
            };
            let next = newest.saturating_add(1);
            self.new_generation(name, next, &record.policy, now)?;
            for (generation, _) in live.iter().skip(MAX_LIVE - 1) {
                self.store.delete_model(&fleet_record(name, *generation))?;
            }
            tracing::info!(fleet = %name, generation = next, "fleet key rotated");
            Ok(())
        });
        self.administered(EVENT_ROTATE_FLEET, &audit_fleet(name), client, now, result)?;
        self.fleet_status(name)
    }

    /// Replaces the policy of every live generation of fleet `name` (administrator).
    pub fn set_fleet_policy(
        &self,
        token: Option<&str>,
        client: &str,
        name: &str,
        request: &SetPolicyRequest,
    ) -> Result<(), BrokerError> {
        let now = self.clock.now();
        let result = self.authorize(token).and_then(|()| {
            parse_release_policy(&request.policy)?;
            let live = self.live_generations(name)?;
            if live.is_empty() {
                return Err(BrokerError::UnknownFleet);
            }
            for (_, record) in live {
                self.replace_policy(record, &request.policy, now)?;
            }
            Ok(())
        });
        self.administered(
            EVENT_SET_FLEET_POLICY,
            &audit_fleet(name),
            client,
            now,
            result,
        )
    }

    /// Removes every generation of fleet `name`'s key (administrator): replicas are refused
    /// when they next confirm their lease.
    pub fn remove_fleet(
        &self,
        token: Option<&str>,
        client: &str,
        name: &str,
    ) -> Result<(), BrokerError> {
        let now = self.clock.now();
        let result = self.authorize(token).and_then(|()| {
            let live = self.live_generations(name)?;
            if live.is_empty() {
                return Err(BrokerError::UnknownFleet);
            }
            for (generation, _) in live {
                self.store.delete_model(&fleet_record(name, generation))?;
            }
            Ok(())
        });
        self.administered(EVENT_REMOVE_FLEET, &audit_fleet(name), client, now, result)
    }

    /// Generates and stores generation `generation` of fleet `name`'s key.
    fn new_generation(
        &self,
        name: &str,
        generation: u32,
        policy: &str,
        now: u64,
    ) -> Result<(), BrokerError> {
        let key = ModelKey::generate().map_err(|e| BrokerError::Random(e.to_string()))?;
        let record_name = fleet_record(name, generation);
        let mut record = ModelRecord {
            key_id: key.id().to_string(),
            wrapped_key: self.keys.wrap(&record_name, &key)?,
            name: record_name,
            policy: policy.to_owned(),
            created: now,
            updated: now,
            mac: String::new(),
        };
        record.mac = self.keys.record_mac(&record);
        if !self.store.insert_model(&record)? {
            return Err(BrokerError::FleetConflict(
                "another rotation of this fleet made that generation first",
            ));
        }
        self.store
            .raise_meta_number(&counter(name), u64::from(generation))?;
        Ok(())
    }
}
