//! Hash tags that spread the canary's keys over every slot range (DESIGN §12.2): key *i* of
//! `keys` carries a tag whose slot is `floor(i * 16384 / keys)`, so every shard gets writes in
//! proportion to the slots it owns. Slots are computed by the `redis` crate (CRC16 of the
//! tag, as the server does), never by hand.

use std::collections::HashMap;
use std::sync::OnceLock;

use redis::cluster_routing::Slot;

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// One tag per slot: the shortest base-36 strings found for it, packed in one string.
struct Table {
    text: String,
    /// Where the tag of slot `s` ends in `text` (it starts where the previous one ends).
    ends: Vec<u32>,
}

static TABLE: OnceLock<Table> = OnceLock::new();

/// The hash tag (the text between `{` and `}`) whose slot is `slot`.
pub fn tag(slot: u16) -> &'static str {
    let t = TABLE.get_or_init(build);
    let s = usize::from(slot.min(SLOTS - 1));
    let start = if s == 0 { 0 } else { t.ends[s - 1] as usize };
    &t.text[start..t.ends[s] as usize]
}

/// The slot key `index` of `keys` is written to.
pub fn slot_of(index: u32, keys: u32) -> u16 {
    let keys = u64::from(keys.max(1));
    let slot = u64::from(index.min(keys as u32 - 1)) * u64::from(SLOTS) / keys;
    slot as u16
}

/// The stride that spreads consecutive writes over the slot space: key `j` of the
/// round-robin sits at position `j * stride mod keys`, a stride near `keys / φ` and coprime
/// with `keys` (a bijection). Written in order 0, 1, 2... the keys would sweep one shard
/// after another — a shard killed while the writes are elsewhere would go unseen for most
/// of a cycle; spread, any few consecutive writes land in different shards.
pub fn stride(keys: u32) -> u32 {
    let keys = keys.max(1);
    let mut s = ((f64::from(keys) * 0.618_033_988_75).round() as u32).max(1);
    while gcd(s, keys) != 1 {
        s += 1;
    }
    s % keys.max(2)
}

/// The position of round-robin key `index` among `keys` for a `stride` from [`stride`].
pub fn spread(index: u32, keys: u32, stride: u32) -> u32 {
    ((u64::from(index) * u64::from(stride)) % u64::from(keys.max(1))) as u32
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Counts up in base 36 until every slot has a tag: about 170,000 CRC16s, a few
/// milliseconds, once per process (and only with a cluster target).
fn build() -> Table {
    let mut found: HashMap<Slot, String> = HashMap::with_capacity(usize::from(SLOTS));
    let mut n: u64 = 0;
    while found.len() < usize::from(SLOTS) {
        let tag = base36(n);
        found.entry(Slot::for_key(tag.as_bytes())).or_insert(tag);
        n += 1;
    }
    let mut text = String::with_capacity(usize::from(SLOTS) * 4);
    let mut ends = Vec::with_capacity(usize::from(SLOTS));
    for s in 0..SLOTS {
        let slot = Slot::new(s).expect("below SLOTS");
        text.push_str(&found[&slot]);
        ends.push(text.len() as u32);
    }
    Table { text, ends }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it_inside_a_canary_key() {
        for s in 0..SLOTS {
            let key = format!("redis-canary:i:t:{{{}}}:{s}", tag(s));
            assert_eq!(
                Slot::for_key(key.as_bytes()),
                Slot::new(s).unwrap(),
                "{key}"
            );
            assert!(tag(s).len() <= 5, "{}", tag(s));
        }
    }

    #[test]
    fn consecutive_writes_land_in_different_shards_and_every_key_is_used() {
        for keys in [1u32, 2, 3, 10, 999, 1000, 1024, 16384, 100_000] {
            let st = stride(keys);
            let used: std::collections::HashSet<u32> =
                (0..keys).map(|j| spread(j, keys, st)).collect();
            assert_eq!(used.len(), keys as usize, "a bijection for {keys}");
        }
        let (keys, st) = (1000, stride(1000));
        let third = |j: u32| slot_of(spread(j, keys, st), keys) / 5462;
        // Among any 3 consecutive writes at least 2 shards of 3; over 6 all three.
        for j in 0..keys - 6 {
            let mut s: Vec<u16> = (j..j + 6).map(third).collect();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 3, "writes {j}..{}", j + 6);
        }
    }

    #[test]
    fn keys_spread_over_the_slots_in_proportion() {
        assert_eq!(slot_of(0, 1000), 0);
        assert_eq!(slot_of(999, 1000), 16367);
        assert_eq!(slot_of(500, 1000), 8192);
        // Three equal shards get a third of the keys each.
        let per: Vec<usize> = [(0u16, 5460u16), (5461, 10922), (10923, 16383)]
            .iter()
            .map(|(a, b)| {
                (0..1000)
                    .filter(|&i| (*a..=*b).contains(&slot_of(i, 1000)))
                    .count()
            })
            .collect();
        assert!(per.iter().all(|&n| (332..=335).contains(&n)), "{per:?}");
        // More keys than slots: every slot is used.
        let used: std::collections::HashSet<u16> = (0..20000).map(|i| slot_of(i, 20000)).collect();
        assert_eq!(used.len(), usize::from(SLOTS));
        assert_eq!(slot_of(5, 1), 0);
    }
}
