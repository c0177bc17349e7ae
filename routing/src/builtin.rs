//! Built-in regions and country map, used when routing.db has no `regions`
//! or no `country_regions` table (an edgeProxy routing.db has neither).
//! The region ids are edgeProxy's: `eu`, `us`, `sa`, `ap`.

/// Built-in regions: id, name, latitude, longitude.
pub const REGIONS: &[(&str, &str, f64, f64)] = &[
    ("eu", "Europe (Frankfurt)", 50.1109, 8.6821),
    ("us", "North America (Ashburn)", 39.0438, -77.4874),
    ("sa", "South America (São Paulo)", -23.5505, -46.6333),
    ("ap", "Asia-Pacific (Singapore)", 1.3521, 103.8198),
];

/// Built-in country map: each ISO country to a built-in region. Countries
/// not listed fall back to their continent ([`CONTINENTS`]).
pub const COUNTRIES: &[(&str, &str)] = &[
    // North America and the Caribbean go to `us`.
    ("US", "us"),
    ("CA", "us"),
    ("MX", "us"),
    ("PR", "us"),
    // Central America is nearer Ashburn than São Paulo.
    ("GT", "us"),
    ("CR", "us"),
    ("PA", "us"),
    // The Middle East and Russia are served from Europe.
    ("RU", "eu"),
    ("TR", "eu"),
    ("IL", "eu"),
    ("AE", "eu"),
    ("SA", "eu"),
    ("EG", "eu"),
    // The largest markets of each region, so they map without a continent.
    ("GB", "eu"),
    ("DE", "eu"),
    ("FR", "eu"),
    ("NL", "eu"),
    ("ES", "eu"),
    ("IT", "eu"),
    ("PL", "eu"),
    ("BR", "sa"),
    ("AR", "sa"),
    ("CL", "sa"),
    ("CO", "sa"),
    ("PE", "sa"),
    ("JP", "ap"),
    ("CN", "ap"),
    ("KR", "ap"),
    ("IN", "ap"),
    ("SG", "ap"),
    ("ID", "ap"),
    // Oceania from Asia-Pacific.
    ("AU", "ap"),
    ("NZ", "ap"),
];

/// Built-in continent fallback for countries not in [`COUNTRIES`].
pub const CONTINENTS: &[(&str, &str)] = &[
    ("EU", "eu"),
    ("AF", "eu"),
    ("NA", "us"),
    ("SA", "sa"),
    ("AS", "ap"),
    ("OC", "ap"),
];
