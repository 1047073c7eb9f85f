//! Azure Key Vault Secure Key Release (SKR) policies, converted into release policies, so that
//! an Azure user brings the policy they already have.
//!
//! The SKR grammar (Key Vault and Managed HSM documentation): a policy is
//! `{"version": "1.0.0", "anyOf": [authority, ...]}`; an authority is
//! `{"authority": URL, "anyOf" | "allOf": [condition, ...]}`; a condition is a claim condition
//! `{"claim": NAME, OPERATOR: VALUE}` (operators `equals`, `notEquals`, `less`,
//! `lessOrEquals`, `greater`, `greaterOrEquals`, `exists`) or a nested `anyOf`/`allOf`. Key
//! names are matched without regard to case, as the documentation spells them both ways.
//!
//! What converts, for SGX claims (current `x-ms-sgx-*` names or MAA's deprecated aliases):
//!
//! | SKR condition | release policy |
//! |---|---|
//! | `x-ms-sgx-mrenclave` / `-mrsigner` `equals` HEX | `[sgx] mrenclave` / `mrsigner` |
//! | an `anyOf` of `equals` on one of those | the list of values |
//! | `x-ms-sgx-product-id` `equals` N | `isv_prod_id = N` |
//! | `x-ms-sgx-svn` `greaterOrEquals` N (`greater` N) | `min_isv_svn = N` (N + 1) |
//! | `x-ms-sgx-is-debuggable` `equals` false | `allow_debug = false` (the default) |
//! | `x-ms-attestation-type` `equals` `sgx` | implied |
//! | the authority | `[azure_attestation] issuer`, with the JWKS the administrator pins |
//!
//! Everything else is refused with what it is, never dropped: another claim or operator (a
//! condition silently left out would release keys the owner meant to keep), an `equals` on the
//! SVN (a release policy sets a minimum), `is-debuggable` `equals` true (debug enclaves only), an
//! `anyOf` across different claims, two authorities (a release policy trusts one instance), and
//! a policy that names no enclave, and any object with a key given twice (in any case: which
//! of the two Key Vault would read is not something to guess). The converted policy accepts
//! tokens only (`evidence = ["maa-token"]`): the SKR policy trusts what its attestation
//! instance vouches for, under that instance's own attestation policy, and a quote presented
//! directly would skip it.

use serde_json::{Map, Value};

/// Why an SKR policy cannot be converted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SkrError(pub String);

impl SkrError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        "unrepresentable-policy"
    }
}

/// The release-policy constraints collected from the conditions.
#[derive(Debug, Default)]
struct Constraints {
    mrenclave: Option<Vec<String>>,
    mrsigner: Option<Vec<String>>,
    isv_prod_id: Option<u64>,
    min_isv_svn: Option<u64>,
}

