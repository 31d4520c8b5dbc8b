//! Demo mode: what `cargo run` does without an auth file.
//!
//! A first start seeds a demo warehouse (synthetic clients, via
//! `adlake_ingest::demo`) when the warehouse directory holds no table, then
//! writes `demo-tokens.toml` next to it: an auth file with a token for the
//! whole agency and one per client, in plaintext as well as hashed so a
//! person can copy them. Later starts reuse both. Demo mode only works on a
//! local warehouse; production runs pass `--auth-file`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::auth::{ALL_CLIENTS, AuthFile, AuthFilePrincipal, TokenAuthenticator, token_sha256_hex};
use crate::error::{Error, Result};

/// File name of the demo credentials, in the warehouse's parent directory.
pub const TOKENS_FILE_NAME: &str = "demo-tokens.toml";

/// Name of the demo principal that sees every client.
pub const AGENCY_PRINCIPAL: &str = "agency";

/// The demo credentials in use, for the "how to connect" message.
#[derive(Clone)]
pub struct DemoCredentials {
    /// The demo auth file.
    pub path: PathBuf,
    /// The agency-wide token.
    pub agency_token: Option<String>,
    /// One client's id and token, as an example of a restricted caller.
    pub client_example: Option<(String, String)>,
}

// Hand-written so tokens never reach a log through `{:?}`.
impl std::fmt::Debug for DemoCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoCredentials")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The local directory of a warehouse location, or a configuration error
/// for remote ones (demo mode writes files next to the warehouse).
pub fn local_dir(warehouse: &str) -> Result<PathBuf> {
    if let Some(path) = warehouse.strip_prefix("file://") {
        return Ok(PathBuf::from(path));
    }
    if warehouse.contains("://") {
        return Err(Error::Config(format!(
            "demo mode needs a local warehouse, not {warehouse}: pass --auth-file to serve a remote warehouse"
        )));
    }
    Ok(PathBuf::from(warehouse))
}

/// Whether `dir` holds at least one Delta table (a `_delta_log` in it or in
/// one of its subdirectories).
pub fn has_tables(dir: &Path) -> bool {
    if dir.join("_delta_log").is_dir() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|entry| entry.path().join("_delta_log").is_dir())
}

/// Seeds the demo warehouse unless `dir` already holds tables. Returns
/// whether it seeded.
pub async fn seed_if_empty(warehouse: &str, dir: &Path) -> Result<bool> {
    if has_tables(dir) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|err| {
        Error::Demo(format!(
            "cannot create the warehouse directory {}: {err}",
            dir.display()
        ))
    })?;
    tracing::info!(warehouse, "no tables found: seeding the demo warehouse");
    seed(warehouse).await?;
    Ok(true)
}

/// Runs the ingest crate's demo seeding with its defaults.
#[cfg(feature = "demo")]
async fn seed(warehouse: &str) -> Result<()> {
    use adlake_ingest::demo::{DemoOptions, Progress, run_demo};
    let options = DemoOptions {
        warehouse: warehouse.to_string(),
        ..DemoOptions::default()
    };
    // `Auto`: a progress bar on a terminal, log lines otherwise.
    let summary = run_demo(&options, Progress::Auto)
        .await
        .map_err(|err| Error::Demo(err.to_string()))?;
    tracing::info!(clients = summary.clients.len(), "demo warehouse seeded");
    Ok(())
}

/// Without the `demo` feature there is no generator to seed with.
#[cfg(not(feature = "demo"))]
async fn seed(warehouse: &str) -> Result<()> {
    Err(Error::Demo(format!(
        "the warehouse {warehouse} holds no table and this build has no demo data (it was built \
         without the `demo` feature): load data with adlake-ingest, or build with the default features"
    )))
}

/// Where the demo credentials of the warehouse in `dir` live.
pub fn tokens_path(dir: &Path) -> PathBuf {
    let parent = dir
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(TOKENS_FILE_NAME)
}

/// Loads the demo credentials at `path`, creating them first for `clients`
/// if the file does not exist.
pub fn ensure_tokens(
    path: &Path,
    clients: &BTreeSet<String>,
) -> Result<(TokenAuthenticator, DemoCredentials)> {
    if !path.exists() {
        write_tokens(path, clients)?;
        tracing::info!(path = %path.display(), "wrote demo tokens");
    }
    let authenticator = TokenAuthenticator::from_file(path)?;
    Ok((authenticator, read_credentials(path)?))
}

