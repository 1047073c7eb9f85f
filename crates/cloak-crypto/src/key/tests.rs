use super::*;

#[test]
fn generated_keys_are_distinct_and_have_distinct_ids() {
    let a = ModelKey::generate().unwrap();
    let b = ModelKey::generate().unwrap();
    assert_ne!(a.expose(), b.expose());
    assert_ne!(a.id(), b.id());
    assert_ne!(a.expose(), &[0u8; KEY_LEN]);
}

#[test]
fn key_id_matches_independent_hkdf_computation() {
    // Computed with Python's hmac/hashlib (RFC 5869 HKDF written out by hand):
    // HKDF-SHA256(salt = "", ikm = 0x07 * 32, info = "cloak-model/v1 key-id")[..16].
    let key = ModelKey::from_bytes([7; KEY_LEN]);
    assert_eq!(key.id().to_string(), "645f5e4b24a31172d5c94c048e0bc06e");
}

#[test]
fn key_file_round_trips_and_names_the_key_id() {
    let key = ModelKey::generate().unwrap();
    let text = key.to_key_file();
    assert!(text.contains(&key.id().to_string()));
    let back = ModelKey::from_key_file(&text).unwrap();
    assert_eq!(back.expose(), key.expose());
}

#[test]
fn key_file_accepts_comments_blank_lines_and_uppercase_hex() {
    let text = format!(
        "\n# a comment\n\n  {KEY_FILE_PREFIX}{}  \n# trailing comment\n",
        "AB".repeat(32)
    );
    let key = ModelKey::from_key_file(&text).unwrap();
    assert_eq!(key.expose(), &[0xAB; KEY_LEN]);
}

#[test]
fn key_file_rejects_malformed_contents() {
    let good = format!("{KEY_FILE_PREFIX}{}", "00".repeat(32));
    let cases = [
        String::new(),
        "# only a comment\n".to_owned(),
        format!("{good}\n{good}\n"),
        format!("cloak-model-key-v2:{}", "00".repeat(32)),
        format!("{KEY_FILE_PREFIX}{}", "00".repeat(31)),
        format!("{KEY_FILE_PREFIX}{}", "00".repeat(33)),
        format!("{KEY_FILE_PREFIX}{}zz", "00".repeat(31)),
        format!("{good}\n#{}", "x".repeat(MAX_KEY_FILE_LEN)),
    ];
    for case in cases {
        let err = ModelKey::from_key_file(&case).unwrap_err();
        assert_eq!(err.code(), "malformed-key-file", "{case:?}");
    }
}

#[test]
fn debug_output_never_contains_key_material() {
    let key = ModelKey::from_bytes([0x5A; KEY_LEN]);
    let debug = format!("{key:?}");
    assert!(!debug.to_lowercase().contains("5a5a5a5a"), "{debug}");
    assert!(!debug.contains("90, 90"), "{debug}");
    assert!(debug.contains("redacted"));
    assert!(debug.contains(&key.id().to_string()));
}

#[test]
fn key_errors_never_echo_the_key_line() {
    let secret = "c0ffee".repeat(10);
    let err = ModelKey::from_key_file(&format!("{KEY_FILE_PREFIX}{secret}")).unwrap_err();
    assert!(!err.to_string().contains("c0ffee"), "{err}");
}

#[test]
fn key_files_up_to_the_size_limit_are_accepted() {
    let line = format!("{KEY_FILE_PREFIX}{}\n", "01".repeat(32));
    let mut text = String::from("#");
    text.push_str(&"x".repeat(MAX_KEY_FILE_LEN - line.len() - 2));
    text.push('\n');
    text.push_str(&line);
    assert_eq!(text.len(), MAX_KEY_FILE_LEN);
    assert!(ModelKey::from_key_file(&text).is_ok());
    text.insert(1, 'x');
    assert!(ModelKey::from_key_file(&text).is_err());
}
