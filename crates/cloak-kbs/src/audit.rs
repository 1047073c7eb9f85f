//! The hash-chained audit log.
//!
//! Each record's `hash` is
//!
//! ```text
//! HMAC-SHA256(audit key, prev ‖ canonical(record))
//!
//! prev        = the previous record's hash, 32 raw bytes (32 zero bytes before the first)
//! canonical   = "cloak-kbs-audit/v1" ‖ 0x00
//!               ‖ u64be(seq) ‖ u64be(time)
//!               ‖ str(event) ‖ str(model) ‖ str(decision) ‖ str(reason) ‖ str(client)
//!               ‖ u32be(number of measurements)
//!               ‖ for each measurement, in byte order of its name: str(name) ‖ str(value)
//! str(s)      = u32be(byte length of s) ‖ s (UTF-8)
//! ```
//!
//! The audit key is derived from the master key (see [`crate::master`]), so whoever can edit
//! the database but does not hold the master key cannot forge a record, and an edited, deleted
//! or reordered record breaks the chain. Deleting the *last* records cannot be told from a
//! shorter log: note the `head` hash [`verify`] reports to detect a later truncation.

use std::collections::HashSet;

use cloak_proto::kbs::{AuditRecord, AuditVerification};

use crate::master::hmac_sha256;
use crate::store::NewAuditRecord;

/// The `prev` of the first record: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const DOMAIN: &[u8] = b"cloak-kbs-audit/v1";

/// The `problem` of a record whose own fields were changed.
pub const PROBLEM_EDITED: &str = "edited";
/// The `problem` of a log with a record missing before this one.
pub const PROBLEM_MISSING: &str = "missing";
/// The `problem` of a record found at another place than it was written.
pub const PROBLEM_REORDERED: &str = "reordered";

/// The chain hash (hex) of `record` at `seq` after `prev` (hex).
pub fn chain_hash(key: &[u8; 32], record: &NewAuditRecord, seq: u64, prev: &str) -> String {
    let canonical = canonical(
        seq,
        record.time,
        [
            &record.event,
            &record.model,
            &record.decision,
            &record.reason,
            &record.client,
        ],
        record.measurements.iter(),
    );
    hex::encode(mac(key, prev, &canonical))
}

fn mac(key: &[u8; 32], prev: &str, canonical: &[u8]) -> [u8; 32] {
    // A `prev` that is not 64 hex digits (an edited row) is hashed as it is written, so that
    // it still yields a (wrong) value rather than an error.
    let mut prev_bytes = [0u8; 32];
    if hex::decode_to_slice(prev, &mut prev_bytes).is_err() {
        return hmac_sha256(key, &[b"invalid prev\0", prev.as_bytes(), canonical]);
    }
    hmac_sha256(key, &[&prev_bytes, canonical])
}

fn canonical<'a>(
    seq: u64,
    time: u64,
    fields: [&String; 5],
    measurements: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(DOMAIN);
    out.push(0);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&time.to_be_bytes());
    for field in fields {
        push_str(&mut out, field);
    }
    push_len(&mut out, measurements.len());
    for (name, value) in measurements {
        push_str(&mut out, name);
        push_str(&mut out, value);
    }
    out
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    push_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Fields are far below 4 GiB (requests are limited to 1 MiB).
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// Whether `record`'s hash is the one its fields and `prev` give, compared in constant time.
fn self_consistent(key: &[u8; 32], record: &AuditRecord) -> bool {
    let canonical = canonical(
        record.seq,
        record.time,
        [
            &record.event,
            &record.model,
            &record.decision,
            &record.reason,
            &record.client,
        ],
        record.measurements.iter(),
    );
    let expected = mac(key, &record.prev, &canonical);
    let Ok(stored) = hex::decode(&record.hash) else {
        return false;
    };
    subtle::ConstantTimeEq::ct_eq(stored.as_slice(), expected.as_slice()).into()
}

/// Checks the chain: sequence numbers 1, 2, 3 … without gaps, each record's hash recomputes
/// under `key`, and each `prev` is the hash of the record before it. The first failure is
/// reported with its sequence number and problem:
///
/// * `missing`: a sequence number is absent (its number is reported), or a record's `prev`
///   names no record in the log (records before it were deleted and the rest renumbered);
/// * `reordered`: a record's `prev` is the hash of another record than the one before it;
/// * `edited`: a record's fields (or its `prev` or `hash`) no longer give its hash.
pub fn verify(key: &[u8; 32], records: &[AuditRecord]) -> AuditVerification {
    let mut check = ChainCheck::new(key);
    for record in records {
        check.know(&record.hash);
    }
    for record in records {
        check.push(record);
    }
    check.finish()
}

/// [`verify`] over a log read in pages: the hashes of every record first (32 bytes each are
/// held), then the records in order, one page at a time.
pub struct ChainCheck<'k> {
    key: &'k [u8; 32],
    hashes: HashSet<[u8; 32]>,
    expected_prev: String,
    expected_seq: u64,
    records: u64,
    head: String,
    broken: Option<(u64, &'static str)>,
}

impl<'k> ChainCheck<'k> {
    /// A check under `key`; give it every record's hash ([`ChainCheck::know`]), then every
    /// record in order ([`ChainCheck::push`]).
    pub fn new(key: &'k [u8; 32]) -> Self {
        Self {
            key,
            hashes: HashSet::new(),
            expected_prev: GENESIS.to_owned(),
            expected_seq: 1,
            records: 0,
            head: GENESIS.to_owned(),
            broken: None,
        }
    }

