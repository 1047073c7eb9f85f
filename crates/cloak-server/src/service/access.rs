//! Access tokens inside the enclave: a model whose owner named a token key in its release policy
//! is served only to requests with a token that key signed (`cloak_proto::access`), unexpired,
//! for that model, within the token's rate and quota. Checked after decryption, so the host
//! never sees a token; counted per token id, in this process (a restart starts quotas afresh —
//! documented).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use cloak_proto::access::{AccessToken, TokenError};

use super::ServiceError;

/// Token ids tracked at once; past that, tokens not yet seen are refused (429) rather than
/// others forgotten, which would give their quotas back.
const MAX_TRACKED_TOKENS: usize = 64 * 1024;

/// Rate and quota use per token id.
#[derive(Debug, Default)]
pub(crate) struct TokenMeter {
    used: Mutex<HashMap<String, Use>>,
}

#[derive(Debug)]
struct Use {
    /// Inferences admitted so far.
    count: u64,
    /// Rate tokens left, and when they were last refilled.
    allowance: f64,
    at: Instant,
}

impl TokenMeter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Checks `bearer` for `model` under the owner's `key` at `now` and counts one inference.
    pub(crate) fn admit(
        &self,
        key: &[u8],
        model: &str,
        bearer: Option<&str>,
        now: u64,
    ) -> Result<(), ServiceError> {
        let Some(bearer) = bearer else {
            return Err(refuse(
                401,
                "token-missing",
                format!("model {model} is served only with its owner's access token"),
            ));
        };
        let token = AccessToken::verify(bearer, key, model, now).map_err(|e| {
            let status = match e {
                TokenError::WrongModel | TokenError::Expired => 403,
                _ => 401,
            };
            refuse(status, e.code(), e.to_string())
        })?;
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if !used.contains_key(&token.id) && used.len() >= MAX_TRACKED_TOKENS {
            return Err(refuse(
                429,
                "token-table-full",
                "too many access tokens in use; retry shortly".to_owned(),
            ));
        }
        let burst = f64::from(token.rate.max(1));
        let entry = used.entry(token.id.clone()).or_insert(Use {
            count: 0,
            allowance: burst,
            at: Instant::now(),
        });
        if token.quota > 0 && entry.count >= token.quota {
            return Err(refuse(
                403,
                "token-quota-exhausted",
                format!("the token's {} inferences are used up", token.quota),
            ));
        }
        if token.rate > 0 {
            let elapsed = entry.at.elapsed().as_secs_f64();
            entry.at = Instant::now();
            entry.allowance = (entry.allowance + elapsed * f64::from(token.rate)).min(burst);
            if entry.allowance < 1.0 {
                return Err(refuse(
                    429,
                    "token-rate-limited",
                    format!(
                        "the token allows {} inferences per second; retry shortly",
                        token.rate
                    ),
                ));
            }
            entry.allowance -= 1.0;
        }
        entry.count = entry.count.saturating_add(1);
        Ok(())
    }
}

fn refuse(status: u16, code: &'static str, message: String) -> ServiceError {
    ServiceError::Access {
        status,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use cloak_crypto::sig::SigningKey;

    use super::*;

    fn issue(owner: &SigningKey, rate: u32, quota: u64) -> String {
        AccessToken {
            model: "m".to_owned(),
            id: format!("{rate:016x}{quota:016x}"),
            expires: 2_000_000_000,
            rate,
            quota,
        }
        .sign(owner)
        .unwrap()
    }

    fn code(result: Result<(), ServiceError>) -> &'static str {
        match result {
            Ok(()) => "ok",
            Err(ServiceError::Access { code, .. }) => code,
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn quota_and_rate_are_counted_per_token() {
        let owner = SigningKey::generate().unwrap();
        let key = owner.public_key_spki();
        let meter = TokenMeter::new();
        let now = 1_900_000_000;
        let quota = issue(&owner, 0, 2);
        assert_eq!(code(meter.admit(key, "m", Some(&quota), now)), "ok");
        assert_eq!(code(meter.admit(key, "m", Some(&quota), now)), "ok");
        assert_eq!(
            code(meter.admit(key, "m", Some(&quota), now)),
            "token-quota-exhausted"
        );
        let rate = issue(&owner, 1, 0);
        assert_eq!(code(meter.admit(key, "m", Some(&rate), now)), "ok");
        assert_eq!(
            code(meter.admit(key, "m", Some(&rate), now)),
            "token-rate-limited"
        );
        assert_eq!(code(meter.admit(key, "m", None, now)), "token-missing");
    }
}
