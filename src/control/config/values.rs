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
/// number of seconds: the same text means the same duration in a flag, a
/// `GEOEDGE_*` variable and the TOML file (where a bare number may also be
/// an integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// A duration from text: a bare number of seconds (`600`), or humantime's
/// forms (`600s`, `10m`, `1h 30m`).
fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    let s = s.trim();
    match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s),
    }
}

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(HumanDuration)
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
            "off" => Ok(DurationOrOff(None)),
            t => parse_duration(t).map(|d| DurationOrOff((!d.is_zero()).then_some(d))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_reads_the_same_from_text_and_from_toml() {
        #[derive(serde::Deserialize)]
        struct File {
            d: HumanDuration,
        }
        let from_toml = |v: &str| toml::from_str::<File>(&format!("d = {v}")).map(|f| f.d.0);
        for (text, want) in [
            ("600", Duration::from_secs(600)),
            ("600s", Duration::from_secs(600)),
            ("10m", Duration::from_secs(600)),
            (" 90 ", Duration::from_secs(90)),
        ] {
            // A flag and a variable give clap this text.
            assert_eq!(text.parse::<HumanDuration>().unwrap().0, want, "{text}");
            // The file, as a string and (for a bare number) as an integer.
            assert_eq!(from_toml(&format!("'{text}'")).unwrap(), want, "{text}");
        }
        assert_eq!(from_toml("600").unwrap(), Duration::from_secs(600));
        for bad in ["-5", "ten", "5 parsecs", ""] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
            assert!(from_toml(&format!("'{bad}'")).is_err(), "{bad}");
        }
        // `off` and zero turn a setting off wherever they are written.
        for off in ["off", "0", "0s"] {
            assert_eq!(off.parse::<DurationOrOff>().unwrap(), DurationOrOff(None));
        }
        assert_eq!(
            "30".parse::<DurationOrOff>().unwrap(),
            DurationOrOff(Some(Duration::from_secs(30)))
        );
    }
}
