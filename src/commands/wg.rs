//! The WireGuard backhaul glue: starts geoedge's WireGuard device from the
//! settings, gives it the peers of routing.db's `wg_peers`, and follows
//! every reload of the table (an edit that changes one peer leaves the
//! others' sessions alone). A row with this POP's own public key is
//! skipped, so one routing.db listing every POP serves them all. Also the
//! `geoedge wg up` command: a POP host running only the WireGuard endpoint.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use geoedge_routing::watcher::{self, Reloader, WatchOptions};
use geoedge_routing::{Endpoint, RoutingTable, WgPeer};
use geoedge_wireguard::{Device, DeviceConfig, InterfaceConfig, PeerConfig, PublicKey, TunSetup};
use ipnet::IpNet;
use tokio::task::JoinHandle;

use crate::commands::wg_key::load_private_key;
use crate::control::config::{Settings, WgSettings};
use crate::control::table_events;

/// A running WireGuard device and the task feeding it peers.
pub struct Backhaul {
    /// The device (TUN, UDP socket, configuration socket).
    device: Arc<Device>,
    /// Follows the routing table's `wg_peers`.
    follower: Option<JoinHandle<()>>,
}

impl Backhaul {
    /// Starts the device with the peers `table` holds now, and follows it.
    pub async fn start(
        settings: &WgSettings,
        table: Option<Arc<RoutingTable>>,
    ) -> anyhow::Result<Backhaul> {
        let private_key = load_private_key(&settings.private_key_file)?;
        let own = private_key.public_key();
        let peers = match &table {
            Some(t) => peer_configs(&t.snapshot().wg_peers, &own).await,
            None => Vec::new(),
        };
        let tun = if settings.attach {
            TunSetup::Attach
        } else {
            TunSetup::Create {
                addresses: settings.addresses.clone(),
                mtu: settings.mtu,
            }
        };
        let device = Device::start(DeviceConfig {
            name: settings.interface.clone(),
            interface: InterfaceConfig {
                private_key,
                listen_port: settings.listen_port,
            },
            peers,
            tun,
            uapi_dir: Some(geoedge_wireguard::device::UAPI_DIR.into()),
        })
        .await
        .with_context(|| format!("starting WireGuard interface {}", settings.interface))?;
        device.set_rekey_after(settings.rekey_after);
        tracing::info!(
            interface = %settings.interface,
            listen_port = device.listen_port(),
            peers = device.with_peers(|p| p.len()),
            "WireGuard backhaul up"
        );
        // Routes to the peers' allowed IPs go into an interface we created;
        // an attached one is routed by whoever made it.
        let mut routes =
            (!settings.attach).then(|| Routes::new(&settings.interface, &settings.addresses));
        if let Some(r) = routes.as_mut() {
            r.sync(&device.with_peers(|p| p.configs()));
        }
        let device = Arc::new(device);
        let follower = table.map(|t| tokio::spawn(follow(t, Arc::clone(&device), own, routes)));
        Ok(Backhaul { device, follower })
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Stops following and tears the device down (TUN, socket files).
    pub async fn shutdown(mut self) {
        if let Some(f) = self.follower.take() {
            f.abort();
            let _ = f.await;
        }
        match Arc::try_unwrap(self.device) {
            Ok(device) => device.shutdown().await,
            Err(device) => drop(device),
        }
    }
}

/// The device's peer list for routing.db's peers, without the row of this
/// POP itself (`own`: its public key); host-name endpoints are resolved now
/// (an unresolvable one is left unset: the peer can still reach us, and we
/// retry at the next reload).
async fn peer_configs(peers: &[WgPeer], own: &PublicKey) -> Vec<PeerConfig> {
    let mut out = Vec::with_capacity(peers.len());
    for p in peers {
        // routing.db's key has the WireGuard key's rules (32 bytes, not all
        // zero), so the conversion does not fail.
        let Ok(public_key) = PublicKey::try_from(p.public_key.to_bytes()) else {
            tracing::warn!(peer = %p.public_key, "not a WireGuard public key; peer skipped");
            continue;
        };
        if public_key == *own {
            continue;
        }
        let endpoint = match &p.endpoint {
            None => None,
            Some(Endpoint::Addr(a)) => Some(*a),
            Some(Endpoint::Host(host, port)) => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(mut addrs) => addrs.next(),
                    Err(e) => {
                        tracing::warn!(peer = %p.public_key, endpoint = %host, "cannot resolve endpoint: {e}");
                        None
                    }
                }
            }
        };
        out.push(PeerConfig {
            public_key,
            endpoint,
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: p.persistent_keepalive,
        });
    }
    out
}

/// The kernel routes that send the peers' allowed IPs into our interface
/// (beyond the interface's own subnets, which the kernel routes already).
struct Routes {
    /// The interface.
    interface: String,
    /// The interface's own networks.
    connected: Vec<IpNet>,
    /// Routes installed so far.
    installed: BTreeSet<IpNet>,
}

impl Routes {
    fn new(interface: &str, addresses: &[IpNet]) -> Self {
        Self {
            interface: interface.to_owned(),
            connected: addresses.iter().map(IpNet::trunc).collect(),
            installed: BTreeSet::new(),
        }
    }