/// Converts SKR policy JSON into release-policy TOML that trusts the policy's authority with
/// the JWKS at `jwks` (a path next to the written policy, or the JWKS JSON itself).
pub fn import_skr_policy(skr_json: &[u8], jwks: &str) -> Result<String, SkrError> {
    // serde_json keeps the last of two equal keys; a key given twice is refused instead.
    serde_json::from_slice::<NoDuplicateKeys>(skr_json)
        .map_err(|e| SkrError(format!("not JSON, or a key given twice: {e}")))?;
    let policy: Value =
        serde_json::from_slice(skr_json).map_err(|e| SkrError(format!("not JSON: {e}")))?;
    let policy = object(&policy, "the policy")?;
    let mut authorities = None;
    for (key, value) in policy {
        match key.to_ascii_lowercase().as_str() {
            "version" => {
                if !matches!(value.as_str(), Some("1.0.0" | "1.0.1" | "1.0.2")) {
                    return Err(SkrError(format!("policy version {value} (1.0.x is known)")));
                }
            }
            "anyof" => authorities = Some(array(value, "anyOf")?),
            other => return Err(SkrError(format!("unknown top-level key {other:?}"))),
        }
    }
    let authorities = authorities.ok_or_else(|| SkrError("no anyOf of authorities".into()))?;
    let [authority] = authorities else {
        return Err(SkrError(format!(
            "{} authorities: a release policy trusts one attestation instance",
            authorities.len()
        )));
    };
    let authority = object(authority, "the authority")?;
    let mut issuer = None;
    let mut constraints = Constraints::default();
    for (key, value) in authority {
        match key.to_ascii_lowercase().as_str() {
            "authority" => issuer = value.as_str().map(str::to_owned),
            "allof" => {
                for condition in array(value, "allOf")? {
                    condition_into(condition, &mut constraints)?;
                }
            }
            "anyof" => any_of_into(array(value, "anyOf")?, &mut constraints)?,
            other => return Err(SkrError(format!("unknown authority key {other:?}"))),
        }
    }
    // Tokens name their issuer without a trailing slash; SKR examples sometimes add one.
    let issuer = issuer
        .filter(|url| url.starts_with("https://"))
        .map(|url| url.strip_suffix('/').map_or(url.clone(), str::to_owned))
        .ok_or_else(|| SkrError("the authority must be an https URL".into()))?;
    let names_enclave = constraints.mrenclave.is_some()
        || (constraints.mrsigner.is_some() && constraints.isv_prod_id.is_some());
    if !names_enclave {
        return Err(SkrError(
            "the policy names no enclave (x-ms-sgx-mrenclave, or x-ms-sgx-mrsigner with \
             x-ms-sgx-product-id): a release policy must"
                .into(),
        ));
    }
    Ok(to_toml(&constraints, &issuer, jwks))
}

/// One condition of an `allOf`.
fn condition_into(condition: &Value, constraints: &mut Constraints) -> Result<(), SkrError> {
    let condition = object(condition, "a condition")?;
    if let Some((_, value)) = single(condition, "allof") {
        for inner in array(value, "allOf")? {
            condition_into(inner, constraints)?;
        }
        return Ok(());
    }
    if let Some((_, value)) = single(condition, "anyof") {
        return any_of_into(array(value, "anyOf")?, constraints);
    }
    let (claim, operator, value) = claim_condition(condition)?;
    match (canonical_claim(&claim), operator.as_str(), value) {
        ("x-ms-sgx-mrenclave", "equals", Value::String(hex)) => set_list(
            &mut constraints.mrenclave,
            "x-ms-sgx-mrenclave",
            vec![measurement(hex)?],
        ),
        ("x-ms-sgx-mrsigner", "equals", Value::String(hex)) => set_list(
            &mut constraints.mrsigner,
            "x-ms-sgx-mrsigner",
            vec![measurement(hex)?],
        ),
        ("x-ms-sgx-product-id", "equals", value) => set_once(
            &mut constraints.isv_prod_id,
            "x-ms-sgx-product-id",
            number(value, &claim)?,
        ),
        ("x-ms-sgx-svn", "greaterorequals", value) => set_once(
            &mut constraints.min_isv_svn,
            "x-ms-sgx-svn",
            number(value, &claim)?,
        ),
        ("x-ms-sgx-svn", "greater", value) => {
            let min = number(value, &claim)?.saturating_add(1);
            if min > u64::from(u16::MAX) {
                return Err(SkrError(format!(
                    "x-ms-sgx-svn greater {value}: no SVN is that high"
                )));
            }
            set_once(&mut constraints.min_isv_svn, "x-ms-sgx-svn", min)
        }
        ("x-ms-sgx-svn", "equals", _) => Err(SkrError(
            "x-ms-sgx-svn equals: a release policy sets a minimum SVN (greaterOrEquals), not \
             one SVN"
                .into(),
        )),
        ("x-ms-sgx-is-debuggable", "equals", Value::Bool(false)) => Ok(()),
        ("x-ms-sgx-is-debuggable", "equals", Value::Bool(true)) => Err(SkrError(
            "x-ms-sgx-is-debuggable equals true admits debug enclaves only, which a release \
             policy cannot say (allow_debug admits both)"
                .into(),
        )),
        ("x-ms-attestation-type", "equals", Value::String(kind)) if kind == "sgx" => Ok(()),
        (_, _, value) => Err(SkrError(format!(
            "the condition {claim:?} {operator} {value} has no release-policy equivalent"
        ))),
    }
}

