//! The service's configuration: command-line flags, each also settable
//! from the environment (`ADLAKE_*`) for containers.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Default warehouse location, relative to the working directory.
pub const DEFAULT_WAREHOUSE: &str = "./data/warehouse";
/// Default Flight SQL listen address.
pub const DEFAULT_FLIGHT_ADDR: &str = "127.0.0.1:50051";
/// Default HTTP (health) listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";

/// adlake: Arrow Flight SQL over the agency's Delta Lake warehouse.
///
/// Without --auth-file the service runs in demo mode: it seeds a demo
/// warehouse if there is none, and writes demo tokens next to it.
#[derive(Debug, Clone, Parser)]
#[command(name = "adlake", version, about, long_about)]
pub struct Config {
    /// Warehouse location: a directory or a file:// URL.
    #[arg(long, env = "ADLAKE_WAREHOUSE", default_value = DEFAULT_WAREHOUSE)]
    pub warehouse: String,

    /// Flight SQL listen address (HOST:PORT; port 0 picks a free port).
    #[arg(long, env = "ADLAKE_FLIGHT_ADDR", default_value = DEFAULT_FLIGHT_ADDR)]
    pub flight_addr: String,

    /// HTTP listen address for /healthz and /readyz (HOST:PORT; port 0 picks
    /// a free port).
    #[arg(long, env = "ADLAKE_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: String,

    /// Auth file (TOML, one [[principal]] per caller). Without it the
    /// service runs in demo mode.
    #[arg(long, env = "ADLAKE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// How often to look for new Delta table versions, in seconds.
    #[arg(long, env = "ADLAKE_REFRESH_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub refresh_secs: u64,
}

impl Config {
    /// A configuration with every default, for `warehouse`.
    pub fn new(warehouse: impl Into<String>) -> Self {
        Self {
            warehouse: warehouse.into(),
            flight_addr: DEFAULT_FLIGHT_ADDR.into(),
            http_addr: DEFAULT_HTTP_ADDR.into(),
            auth_file: None,
            refresh_secs: 10,
        }
    }

    /// The refresh period.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.refresh_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = Config::try_parse_from(["adlake"]).expect("no flags");
        assert_eq!(config.warehouse, DEFAULT_WAREHOUSE);
        assert_eq!(config.flight_addr, DEFAULT_FLIGHT_ADDR);
        assert_eq!(config.http_addr, DEFAULT_HTTP_ADDR);
        assert_eq!(config.auth_file, None);
    }

    #[test]
    fn flags() {
        let config = Config::try_parse_from([
            "adlake",
            "--warehouse",
            "/w",
            "--flight-addr",
            "0.0.0.0:0",
            "--http-addr",
            "127.0.0.1:0",
            "--auth-file",
            "auth.toml",
        ])
        .expect("flags");
        assert_eq!(config.warehouse, "/w");
        assert_eq!(config.flight_addr, "0.0.0.0:0");
        assert_eq!(config.http_addr, "127.0.0.1:0");
        assert_eq!(config.auth_file, Some(PathBuf::from("auth.toml")));
    }

    #[test]
    fn refresh_must_be_positive() {
        assert!(Config::try_parse_from(["adlake", "--refresh-secs", "0"]).is_err());
    }
}
