//! WireGuard metrics. The device keeps its counters inside the engine that
//! the datapath locks for every packet, so a scrape must not read them
//! directly: a sampler task copies them once a second (one short lock, the
//! same as `wg show`) into a [`WgSample`] behind an atomic pointer, and the
//! collector reads that. However often Prometheus scrapes, the datapath sees
//! one short lock a second.
//!
//! Handshake counts are kept per peer by the device and vanish with a
//! removed peer; the sampler adds each peer's increase to a running total
//! instead, so `edge_wireguard_handshakes_total` never goes down.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use geoedge_wireguard::{Device, DropReason, PublicKey};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tokio::task::JoinHandle;

use super::family::{desc, Family};
use super::names::{self as n, Def};

/// How often the sampler reads the device.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// One peer, as sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSample {
    /// The peer's public key (base64): the label.
    pub key: String,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Unix time of its last handshake (0: none).
    pub last_handshake: f64,
}

/// The device's counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WgSample {
    /// Every configured peer.
    pub peers: Vec<PeerSample>,
    /// Handshakes completed, over all peers ever configured.
    pub handshakes_completed: u64,
    /// Initiations from unknown keys.
    pub unknown_peer: u64,
    /// Handshakes refused under load.
    pub under_load: u64,
    /// Datagrams that failed a check.
    pub invalid_packets: u64,
    /// Every counter of the engine.
    pub engine: geoedge_wireguard::EngineStats,
}

/// Builds samples, keeping the running handshake total.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Each peer's handshake count at the last sample.
    seen: HashMap<PublicKey, u64>,
    /// The running total.
    completed: u64,
}

impl Sampler {
    /// Reads the device (one short lock on its engine).
    pub fn sample(&mut self, device: &Device) -> WgSample {
        let engine = device.stats();
        let (now, wall) = (Instant::now(), SystemTime::now());
        let peers: Vec<(PublicKey, geoedge_wireguard::PeerStats)> =
            device.with_peers(|p| p.iter().map(|p| (*p.public_key(), *p.stats())).collect());
        self.fold(&peers, now, wall, engine)
    }

    /// Turns one read of the device into a sample (separate for tests).
    pub fn fold(
        &mut self,
        peers: &[(PublicKey, geoedge_wireguard::PeerStats)],
        now: Instant,
        wall: SystemTime,
        engine: geoedge_wireguard::EngineStats,
    ) -> WgSample {
        let mut seen = HashMap::with_capacity(peers.len());
        let mut out = Vec::with_capacity(peers.len());
        for (key, s) in peers {
            let before = self.seen.get(key).copied().unwrap_or(0);
            // A count below the last one is a peer removed and added again.
            self.completed += if s.handshakes_completed >= before {
                s.handshakes_completed - before
            } else {
                s.handshakes_completed
            };
            seen.insert(*key, s.handshakes_completed);
            let last_handshake = s
                .last_handshake_wall(now, wall)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            out.push(PeerSample {
                key: key.to_string(),
                rx_bytes: s.rx_bytes,
                tx_bytes: s.tx_bytes,
                last_handshake,
            });
        }
        self.seen = seen;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        WgSample {
            peers: out,
            handshakes_completed: self.completed,
            unknown_peer: engine.unknown_peer,
            under_load: engine.under_load,
            invalid_packets: engine.invalid_datagrams(),
            engine,
        }
    }
}

/// The latest sample, shared by the sampler and the collector.
#[derive(Debug, Default)]
pub struct WgMetrics {
    latest: ArcSwapOption<WgSample>,
}

impl WgMetrics {
    /// Samples `device` now and then every [`SAMPLE_INTERVAL`] until the
    /// returned task is aborted or the device is gone. Holds only a weak
    /// reference, so the device's owner can still shut it down.
    pub fn follow(self: &Arc<Self>, device: &Arc<Device>) -> JoinHandle<()> {
        let this = Arc::clone(self);
        let device: Weak<Device> = Arc::downgrade(device);
        tokio::spawn(async move {
            let mut sampler = Sampler::default();
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(device) = device.upgrade() else {
                    return;
                };
                let sample = sampler.sample(&device);
                drop(device);
                this.latest.store(Some(Arc::new(sample)));
            }
        })
    }

    /// The latest sample, if any.
    pub fn latest(&self) -> Option<Arc<WgSample>> {
        self.latest.load_full()
    }
}

