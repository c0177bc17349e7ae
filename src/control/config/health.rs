//! The health settings (`health_check_*`, `eject_*`): their defaults and
//! bounds, read from a merged [`Layer`] into the routing core's
//! [`HealthConfig`] and the active checks' [`CheckOptions`].

use std::time::Duration;

use anyhow::bail;
use geoedge_routing::HealthConfig;

use super::{defaults, HumanDuration, Layer};

/// How the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Time between two checks of one backend.
    pub interval: Duration,
    /// A check's connect fails after this long.
    pub timeout: Duration,
    /// Checks per second at most, over all backends.
    pub max_rate: u32,
}

impl CheckOptions {
    /// The time between two checks of one backend when `backends` are
    /// checked: the interval, or longer when checking them all every
    /// interval would exceed the rate.
    pub fn period(&self, backends: usize) -> Duration {
        let at_rate = Duration::from_secs_f64(backends as f64 / f64::from(self.max_rate.max(1)));
        self.interval.max(at_rate)
    }
}

/// The health settings of a layer, with their defaults and bounds.
pub fn settings(l: &Layer) -> anyhow::Result<(HealthConfig, Option<CheckOptions>)> {
    let d = HealthConfig::default();
    let longest = defaults::HEALTH_DURATION_MAX;
    let bounded = |key: &str, v: Option<HumanDuration>, default: Duration| {
        let v = v.map_or(default, |v| v.0);
        if v > longest {
            bail!(
                "{key} {}: at most {}",
                humantime::format_duration(v),
                humantime::format_duration(longest)
            );
        }
        Ok(v)
    };
    let count = |key: &str, v: Option<u32>, default: u32, range| match v {
        None => Ok(default),
        Some(n) => defaults::bounded(key, n, range),
    };
    let config = HealthConfig {
        rise: count(
            "health_check_rise",
            l.health_check_rise,
            d.rise,
            &defaults::RISE_FALL_RANGE,
        )?,
        fall: count(
            "health_check_fall",
            l.health_check_fall,
            d.fall,
            &defaults::RISE_FALL_RANGE,
        )?,
        eject_after: count(
            "eject_after",
            l.eject_after,
            d.eject_after,
            &defaults::EJECT_AFTER_RANGE,
        )?,
        backoff: bounded("eject_backoff", l.eject_backoff, d.backoff)?,
        backoff_max: bounded("eject_backoff_max", l.eject_backoff_max, d.backoff_max)?,
    };
    if config.backoff_max < config.backoff {
        bail!(
            "eject_backoff_max {} is shorter than eject_backoff {}",
            humantime::format_duration(config.backoff_max),
            humantime::format_duration(config.backoff)
        );
    }
    let interval = l
        .health_check_interval
        .map_or(Some(defaults::HEALTH_CHECK_INTERVAL), |i| i.0);
    let checks = match interval {
        None => None,
        Some(interval) => {
            let interval = bounded("health_check_interval", None, interval)?;
            let timeout = bounded(
                "health_check_timeout",
                l.health_check_timeout,
                defaults::HEALTH_CHECK_TIMEOUT,
            )?;
            if timeout.is_zero() {
                bail!("health_check_timeout must be above 0");
            }
            Some(CheckOptions {
                interval,
                timeout,
                max_rate: count(
                    "health_check_max_rate",
                    l.health_check_max_rate,
                    defaults::HEALTH_CHECK_MAX_RATE,
                    &defaults::HEALTH_CHECK_MAX_RATE_RANGE,
                )?,
            })
        }
    };
    Ok((config, checks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::{Layer, Settings};

    #[test]
    fn the_check_period_grows_with_the_table_past_the_rate() {
        let o = CheckOptions {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            max_rate: 1000,
        };
        assert_eq!(o.period(0), Duration::from_secs(2));
        assert_eq!(o.period(2000), Duration::from_secs(2));
        assert_eq!(o.period(10_000), Duration::from_secs(10));
        assert_eq!(o.period(100_000), Duration::from_secs(100));
    }

    #[test]
    fn health_settings_have_defaults_bounds_and_an_off_switch() {
        let resolve = |toml: &str| Settings::resolve(toml::from_str::<Layer>(toml).unwrap(), None);
        let s = resolve("").unwrap();
        assert_eq!(s.health, HealthConfig::default());
        assert_eq!(
            s.health_checks,
            Some(CheckOptions {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                max_rate: defaults::HEALTH_CHECK_MAX_RATE,
            })
        );
        let s = resolve(
            "health_check_interval = '500ms'\nhealth_check_timeout = '200ms'\nhealth_check_max_rate = 50\nhealth_check_rise = 1\nhealth_check_fall = 5\neject_after = 0\neject_backoff = '250ms'\neject_backoff_max = 4",
        )
        .unwrap();
        assert_eq!(
            s.health_checks,
            Some(CheckOptions {
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(200),
                max_rate: 50,
            })
        );
        assert_eq!(
            (s.health.rise, s.health.fall, s.health.eject_after),
            (1, 5, 0)
        );
        assert_eq!(s.health.backoff, Duration::from_millis(250));
        assert_eq!(s.health.backoff_max, Duration::from_secs(4));
        for off in ["'off'", "0", "'0'", "'0s'"] {
            let s = resolve(&format!("health_check_interval = {off}")).unwrap();
            assert_eq!(s.health_checks, None, "{off}");
        }
        for (bad, key) in [
            (
                "eject_backoff = '10s'\neject_backoff_max = '5s'",
                "eject_backoff_max",
            ),
            ("health_check_timeout = '0s'", "health_check_timeout"),
            ("eject_backoff_max = '2h'", "eject_backoff_max"),
            ("health_check_interval = '1d'", "health_check_interval"),
        ] {
            let e = resolve(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        assert!(toml::from_str::<Layer>("health_check_interval = 'sometimes'").is_err());
    }
}