/// An `anyOf`: either one condition, or `equals` on one measurement claim with several values.
fn any_of_into(conditions: &[Value], constraints: &mut Constraints) -> Result<(), SkrError> {
    if let [only] = conditions {
        return condition_into(only, constraints);
    }
    let mut claim_name = None;
    let mut values = Vec::new();
    for condition in conditions {
        let (claim, operator, value) = claim_condition(object(condition, "a condition")?)?;
        let canonical = canonical_claim(&claim);
        let (true, "equals", Value::String(hex)) = (
            matches!(canonical, "x-ms-sgx-mrenclave" | "x-ms-sgx-mrsigner"),
            operator.as_str(),
            value,
        ) else {
            return Err(SkrError(format!(
                "an anyOf over {claim:?} {operator}: only alternatives of MRENCLAVE or of \
                 MRSIGNER values convert"
            )));
        };
        if claim_name.is_some_and(|name| name != canonical) {
            return Err(SkrError(
                "an anyOf across different claims: a release policy's lists are per claim, all \
                 of which must match"
                    .into(),
            ));
        }
        claim_name = Some(canonical);
        values.push(measurement(hex)?);
    }
    match claim_name {
        Some("x-ms-sgx-mrenclave") => {
            set_list(&mut constraints.mrenclave, "x-ms-sgx-mrenclave", values)
        }
        Some("x-ms-sgx-mrsigner") => {
            set_list(&mut constraints.mrsigner, "x-ms-sgx-mrsigner", values)
        }
        _ => Err(SkrError("an empty anyOf".into())),
    }
}

/// `{"claim": NAME, OPERATOR: VALUE}` → (name, operator in lower case, value).
fn claim_condition(condition: &Map<String, Value>) -> Result<(String, String, &Value), SkrError> {
    let mut claim = None;
    let mut operator = None;
    for (key, value) in condition {
        let key = key.to_ascii_lowercase();
        if key == "claim" {
            claim = value.as_str().map(str::to_owned);
        } else if operator.is_none() {
            operator = Some((key, value));
        } else {
            return Err(SkrError(format!(
                "a condition with two operators: {condition:?}"
            )));
        }
    }
    let (Some(claim), Some((operator, value))) = (claim, operator) else {
        return Err(SkrError(format!("not a claim condition: {condition:?}")));
    };
    Ok((claim, operator, value))
}

/// The current name of an SGX claim MAA also issues under a deprecated alias.
fn canonical_claim(claim: &str) -> &'static str {
    match claim {
        "x-ms-sgx-mrenclave" | "sgx-mrenclave" => "x-ms-sgx-mrenclave",
        "x-ms-sgx-mrsigner" | "sgx-mrsigner" => "x-ms-sgx-mrsigner",
        "x-ms-sgx-product-id" | "product-id" => "x-ms-sgx-product-id",
        "x-ms-sgx-svn" | "svn" => "x-ms-sgx-svn",
        "x-ms-sgx-is-debuggable" | "is-debuggable" => "x-ms-sgx-is-debuggable",
        "x-ms-attestation-type" | "tee" => "x-ms-attestation-type",
        _ => "",
    }
}

fn set_list(
    slot: &mut Option<Vec<String>>,
    claim: &str,
    values: Vec<String>,
) -> Result<(), SkrError> {
    if slot.is_some() {
        return Err(SkrError(format!(
            "{claim} is constrained twice: the release policy would not say the same"
        )));
    }
    *slot = Some(values);
    Ok(())
}

