//! Allowed IPs: a longest-prefix-match table from IP networks to a peer.
//!
//! WireGuard's "cryptokey routing": an outgoing packet goes to the peer whose
//! allowed IPs hold the longest prefix matching its destination, and an
//! incoming packet is accepted from a peer only when its source address
//! routes back to that same peer. A network belongs to at most one peer:
//! inserting it for another peer moves it, as `wg set` does.
//!
//! The table keeps, per address family, one hash map per prefix length in
//! use, longest first; a lookup masks the address once per length in use
//! (a handful in practice) and returns the first hit. Networks are stored
//! truncated to their prefix (`10.0.0.1/8` is `10.0.0.0/8`).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One address family's networks: `(prefix length, masked address → handle)`
/// for each prefix length in use, longest prefix first.
#[derive(Debug, Clone)]
struct Family<H> {
    /// Address width in bits (32 or 128).
    bits: u8,
    levels: Vec<(u8, HashMap<u128, H>)>,
}

impl<H: Copy + Eq> Family<H> {
    fn new(bits: u8) -> Self {
        Self {
            bits,
            levels: Vec::new(),
        }
    }

    fn mask(&self, addr: u128, len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            let shift = u32::from(self.bits - len);
            (addr >> shift) << shift
        }
    }

    fn insert(&mut self, addr: u128, len: u8, handle: H) -> Option<H> {
        let key = self.mask(addr, len);
        let pos = match self.levels.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(pos) => pos,
            Err(pos) => {
                self.levels.insert(pos, (len, HashMap::new()));
                pos
            }
        };
        self.levels[pos].1.insert(key, handle)
    }

    fn remove(&mut self, addr: u128, len: u8) -> Option<H> {
        let key = self.mask(addr, len);
        let pos = self.levels.binary_search_by(|(l, _)| len.cmp(l)).ok()?;
        let old = self.levels[pos].1.remove(&key);
        if self.levels[pos].1.is_empty() {
            self.levels.remove(pos);
        }
        old
    }

    fn lookup(&self, addr: u128) -> Option<(u128, u8, H)> {
        self.levels.iter().find_map(|(len, map)| {
            let key = self.mask(addr, *len);
            map.get(&key).map(|h| (key, *len, *h))
        })
    }

    fn retain(&mut self, mut keep: impl FnMut(H) -> bool) {
        for (_, map) in &mut self.levels {
            map.retain(|_, h| keep(*h));
        }
        self.levels.retain(|(_, map)| !map.is_empty());
    }

    fn len(&self) -> usize {
        self.levels.iter().map(|(_, m)| m.len()).sum()
    }
}

/// A longest-prefix-match table from IP networks to a handle (a peer).
#[derive(Debug, Clone)]
pub struct AllowedIps<H> {
    v4: Family<H>,
    v6: Family<H>,
}

impl<H: Copy + Eq> Default for AllowedIps<H> {
    fn default() -> Self {
        Self::new()
    }
}

fn split(net: IpNet) -> (bool, u128, u8) {
    match net {
        IpNet::V4(n) => (true, u128::from(u32::from(n.addr())), n.prefix_len()),
        IpNet::V6(n) => (false, u128::from(n.addr()), n.prefix_len()),
    }
}

fn join(v4: bool, addr: u128, len: u8) -> IpNet {
    if v4 {
        // `addr` came from a u32 and `len` from a valid IPv4 prefix.
        IpNet::V4(Ipv4Net::new_assert((addr as u32).into(), len))
    } else {
        IpNet::V6(Ipv6Net::new_assert(addr.into(), len))
    }
}

