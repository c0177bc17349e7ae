//! The value types settings are written in: human durations (`600s`,
//! `10m`), durations that `off` turns off, and CIDRs.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;

/// A CIDR, or a bare address meaning just that host.
pub(crate) fn parse_cidr(s: &str) -> anyhow::Result<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .with_context(|| format!("proxy_protocol_from {s:?}: not a CIDR or address"))
}

/// A duration written the human way (`600s`, `10m`, `1h 30m`), or a bare
/// number of seconds in the TOML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A duration as the TOML file writes it: a bare number of seconds, or
/// text for the type's own parser.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Secs(u64),
    Text(String),
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawDuration::deserialize(d)? {
            RawDuration::Secs(s) => Ok(HumanDuration(Duration::from_secs(s))),
            RawDuration::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration, or `off` (also `0`): for settings that a zero turns off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationOrOff(pub Option<Duration>);

impl FromStr for DurationOrOff {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "0" => Ok(DurationOrOff(None)),
            t => humantime::parse_duration(t).map(|d| DurationOrOff((!d.is_zero()).then_some(d))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DurationOrOff {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawDuration::deserialize(d)? {
            RawDuration::Secs(s) => Ok(DurationOrOff((s > 0).then(|| Duration::from_secs(s)))),
            RawDuration::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}
