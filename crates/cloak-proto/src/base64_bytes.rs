//! Byte fields as standard base64 strings in JSON (`#[serde(with = "crate::base64_bytes")]`),
//! for the wire messages that carry quotes, keys and ciphertext.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

pub(crate) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(bytes))
}

pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    STANDARD
        .decode(text.as_bytes())
        .map_err(serde::de::Error::custom)
}