impl<H: Copy + Eq> AllowedIps<H> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            v4: Family::new(32),
            v6: Family::new(128),
        }
    }

    fn family(&mut self, v4: bool) -> &mut Family<H> {
        if v4 {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Routes `net` (truncated to its prefix) to `handle`; returns the handle
    /// that held exactly this network before, if any.
    pub fn insert(&mut self, net: IpNet, handle: H) -> Option<H> {
        let (v4, addr, len) = split(net);
        self.family(v4).insert(addr, len, handle)
    }

    /// Removes exactly `net` (truncated to its prefix); returns its handle.
    pub fn remove(&mut self, net: IpNet) -> Option<H> {
        let (v4, addr, len) = split(net);
        self.family(v4).remove(addr, len)
    }

    /// Removes every network routed to `handle`.
    pub fn remove_handle(&mut self, handle: H) {
        self.retain(|h| h != handle);
    }

    /// Keeps only the networks whose handle satisfies `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(H) -> bool) {
        self.v4.retain(&mut keep);
        self.v6.retain(&mut keep);
    }

    /// The handle of the longest prefix holding `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<H> {
        self.lookup_net(addr).map(|(_, h)| h)
    }

    /// The longest prefix holding `addr`, and its handle.
    pub fn lookup_net(&self, addr: IpAddr) -> Option<(IpNet, H)> {
        match addr {
            IpAddr::V4(a) => self
                .v4
                .lookup(u128::from(u32::from(a)))
                .map(|(k, l, h)| (join(true, k, l), h)),
            IpAddr::V6(a) => self
                .v6
                .lookup(u128::from(a))
                .map(|(k, l, h)| (join(false, k, l), h)),
        }
    }

    /// Every network routed to `handle`, IPv4 first, longest prefix first.
    pub fn nets_of(&self, handle: H) -> Vec<IpNet> {
        self.iter()
            .filter(|(_, h)| *h == handle)
            .map(|(n, _)| n)
            .collect()
    }

    /// Every `(network, handle)`, IPv4 first, longest prefix first (in no
    /// particular order within one prefix length).
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, H)> + '_ {
        let v4 = self.v4.levels.iter().flat_map(|(len, map)| {
            map.iter()
                .map(move |(addr, h)| (join(true, *addr, *len), *h))
        });
        let v6 = self.v6.levels.iter().flat_map(|(len, map)| {
            map.iter()
                .map(move |(addr, h)| (join(false, *addr, *len), *h))
        });
        v4.chain(v6)
    }

    /// How many networks the table holds.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the table holds no network.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every network.
    pub fn clear(&mut self) {
        self.v4.levels.clear();
        self.v6.levels.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_families_are_separate() {
        let mut t = AllowedIps::new();
        assert!(t.is_empty());
        t.insert(net("0.0.0.0/0"), 1);
        t.insert(net("10.0.0.0/8"), 2);
        t.insert(net("10.1.0.0/16"), 3);
        t.insert(net("10.1.2.3/32"), 4);
        t.insert(net("::/0"), 5);
        t.insert(net("fd00::/8"), 6);
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(1));
        assert_eq!(t.lookup(ip("10.200.0.1")), Some(2));
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(3));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(4));
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(5));
        assert_eq!(t.lookup(ip("fd12::1")), Some(6));
        assert_eq!(t.lookup_net(ip("10.1.9.9")), Some((net("10.1.0.0/16"), 3)));
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn networks_are_truncated_and_move_between_handles() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.0.0.7/24"), 1), None);
        assert_eq!(
            t.lookup_net(ip("10.0.0.200")),
            Some((net("10.0.0.0/24"), 1))
        );
        // The same network for another peer moves it.
        assert_eq!(t.insert(net("10.0.0.0/24"), 2), Some(1));
        assert_eq!(t.lookup(ip("10.0.0.1")), Some(2));
        assert_eq!(t.nets_of(1), Vec::<IpNet>::new());
        assert_eq!(t.nets_of(2), vec![net("10.0.0.0/24")]);
        assert_eq!(t.remove(net("10.0.0.9/24")), Some(2));
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
        assert!(t.is_empty());
    }

    #[test]
    fn remove_handle_drops_only_that_peer() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.0/24"), 1);
        t.insert(net("10.0.1.0/24"), 1);
        t.insert(net("fd00::/64"), 1);
        t.insert(net("10.0.2.0/24"), 2);
        t.remove_handle(1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
        assert_eq!(t.lookup(ip("10.0.2.1")), Some(2));
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.0.2.1")), None);
    }

    #[test]
    fn host_routes_and_default_routes_at_the_edges() {
        let mut t = AllowedIps::new();
        t.insert(net("255.255.255.255/32"), 1);
        t.insert(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 2);
        assert_eq!(t.lookup(IpAddr::V4(Ipv4Addr::BROADCAST)), Some(1));
        assert_eq!(t.lookup(ip("255.255.255.254")), None);
        assert_eq!(t.lookup(IpAddr::V6(Ipv6Addr::from(u128::MAX))), Some(2));
        assert_eq!(t.lookup(IpAddr::V6(Ipv6Addr::from(u128::MAX - 1))), None);
    }

    /// The reference: scan every entry, keep the longest containing prefix;
    /// later inserts of the same network replace earlier ones.
    fn reference(entries: &[(IpNet, u8)], removed: &[IpNet], addr: IpAddr) -> Option<u8> {
        let mut live: Vec<(IpNet, u8)> = Vec::new();
        for (n, h) in entries {
            let n = n.trunc();
            live.retain(|(m, _)| *m != n);
            live.push((n, *h));
        }
        for r in removed {
            live.retain(|(m, _)| *m != r.trunc());
        }
        live.iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, h)| *h)
    }

    fn arb_v4_net() -> impl Strategy<Value = IpNet> {
        // Few distinct high bits so that prefixes overlap often.
        (0u32..16, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
            let addr = (hi << 28) | (lo >> 4);
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap())
        })
    }

    fn arb_v6_net() -> impl Strategy<Value = IpNet> {
        (0u128..16, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, len)| {
            let addr = (hi << 124) | (lo >> 4);
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap())
        })
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![arb_v4_net(), arb_v6_net()]
    }

    fn arb_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u32..16, any::<u32>())
                .prop_map(|(hi, lo)| IpAddr::V4(Ipv4Addr::from((hi << 28) | (lo >> 4)))),
            (0u128..16, any::<u128>())
                .prop_map(|(hi, lo)| IpAddr::V6(Ipv6Addr::from((hi << 124) | (lo >> 4)))),
        ]
    }

    proptest! {
        #[test]
        fn matches_brute_force_reference(
            entries in proptest::collection::vec((arb_net(), 0u8..5), 0..40),
            removals in proptest::collection::vec(0usize..40, 0..10),
            probes in proptest::collection::vec(arb_addr(), 1..40),
        ) {
            let mut t = AllowedIps::new();
            for (n, h) in &entries {
                t.insert(*n, *h);
            }
            let removed: Vec<IpNet> = removals
                .iter()
                .filter_map(|i| entries.get(*i).map(|(n, _)| *n))
                .collect();
            for r in &removed {
                t.remove(*r);
            }
            // Probe the networks' own addresses too (exact boundaries).
            let mut all: Vec<IpAddr> = probes.clone();
            all.extend(entries.iter().map(|(n, _)| n.addr()));
            all.extend(entries.iter().map(|(n, _)| n.broadcast()));
            for a in all {
                prop_assert_eq!(t.lookup(a), reference(&entries, &removed, a), "addr {}", a);
            }
            // iter() lists exactly the live networks.
            let mut listed: Vec<(IpNet, u8)> = t.iter().collect();
            listed.sort();
            let mut expected: Vec<(IpNet, u8)> = Vec::new();
            for (n, h) in &entries {
                let n = n.trunc();
                expected.retain(|(m, _)| *m != n);
                expected.push((n, *h));
            }
            for r in &removed {
                expected.retain(|(m, _)| *m != r.trunc());
            }
            expected.sort();
            prop_assert_eq!(t.len(), expected.len());
            prop_assert_eq!(listed, expected);
        }
    }
}
