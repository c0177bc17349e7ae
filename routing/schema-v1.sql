-- The routing.db schema version 1, as shipped before version 2 added the
-- apps and sni_routes tables: what `geoedge db migrate` is tested on.

-- geoedge routing.db schema, version 1 (PRAGMA user_version = 1).
--
-- Operators edit this database with the sqlite3 CLI while geoedge runs; every
-- committed change is validated whole and applied within a second, and an
-- invalid one is rejected while the last good table keeps serving.
-- An edgeProxy routing.db (a `backends` table without country and
-- coordinates, and no `regions` or `country_regions` tables, user_version 0)
-- loads unchanged: geoedge then uses its built-in regions and country map.

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

PRAGMA user_version = 1;
