//! The self-describing canary value (DESIGN §2.1): every value says who wrote it, when, in
//! which run, as which write, for which key, and carries a checksum over all of it, so a read
//! can tell fresh data from stale, lost, foreign or corrupt data without asking anyone.
//!
//! Layout (little-endian), [`HEADER_SIZE`] bytes, then padding up to `value_size`:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic and format version, `RCv1` |
//! | 4..12 | 64-bit hash of instance and target names ([`owner_hash`]) |
//! | 12..20 | epoch: process start, µs since the Unix epoch |
//! | 20..28 | sequence number of the write, per target |
//! | 28..32 | key index |
//! | 32..40 | write timestamp, µs since the Unix epoch |
//! | 40..48 | checksum of bytes 0..40 and of the padding |
//! | 48.. | padding derived from the sequence number |

/// Bytes before the padding; a `value_size` below this cannot hold a value.
pub const HEADER_SIZE: usize = 48;
const MAGIC: &[u8; 4] = b"RCv1";

/// The decoded header of a canary value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub owner: u64,
    pub epoch_us: u64,
    pub seq: u64,
    pub key_index: u32,
    pub written_us: u64,
}

/// Why a value is not a well-formed canary value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("value shorter than the header")]
    TooShort,
    #[error("unknown magic or format version")]
    BadMagic,
    #[error("checksum mismatch")]
    BadChecksum,
}

/// FNV-1a, 64 bit: tiny, dependency-free and plenty to tell instances apart and to catch
/// accidental corruption (this is an integrity check against bugs and bit rot, not an attacker).
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The hash that separates the keyspaces of instances and targets sharing one store.
pub fn owner_hash(instance: &str, target: &str) -> u64 {
    let h = fnv1a(FNV_OFFSET, instance.as_bytes());
    let h = fnv1a(h, &[0]);
    fnv1a(h, target.as_bytes())
}

impl Payload {
    /// Writes the value into `out` (cleared first), padded to at least `size` bytes.
    pub fn encode_into(&self, size: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.owner.to_le_bytes());
        out.extend_from_slice(&self.epoch_us.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.key_index.to_le_bytes());
        out.extend_from_slice(&self.written_us.to_le_bytes());
        let total = size.max(HEADER_SIZE);
        out.resize(total, 0);
        fill_padding(self.seq, &mut out[HEADER_SIZE..]);
        let sum = checksum(&out[..40], &out[HEADER_SIZE..]);
        out[40..48].copy_from_slice(&sum.to_le_bytes());
    }

    /// Decodes and verifies a value read back from the store.
    pub fn decode(bytes: &[u8]) -> Result<Payload, DecodeError> {
        if bytes.len() < HEADER_SIZE {
            return Err(DecodeError::TooShort);
        }
        if &bytes[0..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let stored = u64_at(bytes, 40);
        if checksum(&bytes[..40], &bytes[HEADER_SIZE..]) != stored {
            return Err(DecodeError::BadChecksum);
        }
        Ok(Payload {
            owner: u64_at(bytes, 4),
            epoch_us: u64_at(bytes, 12),
            seq: u64_at(bytes, 20),
            key_index: u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes")),
            written_us: u64_at(bytes, 32),
        })
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn checksum(header: &[u8], padding: &[u8]) -> u64 {
    fnv1a(fnv1a(FNV_OFFSET, header), padding)
}

/// Printable padding that changes with the sequence number, so a value spliced from two
/// writes fails the checksum and `redis-cli GET` output stays readable.
fn fill_padding(seq: u64, pad: &mut [u8]) {
    for (i, b) in pad.iter_mut().enumerate() {
        *b = b'a' + ((seq.wrapping_add(i as u64)) % 26) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload {
            owner: owner_hash("canary-0", "a"),
            epoch_us: 1_700_000_000_000_000,
            seq: 4242,
            key_index: 242,
            written_us: 1_700_000_001_000_000,
        }
    }

    #[test]
    fn a_value_round_trips_at_every_size_from_the_header_up() {
        let mut buf = Vec::new();
        for size in [0, HEADER_SIZE, HEADER_SIZE + 1, 64, 1000] {
            sample().encode_into(size, &mut buf);
            assert_eq!(buf.len(), size.max(HEADER_SIZE));
            assert_eq!(Payload::decode(&buf), Ok(sample()));
        }
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let mut buf = Vec::new();
        sample().encode_into(80, &mut buf);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(
                Payload::decode(&bad).is_err(),
                "byte {i} flipped undetected"
            );
        }
    }

    #[test]
    fn short_and_foreign_values_are_rejected() {
        assert_eq!(Payload::decode(b"hello"), Err(DecodeError::TooShort));
        assert_eq!(Payload::decode(&[b'x'; 64]), Err(DecodeError::BadMagic));
        let mut buf = Vec::new();
        sample().encode_into(64, &mut buf);
        buf.truncate(60);
        assert_eq!(Payload::decode(&buf), Err(DecodeError::BadChecksum));
    }

    #[test]
    fn owner_hash_separates_instances_and_targets() {
        assert_ne!(owner_hash("a", "b"), owner_hash("b", "a"));
        assert_ne!(owner_hash("ab", "c"), owner_hash("a", "bc"));
        assert_eq!(owner_hash("a", "b"), owner_hash("a", "b"));
    }
}