    /// Adds routes for new allowed IPs and removes those no peer has any more.
    fn sync(&mut self, peers: &[PeerConfig]) {
        let wanted: BTreeSet<IpNet> = peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied())
            .filter(|net| !self.connected.iter().any(|c| c.contains(net)))
            .collect();
        for net in wanted.difference(&self.installed) {
            self.ip_route("replace", net);
        }
        for net in self.installed.difference(&wanted) {
            self.ip_route("del", net);
        }
        self.installed = wanted;
    }

    fn ip_route(&self, verb: &str, net: &IpNet) {
        let family = if net.addr().is_ipv4() { "-4" } else { "-6" };
        let net_text = net.to_string();
        let args = [
            family,
            "route",
            verb,
            net_text.as_str(),
            "dev",
            self.interface.as_str(),
        ];
        match std::process::Command::new("ip").args(args).output() {
            Ok(out) if out.status.success() => {
                tracing::debug!(route = %net, interface = %self.interface, "ip route {verb}")
            }
            Ok(out) => tracing::warn!(
                route = %net,
                "ip route {verb} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => tracing::warn!(route = %net, "cannot run ip route {verb}: {e}"),
        }
    }
}

/// Reconciles the device (and its routes) with the table after every
/// reload that changed something.
async fn follow(
    table: Arc<RoutingTable>,
    device: Arc<Device>,
    own: PublicKey,
    mut routes: Option<Routes>,
) {
    let mut changes = table_events::subscribe(&table);
    // A change applied between the device's start and the subscription is
    // caught by reconciling once now (nothing to do otherwise).
    let mut peers_changed = true;
    loop {
        if !peers_changed {
            // Until routing.db changes its peers (a burst of changes is one
            // reconcile).
            let Some(changes) = changes.changed().await else {
                return;
            };
            if !changes.iter().any(|c| c.diff.peers_changed) {
                continue;
            }
        }
        peers_changed = false;
        let generation = table.generation();
        let peers = peer_configs(&table.snapshot().wg_peers, &own).await;
        match device.reconcile(&peers) {
            Ok(r) if r.is_empty() => {}
            Ok(r) => tracing::info!(
                added = r.added.len(),
                removed = r.removed.len(),
                endpoint_changed = r.endpoint_changed.len(),
                allowed_ips_changed = r.allowed_ips_changed.len(),
                keepalive_changed = r.keepalive_changed.len(),
                generation,
                "WireGuard peers updated"
            ),
            Err(e) => tracing::warn!(
                generation,
                "WireGuard peers not updated: {e}; keeping the current peers"
            ),
        }
        if let Some(r) = routes.as_mut() {
            r.sync(&device.with_peers(|p| p.configs()));
        }
    }
}

/// `geoedge wg up`: only the WireGuard endpoint, for a backend POP host.
/// Peers come from `routing_db`'s `wg_peers` when one is configured (and
/// follow its edits), and can be changed with `wg set` either way.
pub fn up(settings: &Settings) -> anyhow::Result<ExitCode> {
    let wg = settings
        .wireguard
        .as_ref()
        .context("geoedge wg up needs wg_interface, wg_private_key_file and wg_address")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (table, _reloader) = match &settings.routing_db {
        Some(path) => {
            let table = Arc::new(RoutingTable::new());
            watcher::load_into(&table, path)
                .with_context(|| format!("loading {}", path.display()))?;
            let reloader =
                Reloader::spawn(path.clone(), Arc::clone(&table), WatchOptions::default())?;
            (Some(table), Some(reloader))
        }
        None => (None, None),
    };
    runtime.block_on(async {
        let backhaul = Backhaul::start(wg, table).await?;
        println!(
            "wireguard {} up, listening on UDP port {}",
            wg.interface,
            backhaul.device().listen_port()
        );
        crate::control::lifecycle::stop_signal().await;
        tracing::info!("stopping");
        backhaul.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoedge_wireguard::PrivateKey;

    fn row(key: PublicKey, endpoint: &str, allowed: &str) -> WgPeer {
        WgPeer {
            public_key: geoedge_routing::PeerKey::from_bytes(*key.as_bytes()).unwrap(),
            endpoint: Some(Endpoint::Addr(endpoint.parse().unwrap())),
            allowed_ips: vec![allowed.parse().unwrap()],
            persistent_keepalive: Some(25),
            region: None,
        }
    }

    #[tokio::test]
    async fn the_pop_s_own_row_is_skipped() {
        let keys: Vec<PublicKey> = (0..3)
            .map(|_| PrivateKey::generate().unwrap().public_key())
            .collect();
        let rows = vec![
            row(keys[0], "192.0.2.1:51820", "10.99.0.1/32"),
            row(keys[1], "192.0.2.2:51820", "10.99.0.2/32"),
            row(keys[2], "192.0.2.3:51820", "10.99.0.3/32"),
        ];
        let peers = peer_configs(&rows, &keys[1]).await;
        let got: Vec<PublicKey> = peers.iter().map(|p| p.public_key).collect();
        assert_eq!(got, vec![keys[0], keys[2]]);
        assert_eq!(peers[1].endpoint, Some("192.0.2.3:51820".parse().unwrap()));
    }

    proptest::proptest! {
        /// routing.db's key type (no cryptography) accepts exactly the keys
        /// the WireGuard crate accepts, with the same bytes and messages.
        #[test]
        fn routing_and_wireguard_read_keys_alike(
            s in "[A-Za-z0-9+/= ]{0,48}",
            bytes in proptest::prelude::any::<[u8; 32]>(),
        ) {
            let encoded = geoedge_routing::PeerKey::from_bytes(bytes)
                .map(|k| k.to_string())
                .unwrap_or_default();
            let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
            for text in [s.as_str(), encoded.as_str(), zero] {
                let ours = text.parse::<geoedge_routing::PeerKey>();
                let theirs = text.parse::<PublicKey>();
                proptest::prop_assert_eq!(
                    ours.as_ref().map(|k| k.to_bytes()).map_err(ToString::to_string),
                    theirs.as_ref().map(|k| *k.as_bytes()).map_err(ToString::to_string)
                );
            }
        }
    }
}
