-- geoedge routing.db schema, version 3 (PRAGMA user_version = 3).
--
-- Operators edit this database with the sqlite3 CLI while geoedge runs; every
-- committed change is validated whole and applied within a second, and an
-- invalid one is rejected while the last good table keeps serving.
-- An edgeProxy routing.db (a `backends` table without country and
-- coordinates, and no `regions` or `country_regions` tables, user_version 0)
-- loads unchanged: geoedge then uses its built-in regions and country map.
--
-- Version 3 adds triggers (geoedge_*) that make SQLite itself refuse an
-- edit geoedge would refuse, a row at a time: `geoedge db init` creates
-- them with these tables and `geoedge db migrate` adds them to an older
-- file (routing/src/triggers.rs; docs/routing.md lists the rules).

CREATE TABLE IF NOT EXISTS backends (
  id         TEXT PRIMARY KEY,
  app        TEXT NOT NULL DEFAULT 'default',
  region     TEXT NOT NULL,          -- POP region id, e.g. 'eu'
  country    TEXT,                   -- ISO 3166-1 alpha-2 of the backend's site
  latitude   REAL,                   -- site coordinates; NULL: the region's
  longitude  REAL,
  wg_ip      TEXT NOT NULL,          -- address dialed (overlay address for remote POPs), v4 or v6
  port       INTEGER NOT NULL,
  healthy    INTEGER NOT NULL DEFAULT 1,
  weight     INTEGER NOT NULL DEFAULT 1,
  soft_limit INTEGER NOT NULL,
  hard_limit INTEGER NOT NULL,
  deleted    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS regions (
  id        TEXT PRIMARY KEY,
  name      TEXT,
  latitude  REAL NOT NULL,
  longitude REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS country_regions (
  country TEXT PRIMARY KEY,          -- ISO 3166-1 alpha-2
  region  TEXT NOT NULL              -- regions.id
);

-- WireGuard peers: the other POPs this POP reaches over its backhaul.
-- Optional: without this table geoedge has no peers.
CREATE TABLE IF NOT EXISTS wg_peers (
  public_key           TEXT PRIMARY KEY,  -- base64, as `wg pubkey` prints it
  endpoint             TEXT,              -- host:port or [v6]:port; NULL: the peer connects to us
  allowed_ips          TEXT NOT NULL,     -- comma-separated CIDRs routed to this peer
  persistent_keepalive INTEGER,           -- seconds; NULL or 0: off
  region               TEXT               -- the POP region the peer serves (regions.id), or NULL
);

-- Per-app overrides of the per-client limits (--client-max-connections,
-- --client-rate). Optional: without this table, or for an app without a
-- row, every app gets the settings. NULL: the setting applies; 0 for a
-- count: no limit for this app. client_rate_period_seconds (1..=86400)
-- with client_rate NULL changes the period of the setting's count; NULL
-- with client_rate set: the setting's period, or 60 s when it has none.
CREATE TABLE IF NOT EXISTS apps (
  app                        TEXT PRIMARY KEY,  -- as in backends.app
  client_max_connections     INTEGER,           -- connections per client IP; 0: no limit
  client_rate                INTEGER,           -- new connections per client IP per period; 0: no limit
  client_rate_period_seconds INTEGER            -- the rate's period, 1..=86400
);

-- TLS server names (SNI) routed to an app. Optional: without this table no
-- name is routed by SNI. hostname is lower-case: an exact name
-- ('api.example.com') or a wildcard ('*.example.com': any name ending in
-- '.example.com', at any depth, not 'example.com' itself). An exact name
-- wins, then the longest wildcard. app must be a backends.app or apps.app.
CREATE TABLE IF NOT EXISTS sni_routes (
  hostname TEXT PRIMARY KEY,
  app      TEXT NOT NULL
);

PRAGMA user_version = 3;
