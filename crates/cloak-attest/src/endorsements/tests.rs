use super::*;

fn file(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/openenclave/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn facts() -> Vec<serde_json::Value> {
    let facts: serde_json::Value = serde_json::from_slice(&file("facts.json")).unwrap();
    facts["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["endorsements"].is_string())
        .cloned()
        .collect()
}

#[test]
fn every_oe_endorsement_reads_into_collateral_with_the_recorded_dates() {
    let vectors = facts();
    assert_eq!(vectors.len(), 2);
    for v in vectors {
        let path = v["endorsements"].as_str().unwrap();
        let parsed = Endorsements::parse(&file(path)).unwrap();
        assert_eq!(
            parsed.created_at(),
            v["creation_unix"].as_u64().unwrap(),
            "{path}"
        );
        let collateral = parsed.collateral();
        assert_eq!(collateral.tcb_info_version(), 2, "{path}");
        assert_eq!(
            collateral.tcb_info_id(),
            "",
            "{path}: TCB info v2 has no id"
        );
        assert_eq!(
            collateral.tcb_evaluation_data_number(),
            u32::try_from(
                v["collateral"]["tcb_info"]["tcbEvaluationDataNumber"]
                    .as_u64()
                    .unwrap()
            )
            .unwrap()
        );
        assert_eq!(
            collateral.validity_window(),
            (
                v["valid_from"].as_u64().unwrap(),
                v["valid_until"].as_u64().unwrap()
            ),
            "{path}"
        );
        // The signed objects are kept byte for byte: the TCB info text is the one in the file.
        let raw = &collateral.raw;
        assert!(raw.tcb_info.starts_with("{\"version\":2,"), "{path}");
        assert!(
            String::from_utf8_lossy(&file(path)).contains(&raw.tcb_info),
            "{path}"
        );
        assert!(raw.qe_identity.starts_with("{\"id\":\"QE\""), "{path}");
        assert_eq!(raw.tcb_info_signature.len(), 64);
        assert_eq!(raw.qe_identity_signature.len(), 64);
        // Three chains of two certificates (signing certificate or PCK CA, and the root).
        assert!(collateral.chains().all(|(_, chain)| chain.len() == 2));
    }
}

/// The endorsements rebuilt with item `index` replaced.
fn with_item(bytes: &[u8], index: usize, item: &[u8]) -> Vec<u8> {
    let mut items: Vec<Vec<u8>> = split(bytes).unwrap().iter().map(|i| i.to_vec()).collect();
    items[index] = item.to_vec();
    assemble(&items)
}

fn assemble(items: &[Vec<u8>]) -> Vec<u8> {
    let data_len: usize = items.iter().map(Vec::len).sum();
    let buffer = 4 * items.len() + data_len;
    let mut out = Vec::new();
    for word in [1_u32, 2, u32::try_from(buffer).unwrap(), 9] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    let mut offset = 0_u32;
    for item in items {
        out.extend_from_slice(&offset.to_le_bytes());
        offset += u32::try_from(item.len()).unwrap();
    }
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

#[test]
fn reassembling_the_items_gives_back_the_file() {
    let good = file("endorsements");
    let items: Vec<Vec<u8>> = split(&good).unwrap().iter().map(|i| i.to_vec()).collect();
    assert_eq!(assemble(&items), good);
}

#[test]
fn crls_may_arrive_hex_encoded_as_pccs_3_serves_them() {
    let good = file("endorsements");
    let items = split(&good).unwrap();
    let der = Endorsements::parse(&good).unwrap();
    let mut hexed = good.clone();
    for index in [3, 4] {
        let body = items[index].strip_suffix(b"\0").unwrap_or(items[index]);
        let mut text = hex::encode(body).into_bytes();
        text.push(0);
        hexed = with_item(&hexed, index, &text);
    }
    let parsed = Endorsements::parse(&hexed).unwrap();
    assert_eq!(parsed.collateral().raw, der.collateral().raw);
}

#[test]
fn broken_endorsements_are_typed_errors() {
    let good = file("endorsements");
    let items = split(&good).unwrap();
    let tcb_info = String::from_utf8(items[1].to_vec()).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("header only", good[..16].to_vec()),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("a byte more", [good.as_slice(), b"\0"].concat()),
        (
            "version 2 of the item",
            with_item(&good, 0, &2_u32.to_le_bytes()),
        ),
        ("version item of 3 bytes", with_item(&good, 0, &[1, 0, 0])),
        ("TCB info not JSON", with_item(&good, 1, b"{\"tcbInfo\":\0")),
        (
            "TCB info signed as the QE identity",
            with_item(
                &good,
                1,
                tcb_info
                    .replacen("tcbInfo", "enclaveIdentity", 1)
                    .as_bytes(),
            ),
        ),
        (
            "QE identity in the TCB info's place",
            with_item(&good, 1, items[6]),
        ),
        (
            "signature not hex",
            with_item(
                &good,
                1,
                tcb_info
                    .replacen("\"signature\":\"f2", "\"signature\":\"zz", 1)
                    .as_bytes(),
            ),
        ),
        (
            "an unknown field",
            with_item(&good, 1, tcb_info.replacen("{", "{\"x\":1,", 1).as_bytes()),
        ),
        (
            "a NUL inside a chain",
            with_item(&good, 2, b"-----BEGIN\0x\0"),
        ),
        ("a chain that is not PEM", with_item(&good, 2, b"nothing\0")),
        (
            "a CRL that is not DER",
            with_item(&good, 3, b"\x30\x82\x01\0"),
        ),
        ("odd hex CRL", with_item(&good, 3, b"abc\0")),
        ("no date", with_item(&good, 8, b"\0")),
        ("a bad date", with_item(&good, 8, b"2022-13-40T00:00:00Z\0")),
    ];
    let mut wrong_header = |at: usize, value: u32, name: &'static str| {
        let mut bytes = good.clone();
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        cases.push((name, bytes));
    };
    wrong_header(0, 2, "endorsements version 2");
    wrong_header(4, 1, "enclave type 1");
    wrong_header(8, 12954, "buffer size one short");
    wrong_header(12, 8, "eight elements");
    wrong_header(16, 1, "first offset not 0");
    wrong_header(20, u32::MAX, "offset past the end");
    wrong_header(24, 3, "offsets out of order");
    for (name, bytes) in cases {
        let err = Endorsements::parse(&bytes).unwrap_err();
        assert_eq!(err.code(), "malformed-collateral", "{name}: {err}");
    }
}