fn set_once(slot: &mut Option<u64>, claim: &str, value: u64) -> Result<(), SkrError> {
    if slot.is_some() {
        return Err(SkrError(format!(
            "{claim} is constrained twice: the release policy would not say the same"
        )));
    }
    *slot = Some(value);
    Ok(())
}

fn measurement(hex_text: &str) -> Result<String, SkrError> {
    match hex::decode(hex_text) {
        Ok(bytes) if bytes.len() == 32 => Ok(hex::encode(bytes)),
        _ => Err(SkrError(format!("{hex_text:?} is not 32 bytes of hex"))),
    }
}

fn number(value: &Value, claim: &str) -> Result<u64, SkrError> {
    value
        .as_u64()
        .filter(|n| *n <= u64::from(u16::MAX))
        .ok_or_else(|| SkrError(format!("{claim}: {value} is not a 16-bit number")))
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, SkrError> {
    let map = value
        .as_object()
        .ok_or_else(|| SkrError(format!("{what} is not a JSON object")))?;
    // Keys are matched without regard to case, so two spellings of one key are one key twice.
    let mut seen = std::collections::BTreeSet::new();
    for key in map.keys() {
        if !seen.insert(key.to_ascii_lowercase()) {
            return Err(SkrError(format!(
                "{what} gives {key:?} twice (in another case)"
            )));
        }
    }
    Ok(map)
}

/// Any JSON value, refused if an object in it has the same key twice.
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Self)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = Self;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without repeated keys")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut keys = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("key {key:?} given twice")));
            }
            map.next_value::<Self>()?;
        }
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Self>()?.is_some() {}
        Ok(self)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
}

fn array<'a>(value: &'a Value, what: &str) -> Result<&'a [Value], SkrError> {
    value
        .as_array()
        .map(Vec::as_slice)
        .filter(|items| !items.is_empty())
        .ok_or_else(|| SkrError(format!("{what} is not a non-empty array")))
}

/// The only entry of `map` if its key is `key` (any case).
fn single<'a>(map: &'a Map<String, Value>, key: &str) -> Option<(&'a String, &'a Value)> {
    let mut entries = map.iter();
    match (entries.next(), entries.next()) {
        (Some((k, v)), None) if k.eq_ignore_ascii_case(key) => Some((k, v)),
        _ => None,
    }
}

fn to_toml(constraints: &Constraints, issuer: &str, jwks: &str) -> String {
    let mut sgx = toml::Table::new();
    let list = |values: &[String]| {
        toml::Value::Array(values.iter().cloned().map(toml::Value::String).collect())
    };
    if let Some(values) = &constraints.mrenclave {
        sgx.insert("mrenclave".into(), list(values));
    }
    if let Some(values) = &constraints.mrsigner {
        sgx.insert("mrsigner".into(), list(values));
    }
    for (name, value) in [
        ("isv_prod_id", constraints.isv_prod_id),
        ("min_isv_svn", constraints.min_isv_svn),
    ] {
        if let Some(value) = value {
            sgx.insert(
                name.into(),
                toml::Value::Integer(i64::try_from(value).unwrap_or(i64::MAX)),
            );
        }
    }
    let mut azure = toml::Table::new();
    azure.insert("issuer".into(), toml::Value::String(issuer.to_owned()));
    azure.insert("jwks".into(), toml::Value::String(jwks.to_owned()));
    let mut policy = toml::Table::new();
    policy.insert(
        "evidence".into(),
        toml::Value::Array(vec![toml::Value::String("maa-token".into())]),
    );
    policy.insert("allow_debug".into(), toml::Value::Boolean(false));
    policy.insert("sgx".into(), toml::Value::Table(sgx));
    policy.insert("azure_attestation".into(), toml::Value::Table(azure));
    format!(
        "# Converted from an Azure Key Vault secure key release policy by `cloak kbs \
         import-skr-policy`.\n{}",
        toml::to_string(&policy).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests;
