//! Sharding: which instance of a cluster owns a stream. Every stream has a stable hash (the same in every process,
//! version and platform), and rendezvous (highest random weight) hashing picks its owner among `shards`, so that a
//! change of the shard count moves as few streams as possible: from `n` to `n + 1` shards, about `1 / (n + 1)` of
//! the streams move, and only to the new shard.
//!
//! The hash, written down so that it never changes by accident (the tests pin known values):
//! - a stream's hash is 64-bit FNV-1a over the UTF-8 bytes of `SYMBOL:timeframe`, the timeframe as Binance names
//!   it (`BTCUSDT:1m`, `ETHUSDT:1M`);
//! - the weight of shard `s` for a stream of hash `h` is `mix(h ^ mix(s + SHARD_SEED))`, where `mix` is SplitMix64's
//!   finaliser (a bijection on 64 bits that spreads FNV's weak low bits over the whole word);
//! - the owner is the shard of the highest weight (the lowest shard number on a tie).

use super::StreamKey;

/// FNV-1a's 64-bit offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a's 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Added to a shard number before it is mixed: the fractional part of the golden ratio, SplitMix64's increment.
const SHARD_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// The most shards a cluster may have: the owner of a stream weighs every shard.
pub const MAX_SHARDS: u32 = 1024;

/// 64-bit FNV-1a of `bytes`, continuing from `hash`.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable hash of a stream: 64-bit FNV-1a over `SYMBOL:timeframe`.
pub fn stream_hash(key: &StreamKey) -> u64 {
    let hash = fnv1a(FNV_OFFSET_BASIS, key.symbol.as_bytes());
    let hash = fnv1a(hash, b":");
    fnv1a(hash, key.timeframe.as_str().as_bytes())
}

/// The weight of `shard` for a stream whose hash is `hash`.
fn weight(hash: u64, shard: u32) -> u64 {
    mix(hash ^ mix(u64::from(shard).wrapping_add(SHARD_SEED)))
}

/// The shard, of `shards` (numbered from 0), that owns `key`: the one of the highest weight. 0 shards is taken as 1.
pub fn owner(key: &StreamKey, shards: u32) -> u32 {
    let hash = stream_hash(key);
    let mut best = (0, weight(hash, 0));
    for shard in 1..shards {
        let weight = weight(hash, shard);
        if weight > best.1 {
            best = (shard, weight);
        }
    }
    best.0
}

/// Why a (shard, shard count) pair is not a cluster position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("{0} is out of range: must be between 1 and {MAX_SHARDS}")]
    ShardsOutOfRange(i64),
    #[error("{shard} is out of range: shards are numbered from 0 to {} (`cluster.shards` is {shards})", shards - 1)]
    ShardOutOfRange { shard: i64, shards: u32 },
}

/// This instance's place in a cluster: shard `shard` of `shards`. The default, shard 0 of 1, owns every stream.
/// Two instances with the same place are replicas: both collect the same streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cluster {
    shard: u32,
    shards: u32,
}

impl Default for Cluster {
    fn default() -> Self {
        Self { shard: 0, shards: 1 }
    }
}

impl Cluster {
    /// Shard `shard` of `shards`; `shards` is checked first.
    pub fn new(shard: i64, shards: i64) -> Result<Self, ClusterError> {
        let shards = u32::try_from(shards)
            .ok()
            .filter(|shards| (1..=MAX_SHARDS).contains(shards))
            .ok_or(ClusterError::ShardsOutOfRange(shards))?;
        let shard = u32::try_from(shard)
            .ok()
            .filter(|&shard| shard < shards)
            .ok_or(ClusterError::ShardOutOfRange { shard, shards })?;
        Ok(Self { shard, shards })
    }

    pub fn shard(self) -> u32 {
        self.shard
    }

    pub fn shards(self) -> u32 {
        self.shards
    }

    /// Whether this shard owns `key`.
    pub fn owns(self, key: &StreamKey) -> bool {
        owner(key, self.shards) == self.shard
    }

