use serde_json::json;

use super::*;
use crate::policy::parse_policy_and_lease;

const ISSUER: &str = "https://sharedweu.weu.attest.azure.net";
const MRENCLAVE: &str = "292a1f4b519e46627eb2478a3d9851405653c5b4b0a6925de843834d9216850e";
const MRSIGNER: &str = "4aea5f9a0ed04b11f889aadfe6a1d376213a29a95a85ce7337ae6f7fece6610c";

fn jwks() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../cloak-attest/testdata/azure-maa/recorded/jwks.json"
    ))
    .unwrap()
}

fn skr(conditions: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "1.0.0",
        "anyOf": [{ "authority": ISSUER, "allOf": conditions }]
    }))
    .unwrap()
}

fn claim(name: &str, operator: &str, value: Value) -> Value {
    let mut condition = Map::new();
    condition.insert("claim".into(), name.into());
    condition.insert(operator.into(), value);
    Value::Object(condition)
}

#[test]
fn an_sgx_release_policy_converts_to_one_the_broker_accepts() {
    let policy = skr(json!([
        claim("x-ms-attestation-type", "equals", "sgx".into()),
        claim("x-ms-sgx-mrsigner", "equals", MRSIGNER.into()),
        claim("x-ms-sgx-product-id", "equals", 1.into()),
        claim("x-ms-sgx-svn", "greaterOrEquals", 3.into()),
        claim("x-ms-sgx-is-debuggable", "equals", false.into()),
        { "anyOf": [
            claim("x-ms-sgx-mrenclave", "equals", MRENCLAVE.into()),
            claim("sgx-mrenclave", "equals", "ab".repeat(32).into()),
        ]},
    ]));
    let text = import_skr_policy(&policy, &jwks()).unwrap();
    let release = parse_policy_and_lease(&text).unwrap();
    let trusted = release.azure_attestation.unwrap();
    assert_eq!(trusted.issuer, ISSUER);
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(table["allow_debug"].as_bool(), Some(false));
    // Tokens only: a quote presented directly would skip the instance's attestation policy.
    assert!(!release.accepts_quotes);
    let sgx = table["sgx"].as_table().unwrap();
    assert_eq!(
        sgx["mrenclave"].as_array().unwrap().len(),
        2,
        "the anyOf became a list: {text}"
    );
    assert_eq!(sgx["mrsigner"][0].as_str(), Some(MRSIGNER));
    assert_eq!(sgx["isv_prod_id"].as_integer(), Some(1));
    assert_eq!(sgx["min_isv_svn"].as_integer(), Some(3));
    // Keys are matched in any case, as the documentation spells them both ways; `greater` is
    // one above.
    let lower = serde_json::to_vec(&json!({
        "version": "1.0.0",
        "anyof": [{ "authority": ISSUER, "allof": [
            { "claim": "x-ms-sgx-mrenclave", "equals": MRENCLAVE },
            { "claim": "x-ms-sgx-svn", "greater": 3 },
        ]}]
    }))
    .unwrap();
    let text = import_skr_policy(&lower, "certs.json").unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(table["sgx"]["min_isv_svn"].as_integer(), Some(4));
    assert_eq!(
        table["azure_attestation"]["jwks"].as_str(),
        Some("certs.json")
    );
}

#[test]
fn what_cannot_be_represented_is_refused_by_name() {
    let pin = claim("x-ms-sgx-mrenclave", "equals", MRENCLAVE.into());
    let cases = [
        (
            "svn equals",
            skr(json!([pin, claim("x-ms-sgx-svn", "equals", 3.into())])),
            "minimum",
        ),
        (
            "debug only",
            skr(json!([
                pin,
                claim("x-ms-sgx-is-debuggable", "equals", true.into())
            ])),
            "debug enclaves only",
        ),
        (
            "notEquals",
            skr(json!([
                pin,
                claim("x-ms-sgx-mrsigner", "notEquals", MRSIGNER.into())
            ])),
            "no release-policy equivalent",
        ),
        (
            "another claim",
            skr(json!([
                pin,
                claim("x-ms-sgx-collateral", "exists", true.into())
            ])),
            "no release-policy equivalent",
        ),
        (
            "an anyOf across claims",
            skr(json!([{ "anyOf": [pin, claim("x-ms-sgx-mrsigner", "equals", MRSIGNER.into())] }])),
            "different claims",
        ),
        (
            "the same claim twice",
            skr(json!([
                pin,
                claim("x-ms-sgx-mrenclave", "equals", "cd".repeat(32).into())
            ])),
            "twice",
        ),
        (
            "no enclave named",
            skr(json!([claim(
                "x-ms-sgx-mrsigner",
                "equals",
                MRSIGNER.into()
            )])),
            "names no enclave",
        ),
        (
            "not a measurement",
            skr(json!([claim(
                "x-ms-sgx-mrenclave",
                "equals",
                "abcd".into()
            )])),
            "32 bytes",
        ),
        (
            "two authorities",
            serde_json::to_vec(&json!({ "version": "1.0.0", "anyOf": [
                { "authority": ISSUER, "allOf": [pin] },
                { "authority": "https://other.attest.azure.net", "allOf": [pin] },
            ]}))
            .unwrap(),
            "2 authorities",
        ),
        (
            "a plain-http authority",
            serde_json::to_vec(&json!({ "version": "1.0.0", "anyOf": [
                { "authority": "http://plain.example", "allOf": [pin] },
            ]}))
            .unwrap(),
            "https",
        ),
        (
            "another version",
            serde_json::to_vec(&json!({ "version": "2.0.0", "anyOf": [] })).unwrap(),
            "version",
        ),
        ("not JSON", b"anyOf".to_vec(), "not JSON"),
        (
            "a key twice",
            br#"{"version":"1.0.0","anyOf":[],"anyOf":[{"authority":"https://a.example","allOf":[]}]}"#
                .to_vec(),
            "twice",
        ),
        (
            "a key twice in two cases",
            serde_json::to_vec(&json!({ "version": "1.0.0", "anyOf": [
                { "authority": ISSUER, "allOf": [pin], "AllOf": [pin] },
            ]}))
            .unwrap(),
            "twice",
        ),
        (
            "an SVN above the range",
            skr(json!([pin, claim("x-ms-sgx-svn", "greater", 65_535.into())])),
            "no SVN",
        ),
    ];
    for (name, policy, says) in cases {
        let err = import_skr_policy(&policy, "certs.json").unwrap_err();
        assert_eq!(err.code(), "unrepresentable-policy");
        assert!(err.to_string().contains(says), "{name}: {err}");
    }
}
