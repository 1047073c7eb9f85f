//! Untrusted KServe v2 bodies (from any client, or from a server back to a client): parsing never
//! panics, never allocates beyond the limits, and whatever parses re-encodes and parses back to
//! the same request.
//!
//! Input layout: the first two bytes choose the header length (`0xFFFF`: a JSON-only body), the
//! rest is the body.
#![no_main]

use cloak_proto::kserve::{InferRequest, InferResponse, Limits, TensorEncoding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((split, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = u16::from_le_bytes(*split);
    let header_len = (split != u16::MAX).then_some(usize::from(split));
    let limits = Limits::default();
    if let Ok(request) = InferRequest::parse(body, header_len, &limits) {
        let encoded = request
            .encode(|_| TensorEncoding::Binary)
            .expect("a parsed request re-encodes as binary");
        let again = InferRequest::parse(encoded.body(), encoded.header_len(), &limits)
            .expect("a re-encoded request parses");
        assert_eq!(again, request);
    }
    if let Ok(response) = InferResponse::parse(body, header_len, &limits) {
        let encoded = response
            .encode(|_| TensorEncoding::Binary)
            .expect("a parsed response re-encodes as binary");
        let again = InferResponse::parse(encoded.body(), encoded.header_len(), &limits)
            .expect("a re-encoded response parses");
        assert_eq!(again, response);
    }
});