/// Writes a fresh demo auth file: the agency with `["*"]`, and each client
/// restricted to itself.
pub fn write_tokens(path: &Path, clients: &BTreeSet<String>) -> Result<()> {
    let principal = |name: &str, clients: Vec<String>| {
        let token = new_token();
        AuthFilePrincipal {
            name: name.to_string(),
            token_sha256: token_sha256_hex(&token),
            clients,
            token: Some(token),
        }
    };
    let mut file = AuthFile::default();
    file.principal
        .push(principal(AGENCY_PRINCIPAL, vec![ALL_CLIENTS.to_string()]));
    for client in clients {
        if client == AGENCY_PRINCIPAL {
            // A client named like the agency principal would collide; it is
            // still reachable with the agency token.
            continue;
        }
        file.principal.push(principal(client, vec![client.clone()]));
    }
    let body = toml::to_string(&file)
        .map_err(|err| Error::Demo(format!("cannot encode the demo tokens: {err}")))?;
    let text = format!(
        "# adlake demo credentials, generated on first start without --auth-file.\n\
         # Plaintext tokens: for local demos only. Delete this file to get new ones.\n\
         # Format: one [[principal]] per caller (name, token_sha256 = hex SHA-256 of\n\
         # the token, clients = ids or [\"*\"]); production files omit `token`.\n\n{body}"
    );
    write_private(path, text.as_bytes())
        .map_err(|err| Error::Demo(format!("cannot write {}: {err}", path.display())))
}

