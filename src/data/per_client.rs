//! Per-client limits on a connection's path: which limits hold a client
//! of an app (the settings, overridden per app by routing.db's `apps`
//! table), and the table, shared by every worker, that counts each
//! client's open connections and recent connects
//! ([`geoedge_client_limits::ClientTable`]: sharded, least recently used
//! evicted, no lock shared by all workers).
//!
//! A client is its address masked to the client prefix (`/32` and `/64`
//! by default), per app: its connections to one app do not count against
//! another's limits. Exempt networks are never counted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoedge_client_limits::{ClientGuard, ClientTable, Limits, Rate, Refused};
use geoedge_routing::snapshot::AppLimits;
use geoedge_routing::AppId;
use ipnet::IpNet;

/// The period of a rate that routing.db's `apps` gives a count and no
/// period, when the `client_rate` setting has none either.
pub const DEFAULT_RATE_PERIOD: Duration = Duration::from_secs(60);

/// A client of an app: the app and the client's masked address.
pub type ClientKey = (AppId, IpAddr);

/// The per-client limit settings of a connection (from its settings
/// snapshot).
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The default cap on a client's open connections (`None`: no cap).
    pub max_connections: Option<u32>,
    /// The default rate of a client's new connections (`None`: no limit).
    pub rate: Option<Rate>,
    /// Clients never held to a limit.
    pub exempt: &'a [IpNet],
    /// IPv4 clients are counted per network of this prefix.
    pub ipv4_prefix: u8,
    /// IPv6 clients are counted per network of this prefix.
    pub ipv6_prefix: u8,
}

impl Policy<'_> {
    /// Whether the settings set no limit (an app's row still may).
    pub fn is_off(&self) -> bool {
        self.max_connections.is_none() && self.rate.is_none()
    }
}

/// The limits a client of an app is held to: the settings', each replaced
/// by the app's row where it has one (0 there: no limit).
pub fn limits_for(policy: &Policy<'_>, app: Option<&AppLimits>) -> Limits {
    let Some(app) = app else {
        return Limits {
            max_connections: policy.max_connections,
            rate: policy.rate,
        };
    };
    let max_connections = match app.client_max_connections {
        None => policy.max_connections,
        Some(0) => None,
        Some(n) => Some(n),
    };
    let count = match app.client_rate {
        None => policy.rate.map(|r| r.count),
        Some(0) => None,
        Some(n) => Some(n),
    };
    let period = app
        .client_rate_period
        .or(policy.rate.map(|r| r.period))
        .unwrap_or(DEFAULT_RATE_PERIOD);
    Limits {
        max_connections,
        rate: count.map(|count| Rate { count, period }),
    }
}

/// The per-client table of the edge.
#[derive(Debug)]
pub struct PerClient {
    /// Open connections and recent connects, by client.
    table: Arc<ClientTable<ClientKey>>,
}

impl PerClient {
    /// A table tracking at most `capacity` clients at once.
    pub fn new(capacity: usize) -> Self {
        Self {
            table: Arc::new(ClientTable::new(capacity)),
        }
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Clients it can track at once (the size asked for, rounded up to a
    /// multiple of the shard count).
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// True when no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Clients forgotten to make room for others so far.
    pub fn evictions(&self) -> u64 {
        self.table.evictions()
    }

    /// Admits a new connection of client `ip` (canonical) to `app`, or
    /// says which limit refuses it. `Ok(None)`: no limit holds this client
    /// (none set, or an exempt network), nothing is counted.
    pub fn admit(
        &self,
        policy: &Policy<'_>,
        app: &AppId,
        app_limits: Option<&AppLimits>,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Option<ClientGuard<ClientKey>>, Refused> {
        let limits = limits_for(policy, app_limits);
        if limits.is_none() || policy.exempt.iter().any(|n| n.contains(&ip)) {
            return Ok(None);
        }
        let key = (
            app.clone(),
            geoedge_client_limits::mask(ip, policy.ipv4_prefix, policy.ipv6_prefix),
        );
        self.table.admit(key, limits, now).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max: Option<u32>, rate: Option<&str>) -> Policy<'static> {
        Policy {
            max_connections: max,
            rate: rate.map(|r| r.parse().unwrap()),
            exempt: &[],
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }

    #[test]
    fn an_apps_row_overrides_each_default_and_zero_means_no_limit() {
        let o = options(Some(5), Some("10/60s"));
        assert_eq!(
            limits_for(&o, None),
            Limits {
                max_connections: Some(5),
                rate: Some("10/60s".parse().unwrap())
            }
        );
        let row = AppLimits {
            client_max_connections: Some(0),
            client_rate: Some(3),
            client_rate_period: None,
        };
        assert_eq!(
            limits_for(&o, Some(&row)),
            Limits {
                max_connections: None,
                rate: Some("3/60s".parse().unwrap())
            }
        );
        let row = AppLimits {
            client_max_connections: None,
            client_rate: Some(0),
            client_rate_period: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            limits_for(&o, Some(&row)),
            Limits {
                max_connections: Some(5),
                rate: None
            }
        );
        // A count without a period anywhere: the default period.
        let row = AppLimits {
            client_max_connections: None,
            client_rate: Some(7),
            client_rate_period: None,
        };
        assert_eq!(
            limits_for(&options(None, None), Some(&row)).rate,
            Some(Rate {
                count: 7,
                period: DEFAULT_RATE_PERIOD
            })
        );
    }

    #[test]
    fn exempt_networks_and_no_limits_count_nothing() {
        let exempt = ["10.0.0.0/8".parse().unwrap()];
        let o = Policy {
            exempt: &exempt,
            ..options(Some(1), None)
        };
        let t = PerClient::new(4096);
        let app = AppId::default_app();
        let now = Instant::now();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let a = t.admit(&o, &app, None, ip, now).unwrap();
        let b = t.admit(&o, &app, None, ip, now).unwrap();
        assert!(a.is_none() && b.is_none());
        assert!(t.is_empty());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let held = t.admit(&o, &app, None, ip, now).unwrap();
        assert!(held.is_some());
        assert_eq!(
            t.admit(&o, &app, None, ip, now).unwrap_err(),
            Refused::Connections
        );
        // Another app's limits are its own.
        let other = AppId::new("other");
        assert!(t.admit(&o, &other, None, ip, now).unwrap().is_some());
        drop(held);
        assert!(t.admit(&o, &app, None, ip, now).unwrap().is_some());
    }
}