    /// The streams of `keys` this shard owns, in their order.
    pub fn owned(self, keys: &[StreamKey]) -> Vec<StreamKey> {
        keys.iter().filter(|key| self.owns(key)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;

    /// 1,500 symbols on all 16 timeframes: the 24,000 streams of a whole-exchange desk.
    fn whole_exchange() -> Vec<StreamKey> {
        (0..1500).flat_map(|i| Timeframe::ALL.map(|tf| StreamKey::new(format!("SYM{i}USDT"), tf))).collect::<Vec<_>>()
    }

    #[test]
    fn the_hash_is_fnv_1a_over_symbol_colon_timeframe_and_pinned() {
        // TC0, TC1: FNV-1a's published test vectors ("" and "a").
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        // TC2: a stream hashes as the text `SYMBOL:timeframe`.
        let btc = StreamKey::new("BTCUSDT", Timeframe::M1);
        assert_eq!(stream_hash(&btc), fnv1a(FNV_OFFSET_BASIS, b"BTCUSDT:1m"));
        // TC3..TC5: pinned values: a change here reassigns streams between the shards of every running cluster.
        assert_eq!(stream_hash(&btc), 0x37f4_58e6_d35e_5fec);
        assert_eq!(stream_hash(&StreamKey::new("ETHUSDT", Timeframe::Mo1)), 0x8e42_1237_acc5_9790);
        assert_eq!(mix(0), 0);
        // TC6: the timeframe's case matters: 1M (a month) is not 1m (a minute).
        assert_ne!(stream_hash(&StreamKey::new("X", Timeframe::M1)), stream_hash(&StreamKey::new("X", Timeframe::Mo1)));
    }

    #[test]
    fn known_streams_have_pinned_owners() {
        // (symbol, timeframe, owner of 2, of 3, of 5 shards)
        let cases: [(&str, Timeframe, [u32; 3]); 7] = [
            // TC0..TC6: computed apart (in Python) from this code; a change of hash or weight shows here.
            ("BTCUSDT", Timeframe::M1, [1, 1, 1]),
            ("BTCUSDT", Timeframe::M5, [0, 2, 2]),
            ("ETHUSDT", Timeframe::M1, [1, 1, 4]),
            ("ETHUSDT", Timeframe::H1, [0, 2, 2]),
            ("SOLUSDT", Timeframe::D1, [0, 2, 2]),
            ("PAXGBTC", Timeframe::Mo1, [0, 2, 2]),
            ("XRPUSDT", Timeframe::M15, [0, 0, 0]),
        ];
        for (index, (symbol, timeframe, owners)) in cases.into_iter().enumerate() {
            let key = StreamKey::new(symbol, timeframe);
            assert_eq!([owner(&key, 2), owner(&key, 3), owner(&key, 5)], owners, "TC{index}: {key}");
        }
    }

    #[test]
    fn one_shard_and_zero_shards_own_everything() {
        let keys = whole_exchange();
        // TC0: the default cluster owns every stream.
        assert_eq!(Cluster::default().owned(&keys), keys);
        // TC1: 0 shards is taken as 1.
        assert!(keys.iter().all(|key| owner(key, 0) == 0 && owner(key, 1) == 0));
    }

    #[test]
    fn every_stream_has_exactly_one_owner() {
        let keys = whole_exchange();
        for shards in [2, 3, 7] {
            for key in &keys {
                let owners = (0..shards).filter(|&shard| Cluster { shard, shards }.owns(key)).count();
                assert_eq!(owners, 1, "{key} with {shards} shards");
            }
            // The shards' owned sets partition the streams, each in config order.
            let total: usize = (0..shards).map(|shard| Cluster { shard, shards }.owned(&keys).len()).sum();
            assert_eq!(total, keys.len());
        }
    }

    #[test]
    fn streams_spread_evenly_over_the_shards() {
        let keys = whole_exchange();
        for shards in [2u32, 3, 4, 8] {
            let fair = keys.len() as f64 / f64::from(shards);
            for shard in 0..shards {
                let owned = Cluster { shard, shards }.owned(&keys).len() as f64;
                assert!((owned - fair).abs() <= 0.05 * fair, "shard {shard} of {shards} owns {owned}, fair is {fair}");
            }
        }
    }

    #[test]
    fn a_new_shard_takes_its_share_and_nothing_else_moves() {
        let keys = whole_exchange();
        for shards in 1u32..=8 {
            let mut moved = 0;
            for key in &keys {
                let (before, after) = (owner(key, shards), owner(key, shards + 1));
                if before != after {
                    assert_eq!(after, shards, "{key} moved from {before} to {after}, not to the new shard");
                    moved += 1;
                }
            }
            let share = keys.len() as f64 / f64::from(shards + 1);
            assert!(
                (f64::from(moved) - share).abs() <= 0.05 * share,
                "{shards} -> {} shards moved {moved} streams, about {share} expected",
                shards + 1
            );
        }
    }

    #[test]
    fn a_cluster_position_is_checked() {
        let cases = [
            // TC0: the default.
            ((0, 1), Ok(Cluster::default())),
            // TC1: the last shard.
            ((2, 3), Ok(Cluster { shard: 2, shards: 3 })),
            // TC2, TC3: the most shards, and one more.
            ((0, 1024), Ok(Cluster { shard: 0, shards: 1024 })),
            ((0, 1025), Err(ClusterError::ShardsOutOfRange(1025))),
            // TC4, TC5: no shards, or a negative count.
            ((0, 0), Err(ClusterError::ShardsOutOfRange(0))),
            ((0, -1), Err(ClusterError::ShardsOutOfRange(-1))),
            // TC6: a shard past the count: shards are numbered from 0.
            ((3, 3), Err(ClusterError::ShardOutOfRange { shard: 3, shards: 3 })),
            // TC7: a negative shard.
            ((-1, 3), Err(ClusterError::ShardOutOfRange { shard: -1, shards: 3 })),
            // TC8: the count is checked first.
            ((5, 0), Err(ClusterError::ShardsOutOfRange(0))),
        ];
        for (index, ((shard, shards), expected)) in cases.into_iter().enumerate() {
            assert_eq!(Cluster::new(shard, shards), expected, "TC{index}");
        }
        let error = Cluster::new(3, 3).unwrap_err().to_string();
        assert_eq!(error, "3 is out of range: shards are numbered from 0 to 2 (`cluster.shards` is 3)");
        assert_eq!(Cluster::new(0, 0).unwrap_err().to_string(), "0 is out of range: must be between 1 and 1024");
        let cluster = Cluster::new(1, 4).unwrap();
        assert_eq!((cluster.shard(), cluster.shards()), (1, 4));
    }
}