const WG_METRICS: &[Def] = &[
    n::WIREGUARD_PEERS,
    n::WIREGUARD_PEER_BYTES_TOTAL,
    n::WIREGUARD_PEER_LAST_HANDSHAKE,
    n::WIREGUARD_HANDSHAKES_TOTAL,
    n::WIREGUARD_INVALID_PACKETS_TOTAL,
    n::WIREGUARD_DROPS_TOTAL,
    n::WIREGUARD_COOKIE_REPLIES_TOTAL,
    n::WIREGUARD_UNKNOWN_PEER_REPLAYS_TOTAL,
    n::WIREGUARD_RATE_LIMITER_SOURCES,
];

/// Exports the latest sample (nothing until the backhaul is up).
pub struct WgCollector {
    metrics: Arc<WgMetrics>,
    descs: Vec<Desc>,
}

impl WgCollector {
    /// A collector over `metrics`.
    pub fn new(metrics: Arc<WgMetrics>) -> Self {
        Self {
            metrics,
            descs: WG_METRICS.iter().map(desc).collect(),
        }
    }
}

impl Collector for WgCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(s) = self.metrics.latest() else {
            return Vec::new();
        };
        let mut peers = Family::new(n::WIREGUARD_PEERS);
        peers.add(&[], s.peers.len() as f64);
        let mut bytes = Family::new(n::WIREGUARD_PEER_BYTES_TOTAL);
        let mut handshake = Family::new(n::WIREGUARD_PEER_LAST_HANDSHAKE);
        for p in &s.peers {
            bytes.add(&[&p.key, "rx"], p.rx_bytes as f64);
            bytes.add(&[&p.key, "tx"], p.tx_bytes as f64);
            handshake.add(&[&p.key], p.last_handshake);
        }
        let mut handshakes = Family::new(n::WIREGUARD_HANDSHAKES_TOTAL);
        handshakes.add(&["completed"], s.handshakes_completed as f64);
        handshakes.add(&["unknown_peer"], s.unknown_peer as f64);
        handshakes.add(&["under_load"], s.under_load as f64);
        let mut invalid = Family::new(n::WIREGUARD_INVALID_PACKETS_TOTAL);
        invalid.add(&[], s.invalid_packets as f64);
        let mut drops = Family::new(n::WIREGUARD_DROPS_TOTAL);
        for reason in DropReason::ALL {
            drops.add(&[reason.as_str()], s.engine.drops(reason) as f64);
        }
        let mut cookies = Family::new(n::WIREGUARD_COOKIE_REPLIES_TOTAL);
        cookies.add(&[], s.engine.cookie_replies as f64);
        let mut replays = Family::new(n::WIREGUARD_UNKNOWN_PEER_REPLAYS_TOTAL);
        replays.add(&[], s.engine.unknown_peer_replays as f64);
        let mut sources = Family::new(n::WIREGUARD_RATE_LIMITER_SOURCES);
        sources.add(&[], s.engine.rate_limiter_sources as f64);
        [
            peers, bytes, handshake, handshakes, invalid, drops, cookies, replays, sources,
        ]
        .map(Family::finish)
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoedge_wireguard::{EngineStats, PeerStats, PrivateKey};

    fn key() -> PublicKey {
        PrivateKey::generate().unwrap().public_key()
    }

    #[test]
    fn handshake_total_never_goes_down_as_peers_come_and_go() {
        let (a, b) = (key(), key());
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let stats = |hs: u64, ago: Option<u64>| PeerStats {
            handshakes_completed: hs,
            last_handshake: ago.map(|s| now - Duration::from_secs(s)),
            rx_bytes: 10,
            tx_bytes: 20,
            ..PeerStats::default()
        };
        let mut s = Sampler::default();
        let first = s.fold(
            &[(a, stats(2, Some(5))), (b, stats(0, None))],
            now,
            wall,
            EngineStats::default(),
        );
        assert_eq!(first.handshakes_completed, 2);
        let pa = first.peers.iter().find(|p| p.key == a.to_string()).unwrap();
        assert_eq!(pa.last_handshake, 1_699_999_995.0);
        let pb = first.peers.iter().find(|p| p.key == b.to_string()).unwrap();
        assert_eq!(pb.last_handshake, 0.0);
        // b handshakes three times; a is removed.
        let second = s.fold(&[(b, stats(3, Some(1)))], now, wall, EngineStats::default());
        assert_eq!(second.handshakes_completed, 5);
        assert_eq!(second.peers.len(), 1);
        // a comes back with a fresh count.
        let third = s.fold(
            &[(a, stats(1, Some(0))), (b, stats(3, Some(1)))],
            now,
            wall,
            EngineStats {
                malformed: 7,
                unknown_peer: 2,
                ..EngineStats::default()
            },
        );
        assert_eq!(third.handshakes_completed, 6);
        assert_eq!((third.invalid_packets, third.unknown_peer), (9, 2));
    }

    #[test]
    fn nothing_is_exported_before_the_first_sample() {
        let m = Arc::new(WgMetrics::default());
        let c = WgCollector::new(Arc::clone(&m));
        assert!(c.collect().is_empty());
        m.latest.store(Some(Arc::new(WgSample::default())));
        let names: Vec<_> = c.collect().iter().map(|f| f.name().to_owned()).collect();
        assert!(names.contains(&"edge_wireguard_invalid_packets_total".to_owned()));
    }

    #[test]
    fn every_engine_counter_is_exported() {
        let m = Arc::new(WgMetrics::default());
        let c = WgCollector::new(Arc::clone(&m));
        let mut engine = EngineStats {
            cookie_replies: 449_000,
            unknown_peer_replays: 77,
            rate_limiter_sources: 3,
            ..EngineStats::default()
        };
        // A distinct count for each reason: 1, 2, 3...
        let fields = [
            &mut engine.not_ip,
            &mut engine.no_route,
            &mut engine.no_endpoint,
            &mut engine.buffer_too_small,
            &mut engine.malformed,
            &mut engine.unknown_peer,
            &mut engine.unknown_index,
            &mut engine.unauthenticated,
            &mut engine.replayed,
            &mut engine.unexpected,
            &mut engine.under_load,
            &mut engine.expired,
            &mut engine.source_not_allowed,
            &mut engine.rate_limited,
            &mut engine.rate_limiter_full,
        ];
        assert_eq!(fields.len(), DropReason::ALL.len());
        for (i, f) in fields.into_iter().enumerate() {
            *f = i as u64 + 1;
        }
        m.latest.store(Some(Arc::new(WgSample {
            engine,
            ..WgSample::default()
        })));
        let families = c.collect();
        let family = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let drops = family("edge_wireguard_drops_total");
        assert_eq!(drops.get_metric().len(), DropReason::ALL.len());
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            let m = drops
                .get_metric()
                .iter()
                .find(|m| m.get_label()[0].value() == reason.as_str())
                .unwrap_or_else(|| panic!("no reason {}", reason.as_str()));
            assert_eq!(
                m.get_counter().get_value(),
                i as f64 + 1.0,
                "{}",
                reason.as_str()
            );
        }
        let value = |name: &str| family(name).get_metric()[0].get_counter().get_value();
        assert_eq!(value("edge_wireguard_cookie_replies_total"), 449_000.0);
        assert_eq!(value("edge_wireguard_unknown_peer_replays_total"), 77.0);
        let sources = family("edge_wireguard_rate_limiter_sources").get_metric()[0]
            .get_gauge()
            .get_value();
        assert_eq!(sources, 3.0);
    }
}
