//! A fleet replica's keys (`--fleet NAME`): the fleet's HPKE keys, released by the broker under
//! the fleet's policy exactly like model keys, held in memory only (never sealed: a restarted
//! replica asks the broker again, so a host cannot bring back a retired key from disk).
//!
//! Every `--fleet-refresh` the broker's status of the fleet is read (any broker replica); each
//! live generation not held, or past half of its lease, is released; generations the broker no
//! longer lists, refuses, or whose lease ended unconfirmed are dropped. The claims advertise the
//! generation the broker names (held back after a rotation until every replica has had time to
//! fetch it), so a client that appraised any replica is answered by all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cloak_crypto::hpke::HpkeKeyPair;
use cloak_proto::kbs::fleet::{FleetStatus, fleet_key_id, fleet_record};
use tokio::sync::watch;

use crate::key_release::{BrokerClient, ReleaseError, Released};
use crate::service::Service;

/// One held generation.
struct Held {
    /// The X25519 private key's bytes (zeroized on drop).
    key: cloak_crypto::key::ModelKey,
    granted: u64,
    lease_expires: u64,
}

impl Held {
    /// Past half of its lease: confirm it.
    fn due(&self, now: u64) -> bool {
        let half = self.lease_expires.saturating_sub(self.granted) / 2;
        now >= self.granted.saturating_add(half)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Keeps this replica's fleet keys until the server stops.
pub(crate) async fn keep_fleet_keys(
    service: Arc<Service>,
    client: Arc<BrokerClient>,
    fleet: String,
    refresh: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    let mut installed: Option<(Vec<u32>, Option<u32>)> = None;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = refresh;
        let status = {
            let (client, fleet) = (Arc::clone(&client), fleet.clone());
            tokio::task::spawn_blocking(move || client.fleet_status(&fleet))
                .await
                .unwrap_or_else(|e| Err(ReleaseError::Protocol(e.to_string())))
        };
        let advertise = match status {
            Ok(FleetStatus {
                generations,
                advertise,
                ..
            }) => {
                let live: Vec<u32> = generations.iter().map(|g| g.generation).collect();
                held.retain(|generation, _| live.contains(generation));
                for generation in live {
                    let now = unix_now();
                    if held.get(&generation).is_some_and(|h| !h.due(now)) {
                        continue;
                    }
                    match release(&service, &client, &fleet, generation).await {
                        Ok(held_key) => {
                            held.insert(generation, held_key);
                        }
                        Err(e) if e.is_transient() => {
                            tracing::warn!(%fleet, generation, error = %e, "the fleet key could not be confirmed; kept until its lease ends");
                            wait = refresh.min(Duration::from_secs(1));
                        }
                        Err(e) => {
                            tracing::warn!(%fleet, generation, code = e.code(), error = %e, "the key broker refused the fleet key");
                            held.remove(&generation);
                        }
                    }
                }
                Some(advertise)
            }
            Err(e) => {
                tracing::warn!(%fleet, error = %e, "cannot read the fleet's status from the key broker");
                wait = refresh.min(Duration::from_secs(1));
                installed.as_ref().and_then(|(_, advertise)| *advertise)
            }
        };
        let now = unix_now();
        held.retain(|generation, h| {
            let live = h.lease_expires > now;
            if !live {
                tracing::warn!(%fleet, generation, "the fleet key's lease ended unconfirmed");
            }
            live
        });
        // The broker's choice when held, else the newest held.
        let advertise = advertise
            .filter(|g| held.contains_key(g))
            .or_else(|| held.keys().next_back().copied());
        let state = (held.keys().copied().collect::<Vec<_>>(), advertise);
        if installed.as_ref() != Some(&state) && install(&service, &fleet, &held, advertise).await {
            tracing::info!(%fleet, generations = ?state.0, advertised = ?state.1, "fleet keys in force");
            installed = Some(state);
        }
    }
}

/// One release of generation `generation` of the fleet's key.
async fn release(
    service: &Arc<Service>,
    client: &Arc<BrokerClient>,
    fleet: &str,
    generation: u32,
) -> Result<Held, ReleaseError> {
    let (service, client) = (Arc::clone(service), Arc::clone(client));
    let record = fleet_record(fleet, generation);
    let granted = unix_now();
    let released: Released = tokio::task::spawn_blocking(move || {
        let identity = service.identity();
        client.release(
            identity.platform().as_ref(),
            identity.collateral_source(),
            &record,
        )
    })
    .await
    .unwrap_or_else(|e| Err(ReleaseError::Evidence(format!("the attempt failed: {e}"))))?;
    HpkeKeyPair::from_private_bytes(released.key.secret_bytes())
        .map_err(|e| ReleaseError::Protocol(format!("the fleet key is not an X25519 key: {e}")))?;
    Ok(Held {
        key: released.key,
        granted,
        lease_expires: released.lease_expires,
    })
}

/// Puts the held keys in force (re-attesting when the claims change); whether it worked.
async fn install(
    service: &Arc<Service>,
    fleet: &str,
    held: &BTreeMap<u32, Held>,
    advertise: Option<u32>,
) -> bool {
    let keys: Vec<(u8, HpkeKeyPair)> = held
        .iter()
        .filter_map(|(generation, h)| {
            HpkeKeyPair::from_private_bytes(h.key.secret_bytes())
                .ok()
                .map(|key| (fleet_key_id(*generation), key))
        })
        .collect();
    let advertise = advertise.map_or(0, fleet_key_id);
    let (service, fleet) = (Arc::clone(service), fleet.to_owned());
    tokio::task::spawn_blocking(move || {
        match service.identity().set_fleet(&fleet, keys, advertise) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "the fleet's claims could not be attested");
                false
            }
        }
    })
    .await
    .unwrap_or(false)
}
