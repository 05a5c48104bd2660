//! The audit log's hash chain: each partition's records, numbered 1, 2, ... by the chain
//! itself (Kafka offsets may have gaps), folded one by one into a SHA-256 head, so that a
//! signed checkpoint naming the head after record *n* fixes every one of those *n* records,
//! their order and their offsets.
//!
//! `head₀ = SHA-256(tag ‖ topic ‖ partition)`;
//! `headₙ = SHA-256(tag ‖ headₙ₋₁ ‖ n ‖ offset ‖ SHA-256(timestamp ‖ key ‖ value ‖ headers))`,
//! every variable-length part length-prefixed. The audit sealer extends it and publishes
//! checkpoints; `replay-tool audit verify` recomputes it from the topic.

use rdkafka::Timestamp;
use rdkafka::message::{Headers, Message};
use sha2::{Digest, Sha256};

const GENESIS: &[u8] = b"healthplane-audit-chain-v1/genesis";
const LINK: &[u8] = b"healthplane-audit-chain-v1/link";
const RECORD: &[u8] = b"healthplane-audit-chain-v1/record";

/// One partition's chain: its head and how many records it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    head: [u8; 32],
    length: i64,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn part(hasher: &mut Sha256, bytes: Option<&[u8]>) {
    match bytes {
        // A missing part and an empty one differ.
        None => hasher.update(u64::MAX.to_be_bytes()),
        Some(bytes) => {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
    }
}

/// SHA-256 (hex) of a checkpoint's value bytes: what the next checkpoint names as previous.
pub fn checkpoint_hash(value: &[u8]) -> String {
    hex(&Sha256::digest(value))
}

impl Chain {
    /// The empty chain of `topic`'s `partition`.
    pub fn genesis(topic: &str, partition: i32) -> Chain {
        let mut hasher = Sha256::new();
        hasher.update(GENESIS);
        part(&mut hasher, Some(topic.as_bytes()));
        hasher.update(partition.to_be_bytes());
        Chain {
            head: hasher.finalize().into(),
            length: 0,
        }
    }

    /// A chain as a checkpoint left it: `head` (hex) after `length` records.
    pub fn resume(head: &str, length: i64) -> Option<Chain> {
        Some(Chain {
            head: unhex(head)?,
            length,
        })
    }

    /// Appends one record: its offset, timestamp, key, value and headers (in order).
    pub fn append(
        &mut self,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let mut record = Sha256::new();
        record.update(RECORD);
        record.update(timestamp_ms.unwrap_or(i64::MIN).to_be_bytes());
        part(&mut record, key);
        part(&mut record, value);
        record.update((headers.len() as u64).to_be_bytes());
        for (name, value) in headers {
            part(&mut record, Some(name.as_bytes()));
            part(&mut record, *value);
        }
        self.length += 1;
        let mut link = Sha256::new();
        link.update(LINK);
        link.update(self.head);
        link.update(self.length.to_be_bytes());
        link.update(offset.to_be_bytes());
        link.update(record.finalize());
        self.head = link.finalize().into();
    }

    /// Appends a consumed record.
    pub fn append_message(&mut self, message: &impl Message) {
        let headers: Vec<(&str, Option<&[u8]>)> = message
            .headers()
            .map(|headers| headers.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        let timestamp = match message.timestamp() {
            Timestamp::NotAvailable => None,
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
        };
        self.append(
            message.offset(),
            timestamp,
            message.key(),
            message.payload(),
            &headers,
        );
    }

    /// The head, hex.
    pub fn head(&self) -> String {
        hex(&self.head)
    }

    /// Records appended since genesis.
    pub fn length(&self) -> i64 {
        self.length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(records: &[(i64, &[u8])]) -> Chain {
        let mut chain = Chain::genesis("audit", 3);
        for (offset, value) in records {
            chain.append(
                *offset,
                Some(1),
                Some(b"k"),
                Some(value),
                &[("h", Some(b"v"))],
            );
        }
        chain
    }

    #[test]
    fn the_head_fixes_every_record_its_order_and_its_offset() {
        let base = chain_of(&[(0, b"a"), (1, b"b"), (5, b"c")]);
        assert_eq!(base.length(), 3);
        assert_eq!(base, chain_of(&[(0, b"a"), (1, b"b"), (5, b"c")]));
        for other in [
            chain_of(&[(0, b"a"), (1, b"B"), (5, b"c")]),
            chain_of(&[(0, b"a"), (5, b"c")]),
            chain_of(&[(0, b"a"), (1, b"b"), (2, b"x"), (5, b"c")]),
            chain_of(&[(1, b"b"), (0, b"a"), (5, b"c")]),
            chain_of(&[(0, b"a"), (1, b"b"), (4, b"c")]),
        ] {
            assert_ne!(base.head(), other.head());
        }
        assert_ne!(
            Chain::genesis("audit", 3).head(),
            Chain::genesis("audit", 4).head()
        );
        // Headers, the key and a missing value are covered too.
        let mut a = Chain::genesis("t", 0);
        let mut b = a.clone();
        a.append(0, None, Some(b"k"), None, &[]);
        b.append(0, None, Some(b"k"), Some(b""), &[]);
        assert_ne!(a.head(), b.head());
    }

    #[test]
    fn a_chain_resumes_from_its_checkpointed_head() {
        let mut whole = chain_of(&[(0, b"a")]);
        let mut resumed = Chain::resume(&whole.head(), whole.length()).unwrap();
        whole.append(1, None, None, Some(b"b"), &[]);
        resumed.append(1, None, None, Some(b"b"), &[]);
        assert_eq!(whole, resumed);
        assert!(Chain::resume("zz", 1).is_none());
        assert!(Chain::resume(&"é".repeat(32), 1).is_none());
    }
}
