-- routing.db for an edge POP in Frankfurt (eu) with backend POPs in Ashburn
-- (us) and Singapore (ap), reached over the WireGuard backhaul.
--
--   geoedge db init --empty routing.db
--   sqlite3 routing.db < three-regions.sql
--   geoedge db check routing.db
--
-- Replace the two public keys with each POP's `geoedge wg pubkey <
-- /etc/geoedge/wg.key`, and the documentation addresses (192.0.2.0/24,
-- 198.51.100.0/24, 203.0.113.0/24) with real ones. One transaction: a
-- running geoedge sees all of it at once.

BEGIN;

INSERT INTO regions (id, name, latitude, longitude) VALUES
  ('eu', 'Europe (Frankfurt)',       50.1109,   8.6821),
  ('us', 'North America (Ashburn)',  39.0438, -77.4874),
  ('ap', 'Asia-Pacific (Singapore)',  1.3521, 103.8198);

-- Countries not listed go to the nearest region's backends by distance.
INSERT INTO country_regions (country, region) VALUES
  ('DE', 'eu'), ('FR', 'eu'), ('GB', 'eu'), ('NL', 'eu'), ('ES', 'eu'), ('IT', 'eu'), ('PL', 'eu'),
  ('US', 'us'), ('CA', 'us'), ('MX', 'us'), ('BR', 'us'),
  ('SG', 'ap'), ('JP', 'ap'), ('IN', 'ap'), ('AU', 'ap'), ('ID', 'ap');

-- eu backends sit beside the edge and are dialed directly; us and ap
-- backends are dialed at their overlay address through the backhaul.
INSERT INTO backends (id, app, region, country, latitude, longitude, wg_ip, port, weight, soft_limit, hard_limit) VALUES
  ('eu-fra-1', 'default', 'eu', 'DE', 50.1109,   8.6821, '192.0.2.11', 8080, 1, 2000, 4000),
  ('eu-fra-2', 'default', 'eu', 'DE', 50.1109,   8.6821, '192.0.2.12', 8080, 1, 2000, 4000),
  ('us-iad-1', 'default', 'us', 'US', 39.0438, -77.4874, '10.77.0.2',  8080, 1, 2000, 4000),
  ('us-iad-2', 'default', 'us', 'US', 39.0438, -77.4874, '10.77.0.2',  8081, 1, 2000, 4000),
  ('ap-sin-1', 'default', 'ap', 'SG',  1.3521, 103.8198, '10.77.0.3',  8080, 1, 1000, 2000);

-- The backend POPs: the edge connects to them (endpoint set) and keeps the
-- sessions open through NAT (keepalive).
INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region) VALUES
  ('VVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVU=', '203.0.113.20:51820',  '10.77.0.2/32', 25, 'us'),
  ('qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo=', '198.51.100.30:51820', '10.77.0.3/32', 25, 'ap');

COMMIT;