/// Creates `path` readable by the owner only (it holds plaintext tokens),
/// refusing to overwrite: another process may have just written it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A new token: 32 random bytes from the OS-seeded CSPRNG, URL-safe base64
/// (43 characters), prefixed so leaked tokens are easy to grep for.
pub fn new_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("adl_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Reads the plaintext tokens of a demo file, for the connection help.
fn read_credentials(path: &Path) -> Result<DemoCredentials> {
    let text = std::fs::read_to_string(path).map_err(|err| Error::AuthFile {
        path: path.to_path_buf(),
        problem: format!("cannot read it: {err}"),
    })?;
    let file: AuthFile = toml::from_str(&text).map_err(|err| Error::AuthFile {
        path: path.to_path_buf(),
        problem: err.message().to_string(),
    })?;
    let mut credentials = DemoCredentials {
        path: path.to_path_buf(),
        agency_token: None,
        client_example: None,
    };
    for principal in file.principal {
        let Some(token) = principal.token else {
            continue;
        };
        let all = principal.clients.iter().any(|c| c == ALL_CLIENTS);
        if all && credentials.agency_token.is_none() {
            credentials.agency_token = Some(token);
        } else if !all && credentials.client_example.is_none() {
            credentials.client_example = Some((principal.name, token));
        }
    }
    Ok(credentials)
}

/// The "how to connect" text printed at a demo start.
pub fn connection_help(credentials: &DemoCredentials, flight_addr: SocketAddr) -> String {
    // A wildcard bind is reached through loopback from this machine.
    let host = if flight_addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        flight_addr.ip().to_string()
    };
    let host = if flight_addr.is_ipv6() && !flight_addr.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    let uri = format!("grpc://{host}:{}", flight_addr.port());
    let token = credentials
        .agency_token
        .as_deref()
        .unwrap_or("<token from the file>");
    let mut out = String::new();
    let _ = writeln!(out, "adlake demo mode (no --auth-file)");
    let _ = writeln!(out, "  Flight SQL URI : {uri}");
    let _ = writeln!(out, "  tokens         : {}", credentials.path.display());
    let _ = writeln!(out, "  agency token   : {token}   (sees every client)");
    if let Some((client, client_token)) = &credentials.client_example {
        let _ = writeln!(
            out,
            "  client token   : {client_token}   (sees only {client})"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Python (pip install adbc-driver-flightsql pyarrow):");
    let _ = writeln!(out, "  import adbc_driver_flightsql.dbapi as flightsql");
    let _ = writeln!(out, "  conn = flightsql.connect(\"{uri}\", db_kwargs={{");
    let _ = writeln!(
        out,
        "      \"adbc.flight.sql.authorization_header\": \"Bearer {token}\"}})"
    );
    let _ = writeln!(out, "  cur = conn.cursor()");
    let _ = writeln!(
        out,
        "  cur.execute(\"SELECT platform, sum(spend) FROM ad_performance GROUP BY platform\")"
    );
    let _ = writeln!(out, "  print(cur.fetch_arrow_table())");
    let _ = writeln!(out);
    let _ = writeln!(out, "  import pyarrow.flight as fl");
    let _ = writeln!(out, "  client = fl.FlightClient(\"{uri}\")");
    let _ = writeln!(
        out,
        "  header = client.authenticate_basic_token(\"agency\", \"{token}\")  # -> Bearer header"
    );
    let _ = writeln!(out, "  options = fl.FlightCallOptions(headers=[header])");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use adlake_engine::Scope;

    #[test]
    fn local_dir_accepts_paths_and_file_urls_only() {
        assert_eq!(
            local_dir("./data/warehouse").ok(),
            Some(PathBuf::from("./data/warehouse"))
        );
        assert_eq!(
            local_dir("file:///srv/w").ok(),
            Some(PathBuf::from("/srv/w"))
        );
        let err = local_dir("s3://bucket/w").expect_err("remote");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--auth-file"), "{err}");
    }

    #[test]
    fn tokens_live_next_to_the_warehouse() {
        assert_eq!(
            tokens_path(Path::new("./data/warehouse")),
            PathBuf::from("./data/demo-tokens.toml")
        );
        assert_eq!(
            tokens_path(Path::new("/srv/w/")),
            PathBuf::from("/srv/demo-tokens.toml")
        );
        assert_eq!(
            tokens_path(Path::new("w")),
            PathBuf::from("./demo-tokens.toml")
        );
    }

    #[test]
    fn has_tables_looks_for_delta_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!has_tables(&dir.path().join("missing")));
        assert!(!has_tables(dir.path()));
        std::fs::create_dir_all(dir.path().join("orders")).expect("mkdir");
        assert!(!has_tables(dir.path()));
        std::fs::create_dir_all(dir.path().join("orders/_delta_log")).expect("mkdir");
        assert!(has_tables(dir.path()));
    }

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 43);
        assert!(a.starts_with("adl_"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn written_file_is_a_valid_auth_file_with_one_principal_per_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data").join(TOKENS_FILE_NAME);
        let clients: BTreeSet<String> = ["acme".to_string(), "globex".to_string()].into();

        let (auth, credentials) = ensure_tokens(&path, &clients).expect("created");
        let names: Vec<&str> = auth.principals().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["agency", "acme", "globex"]);

        let agency_token = credentials.agency_token.clone().expect("agency token");
        assert_eq!(
            auth.authenticate(&agency_token).map(|p| p.scope),
            Some(Scope::AllClients)
        );
        let (client, token) = credentials.client_example.clone().expect("client token");
        assert_eq!(client, "acme");
        assert_eq!(
            auth.authenticate(&token).map(|p| p.scope),
            Some(Scope::clients(["acme"]))
        );

        // A second start reuses the same tokens.
        let (_, again) = ensure_tokens(&path, &clients).expect("reused");
        assert_eq!(again.agency_token, Some(agency_token));
        // And never overwrites an existing file.
        assert!(write_tokens(&path, &clients).is_err());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn help_shows_uri_and_tokens() {
        let credentials = DemoCredentials {
            path: "data/demo-tokens.toml".into(),
            agency_token: Some("adl_agency".into()),
            client_example: Some(("acme".into(), "adl_acme".into())),
        };
        let help = connection_help(&credentials, "0.0.0.0:50051".parse().expect("addr"));
        assert!(help.contains("grpc://127.0.0.1:50051"), "{help}");
        assert!(help.contains("Bearer adl_agency"), "{help}");
        assert!(help.contains("adl_acme"), "{help}");
        assert!(
            help.contains("adbc.flight.sql.authorization_header"),
            "{help}"
        );
    }
}