    /// Notes that a record of the log has this hash (hex), to tell a reordered record from a
    /// missing one.
    pub fn know(&mut self, hash: &str) {
        if let Some(hash) = hash_bytes(hash) {
            self.hashes.insert(hash);
        }
    }

    /// Checks the next record.
    pub fn push(&mut self, record: &AuditRecord) {
        self.records = self.records.saturating_add(1);
        self.head.clone_from(&record.hash);
        if self.broken.is_some() {
            return;
        }
        if record.seq != self.expected_seq {
            self.broken = Some((self.expected_seq, PROBLEM_MISSING));
            return;
        }
        let consistent = self_consistent(self.key, record);
        let linked = record.prev == self.expected_prev;
        let prev_elsewhere = record.prev != record.hash
            && hash_bytes(&record.prev).is_some_and(|h| self.hashes.contains(&h));
        match (consistent, linked) {
            (true, true) => {}
            (_, false) if prev_elsewhere => {
                self.broken = Some((record.seq, PROBLEM_REORDERED));
                return;
            }
            (true, false) => {
                self.broken = Some((record.seq, PROBLEM_MISSING));
                return;
            }
            (false, _) => {
                self.broken = Some((record.seq, PROBLEM_EDITED));
                return;
            }
        }
        self.expected_prev.clone_from(&record.hash);
        self.expected_seq = self.expected_seq.saturating_add(1);
    }

    /// The verdict.
    pub fn finish(self) -> AuditVerification {
        match self.broken {
            None => AuditVerification {
                intact: true,
                records: self.records,
                head: self.expected_prev,
                first_bad_seq: None,
                problem: None,
            },
            Some((seq, problem)) => AuditVerification {
                intact: false,
                records: self.records,
                head: self.head,
                first_bad_seq: Some(seq),
                problem: Some(problem.to_owned()),
            },
        }
    }
}

fn hash_bytes(hex_hash: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn log(key: &[u8; 32], n: u64) -> Vec<AuditRecord> {
        let mut records = Vec::new();
        let mut prev = GENESIS.to_owned();
        for seq in 1..=n {
            let new = NewAuditRecord {
                time: 1000 + seq,
                event: "release".into(),
                model: "m".into(),
                decision: "granted".into(),
                reason: "granted".into(),
                client: "127.0.0.1:1".into(),
                measurements: BTreeMap::from([("mrenclave".into(), format!("{seq:064x}"))]),
            };
            let hash = chain_hash(key, &new, seq, &prev);
            records.push(AuditRecord {
                seq,
                time: new.time,
                event: new.event,
                model: new.model,
                decision: new.decision,
                reason: new.reason,
                client: new.client,
                measurements: new.measurements,
                prev: prev.clone(),
                hash: hash.clone(),
            });
            prev = hash;
        }
        records
    }

    fn problem(v: &AuditVerification) -> (Option<u64>, Option<&str>) {
        (v.first_bad_seq, v.problem.as_deref())
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let key = [7; 32];
        let records = log(&key, 4);
        let v = verify(&key, &records);
        assert!(v.intact);
        assert_eq!(v.records, 4);
        assert_eq!(v.head, records[3].hash);
        let empty = verify(&key, &[]);
        assert!(empty.intact);
        assert_eq!(empty.head, GENESIS);
    }

    #[test]
    fn another_key_does_not_verify() {
        let records = log(&[7; 32], 2);
        assert_eq!(
            problem(&verify(&[8; 32], &records)),
            (Some(1), Some(PROBLEM_EDITED))
        );
    }

    #[test]
    fn every_field_is_covered() {
        let key = [7; 32];
        let records = log(&key, 3);
        let edits: [fn(&mut AuditRecord); 9] = [
            |r| r.time += 1,
            |r| r.event.push('x'),
            |r| r.model.push('x'),
            |r| r.decision.push('x'),
            |r| r.reason.push('x'),
            |r| r.client.push('x'),
            |r| {
                r.measurements.insert("debug".into(), "true".into());
            },
            |r| r.hash.replace_range(0..1, "f"),
            |r| r.prev = "zz".into(),
        ];
        for edit in edits {
            let mut edited = records.clone();
            edit(&mut edited[1]);
            assert_eq!(
                problem(&verify(&key, &edited)),
                (Some(2), Some(PROBLEM_EDITED))
            );
        }
    }

    #[test]
    fn deletion_and_reordering_are_named() {
        let key = [7; 32];
        let records = log(&key, 4);
        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(
            problem(&verify(&key, &deleted)),
            (Some(2), Some(PROBLEM_MISSING))
        );
        let mut renumbered = deleted.clone();
        for (i, r) in renumbered.iter_mut().enumerate() {
            r.seq = i as u64 + 1;
        }
        assert!(!verify(&key, &renumbered).intact);
        let mut first_gone = records[1..].to_vec();
        for (i, r) in first_gone.iter_mut().enumerate() {
            r.seq = i as u64 + 1;
        }
        assert_eq!(
            problem(&verify(&key, &first_gone)),
            (Some(1), Some(PROBLEM_EDITED))
        );
        let mut swapped = records.clone();
        swapped.swap(1, 2);
        swapped[1].seq = 2;
        swapped[2].seq = 3;
        assert_eq!(
            problem(&verify(&key, &swapped)),
            (Some(2), Some(PROBLEM_REORDERED))
        );
    }
}
