//! Rows as they come out of routing.db, before validation: every cell is a
//! [`Value`] of whatever type SQLite stored, so a text in an integer column
//! becomes a row-level error rather than a load failure. The loader fills a
//! [`RawTable`]; [`crate::snapshot`] turns it into a validated snapshot.

/// One SQLite cell, as stored (SQLite columns are dynamically typed).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL, or a column the table does not have.
    Null,
    /// An INTEGER.
    Integer(i64),
    /// A REAL.
    Real(f64),
    /// A TEXT.
    Text(String),
    /// A BLOB.
    Blob(Vec<u8>),
}

impl Value {
    /// A short name of the stored type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Real(f)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Self {
        o.map_or(Value::Null, Into::into)
    }
}

/// One `backends` row. Columns the table lacks (an edgeProxy routing.db has
/// no `country`, `latitude`, `longitude`) are [`Value::Null`].
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRow {
    /// SQLite rowid, for error messages.
    pub rowid: i64,
    /// `id`
    pub id: Value,
    /// `app`
    pub app: Value,
    /// `region`
    pub region: Value,
    /// `country`
    pub country: Value,
    /// `latitude`
    pub latitude: Value,
    /// `longitude`
    pub longitude: Value,
    /// `wg_ip`
    pub wg_ip: Value,
    /// `port`
    pub port: Value,
    /// `healthy`
    pub healthy: Value,
    /// `weight`
    pub weight: Value,
    /// `soft_limit`
    pub soft_limit: Value,
    /// `hard_limit`
    pub hard_limit: Value,
    /// `deleted`
    pub deleted: Value,
}

impl BackendRow {
    /// A row with the schema's defaults (`app` 'default', healthy, weight 1,
    /// not deleted) and the given required cells; handy in tests.
    pub fn new(id: &str, region: &str, wg_ip: &str, port: i64, soft: i64, hard: i64) -> Self {
        Self {
            rowid: 0,
            id: id.into(),
            app: "default".into(),
            region: region.into(),
            country: Value::Null,
            latitude: Value::Null,
            longitude: Value::Null,
            wg_ip: wg_ip.into(),
            port: port.into(),
            healthy: 1.into(),
            weight: 1.into(),
            soft_limit: soft.into(),
            hard_limit: hard.into(),
            deleted: 0.into(),
        }
    }
}

/// One `regions` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionRow {
    /// SQLite rowid, for error messages.
    pub rowid: i64,
    /// `id`
    pub id: Value,
    /// `name`
    pub name: Value,
    /// `latitude`
    pub latitude: Value,
    /// `longitude`
    pub longitude: Value,
}

/// One `country_regions` row.
#[derive(Debug, Clone, PartialEq)]
pub struct CountryRegionRow {
    /// SQLite rowid, for error messages.
    pub rowid: i64,
    /// `country`
    pub country: Value,
    /// `region`
    pub region: Value,
}

/// One `wg_peers` row.
#[derive(Debug, Clone, PartialEq)]
pub struct WgPeerRow {
    /// SQLite rowid, for error messages.
    pub rowid: i64,
    /// `public_key`
    pub public_key: Value,
    /// `endpoint`
    pub endpoint: Value,
    /// `allowed_ips`
    pub allowed_ips: Value,
    /// `persistent_keepalive`
    pub persistent_keepalive: Value,
    /// `region`
    pub region: Value,
}

/// One `apps` row: per-app overrides of the per-client limits.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRow {
    /// SQLite rowid, for error messages.
    pub rowid: i64,
    /// `app`
    pub app: Value,
    /// `client_max_connections`
    pub client_max_connections: Value,
    /// `client_rate`
    pub client_rate: Value,
    /// `client_rate_period_seconds`
    pub client_rate_period_seconds: Value,
}

/// One `sni_routes` row: a TLS server name (or `*.` wildcard) and its app.
#[derive(Debug, Clone, PartialEq)]
pub struct SniRouteRow {
    /// SQLite rowid, for error messages.
    pub rowid: i64,
    /// `hostname`
    pub hostname: Value,
    /// `app`
    pub app: Value,
}

/// Everything read from one routing.db in one read transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawTable {
    /// `PRAGMA user_version` (0 for an edgeProxy database).
    pub schema_version: i64,
    /// The `backends` rows.
    pub backends: Vec<BackendRow>,
    /// The `regions` rows, or `None` when the table does not exist (the
    /// built-in regions are used then).
    pub regions: Option<Vec<RegionRow>>,
    /// The `country_regions` rows, or `None` when the table does not exist
    /// (the built-in country map is used then).
    pub country_regions: Option<Vec<CountryRegionRow>>,
    /// The `wg_peers` rows (none when the table does not exist).
    pub wg_peers: Vec<WgPeerRow>,
    /// The `apps` rows (none when the table does not exist).
    pub apps: Vec<AppRow>,
    /// The `sni_routes` rows (none when the table does not exist).
    pub sni_routes: Vec<SniRouteRow>,
}
