//! What makes an encapsulated request usable once: inside its encryption, every Oblivious HTTP
//! request to a Cloak server carries the client's clock and a random id, as two Binary HTTP
//! header fields. The server refuses a request whose time is more than [`WINDOW_SECONDS`] from
//! its own clock, and one whose id it has seen within the window; so a captured
//! `message/ohttp-req` replayed by whoever relays it runs at most once.
//!
//! The host can see neither field (they are encrypted to the enclave's key) and cannot change
//! them (the encryption is authenticated).

/// The request time: Unix seconds, in decimal.
pub const TIME_HEADER: &str = "cloak-request-time";
/// The request id: 16 random bytes, as 32 lowercase hex digits.
pub const ID_HEADER: &str = "cloak-request-nonce";
/// How far a request's time may be from the server's clock, either way.
pub const WINDOW_SECONDS: u64 = 60;
/// Length of the random id, in bytes.
pub const ID_LEN: usize = 16;

/// A request's time field, if it is one.
pub fn parse_time(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A request's id field, if it is one.
pub fn parse_id(value: &[u8]) -> Option<[u8; ID_LEN]> {
    if value.len() != 2 * ID_LEN || value.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let mut id = [0u8; ID_LEN];
    hex::decode_to_slice(value, &mut id).ok()?;
    Some(id)
}

/// The id field's value for `id`.
pub fn format_id(id: &[u8; ID_LEN]) -> String {
    hex::encode(id)
}

/// Whether a request made at `time` is inside the window around `now`.
pub fn within_window(time: u64, now: u64) -> bool {
    time.abs_diff(now) <= WINDOW_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_only_in_their_one_spelling() {
        assert_eq!(parse_time(b"1700000000"), Some(1_700_000_000));
        for bad in [
            &b""[..],
            b"-1",
            b"+5",
            b"1e9",
            b" 17",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        let id = [0xabu8; ID_LEN];
        assert_eq!(parse_id(format_id(&id).as_bytes()), Some(id));
        assert_eq!(parse_id("AB".repeat(ID_LEN).as_bytes()), None);
        assert_eq!(parse_id("ab".repeat(ID_LEN - 1).as_bytes()), None);
        assert_eq!(parse_id("zz".repeat(ID_LEN).as_bytes()), None);
    }

    #[test]
    fn the_window_is_inclusive_both_ways() {
        assert!(within_window(1000, 1000 + WINDOW_SECONDS));
        assert!(within_window(1000 + WINDOW_SECONDS, 1000));
        assert!(!within_window(1000, 1001 + WINDOW_SECONDS));
        assert!(!within_window(1001 + WINDOW_SECONDS, 1000));
    }
}
