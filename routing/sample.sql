-- Sample content written by `geoedge db init`: four regions, a country map,
-- and one app with backends on loopback ports. Edit freely with sqlite3.
INSERT INTO regions (id, name, latitude, longitude) VALUES
  ('eu', 'Europe (Frankfurt)',        50.1109,   8.6821),
  ('us', 'North America (Ashburn)',   39.0438, -77.4874),
  ('sa', 'South America (São Paulo)', -23.5505, -46.6333),
  ('ap', 'Asia-Pacific (Singapore)',   1.3521, 103.8198);

INSERT INTO country_regions (country, region) VALUES
  ('GB', 'eu'), ('DE', 'eu'), ('FR', 'eu'), ('NL', 'eu'), ('ES', 'eu'), ('IT', 'eu'),
  ('US', 'us'), ('CA', 'us'), ('MX', 'us'),
  ('BR', 'sa'), ('AR', 'sa'), ('CL', 'sa'),
  ('JP', 'ap'), ('SG', 'ap'), ('IN', 'ap'), ('AU', 'ap');

INSERT INTO backends (id, app, region, country, latitude, longitude, wg_ip, port, soft_limit, hard_limit) VALUES
  ('eu-lhr-1', 'default', 'eu', 'GB', 51.5074,  -0.1278, '127.0.0.1', 9101, 100, 200),
  ('eu-fra-1', 'default', 'eu', 'DE', 50.1109,   8.6821, '127.0.0.1', 9102, 100, 200),
  ('us-iad-1', 'default', 'us', 'US', 39.0438, -77.4874, '127.0.0.1', 9201, 100, 200),
  ('us-sfo-1', 'default', 'us', 'US', 37.7749,-122.4194, '127.0.0.1', 9202, 100, 200),
  ('sa-gru-1', 'default', 'sa', 'BR',-23.5505, -46.6333, '127.0.0.1', 9301, 100, 200),
  ('ap-sin-1', 'default', 'ap', 'SG',  1.3521, 103.8198, '127.0.0.1', 9401, 100, 200);
