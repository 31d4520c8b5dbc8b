//! Who is calling, and which clients they may see.
//!
//! Callers present a token (as `Bearer <token>`, or as the password of HTTP
//! Basic in the Flight handshake). An [`Authenticator`] turns a token into a
//! [`Principal`], whose [`Scope`] the engine applies at the scan. The
//! default authenticator, [`TokenAuthenticator`], reads an auth file (TOML):
//!
//! ```toml
//! [[principal]]
//! name = "agency"                 # shown in logs
//! token_sha256 = "9f86d0…"        # hex SHA-256 of the token
//! clients = ["*"]                 # every client of the agency
//!
//! [[principal]]
//! name = "acme"
//! token_sha256 = "60303a…"
//! clients = ["acme"]              # only these client ids
//! token = "…"                     # optional plaintext, demo files only
//! ```
//!
//! Only the hashes are kept in memory, and they are compared in constant
//! time, so neither a memory dump nor response timing reveals a token.
//!
//! Optionally ([`jwt`]), signed JWTs (HS256 or RS256) are accepted beside
//! the file's tokens, with the caller's clients in their `clients` claim.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use adlake_engine::Scope;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

pub mod jwt;

/// The `clients` entry that grants the whole agency.
pub const ALL_CLIENTS: &str = "*";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name from the auth file; for logs, never for access
    /// decisions.
    pub name: String,
    /// The clients this caller may read.
    pub scope: Scope,
}

/// Turns a presented token into a principal. The seam for other identity
/// sources (OIDC, a secrets service); tests use a double.
pub trait Authenticator: Send + Sync + 'static {
    /// The principal owning `token`, or `None` when no principal does.
    fn authenticate(&self, token: &str) -> Option<Principal>;
}

/// Authenticates against the SHA-256 token hashes of an auth file.
#[derive(Clone)]
pub struct TokenAuthenticator {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    token_sha256: [u8; 32],
    principal: Principal,
}

// Hand-written so a debug print can never show a hash.
impl fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.principals().map(|p| p.name.as_str()).collect();
        f.debug_struct("TokenAuthenticator")
            .field("principals", &names)
            .finish()
    }
}

impl TokenAuthenticator {
    /// Reads and validates an auth file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| Error::AuthFile {
            path: path.to_path_buf(),
            problem: format!("cannot read it: {err}"),
        })?;
        Self::from_toml_str(&text).map_err(|problem| Error::AuthFile {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parses and validates auth-file text. The error is one line saying
    /// what is wrong (the caller adds the file name).
    pub fn from_toml_str(text: &str) -> std::result::Result<Self, String> {
        let file: AuthFile = toml::from_str(text).map_err(|err| toml_problem(text, &err))?;
        Self::from_auth_file(file)
    }

    fn from_auth_file(file: AuthFile) -> std::result::Result<Self, String> {
        if file.principal.is_empty() {
            return Err("defines no [[principal]]: nobody could connect".into());
        }
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut entries = Vec::with_capacity(file.principal.len());
        for (index, p) in file.principal.into_iter().enumerate() {
            if p.name.trim().is_empty() {
                return Err(format!("principal #{} has an empty name", index + 1));
            }
            let who = format!("principal {:?}", p.name);
            if !names.insert(p.name.clone()) {
                return Err(format!("{who} is defined twice"));
            }
            let token_sha256 = parse_sha256_hex(&p.token_sha256).ok_or_else(|| {
                format!("{who}: token_sha256 must be 64 hex characters (the SHA-256 of the token)")
            })?;
            if !hashes.insert(token_sha256) {
                return Err(format!(
                    "{who} has the same token_sha256 as another principal: every caller needs its own token"
                ));
            }
            if let Some(token) = &p.token
                && sha256(token) != token_sha256
            {
                return Err(format!("{who}: token does not match token_sha256"));
            }
            let scope = parse_clients(&p.clients).map_err(|problem| format!("{who}: {problem}"))?;
            entries.push(Entry {
                token_sha256,
                principal: Principal {
                    name: p.name,
                    scope,
                },
            });
        }
        Ok(Self { entries })
    }

    /// Every principal, in file order.
    pub fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.entries.iter().map(|e| &e.principal)
    }

    /// Checks that every client id named in the file exists in the warehouse
    /// (`known`). Skipped when `known` is empty: a fresh warehouse has no
    /// data yet, and access may be configured before the first ingest.
    pub fn check_clients(&self, path: &Path, known: &BTreeSet<String>) -> Result<()> {
        if known.is_empty() {
            return Ok(());
        }
        for principal in self.principals() {
            let Scope::Clients(ids) = &principal.scope else {
                continue;
            };
            if let Some(client) = ids.iter().find(|id| !known.contains(*id)) {
                return Err(Error::UnknownClient {
                    path: path.to_path_buf(),
                    principal: principal.name.clone(),
                    client: client.clone(),
                    known: summarize(known),
                });
            }
        }
        Ok(())
    }
}

impl Authenticator for TokenAuthenticator {
    fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented = sha256(token);
        // Visit every entry whatever matches, and compare each hash in
        // constant time, so the response time says nothing about how close a
        // guess came or which entry it hit.
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.token_sha256.ct_eq(&presented)) {
                found = Some(&entry.principal);
            }
        }
        found.cloned()
    }
}

/// The auth file as written on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// One entry per caller.
    #[serde(default)]
    pub principal: Vec<AuthFilePrincipal>,
}

/// One `[[principal]]` of the auth file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFilePrincipal {
    /// Unique name, shown in logs.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
    /// Client ids this caller may see, or `["*"]` for all.
    pub clients: Vec<String>,
    /// The plaintext token: only in generated demo files, so a demo user can
    /// read it. Checked against the hash and then dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn parse_clients(clients: &[String]) -> std::result::Result<Scope, String> {
    if clients.is_empty() {
        return Err(format!(
            "clients is empty: list client ids, or [\"{ALL_CLIENTS}\"] for the whole agency"
        ));
    }
    if clients.iter().any(|c| c == ALL_CLIENTS) {
        if clients.len() > 1 {
            return Err(format!(
                "clients mixes \"{ALL_CLIENTS}\" with client ids: use either [\"{ALL_CLIENTS}\"] or a list of ids"
            ));
        }
        return Ok(Scope::AllClients);
    }
    if let Some(bad) = clients.iter().find(|c| c.trim().is_empty()) {
        return Err(format!("clients contains an empty id {bad:?}"));
    }
    Ok(Scope::clients(clients.iter().cloned()))
}

/// Hex SHA-256 of a token, as written in `token_sha256`.
pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(sha256(token))
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0_u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}

/// Turns a TOML error (multi-line, with a source excerpt) into one line
/// with the position.
fn toml_problem(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

fn summarize(known: &BTreeSet<String>) -> String {
    const SHOWN: usize = 10;
    let mut list: Vec<&str> = known.iter().take(SHOWN).map(String::as_str).collect();
    if known.len() > SHOWN {
        list.push("…");
    }
    list.join(", ")
}

/// The credential a caller presented in an `authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Basic base64(user:password)`: the password is the token, the user
    /// is informational.
    Basic {
        /// The user name, as sent.
        user: String,
        /// The token.
        password: String,
    },
    /// `Bearer <token>`.
    Bearer(String),
}

impl Credential {
    /// The token, whatever the scheme.
    pub fn token(&self) -> &str {
        match self {
            Self::Basic { password, .. } => password,
            Self::Bearer(token) => token,
        }
    }
}

// Hand-written so a token never reaches a log through `{:?}`.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Why an `authorization` header could not be read. The messages are
/// safe to send to the caller: they never repeat the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The scheme is neither Basic nor Bearer.
    #[error(
        "unsupported authorization scheme: use `Bearer <token>` or `Basic <base64(user:token)>`"
    )]
    UnsupportedScheme,
    /// The Basic payload is not base64 of UTF-8 `user:password`.
    #[error("malformed Basic credentials: expected base64 of `user:token`")]
    MalformedBasic,
    /// The token is empty.
    #[error("empty token")]
    EmptyToken,
}

/// Base64 as Flight clients send it: standard alphabet, padding optional
/// (some clients drop the `=`).
const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads the value of an `authorization` header. Scheme names are
/// case-insensitive (RFC 9110).
pub fn parse_authorization(value: &str) -> std::result::Result<Credential, HeaderError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(HeaderError::EmptyToken);
        }
        return Ok(Credential::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let bytes = BASE64_ANY_PADDING
            .decode(rest)
            .map_err(|_| HeaderError::MalformedBasic)?;
        let text = String::from_utf8(bytes).map_err(|_| HeaderError::MalformedBasic)?;
        // RFC 7617: the user id cannot contain a colon, the password can.
        let (user, password) = text.split_once(':').ok_or(HeaderError::MalformedBasic)?;
        if password.is_empty() {
            return Err(HeaderError::EmptyToken);
        }
        return Ok(Credential::Basic {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    Err(HeaderError::UnsupportedScheme)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    /// An authenticator that knows fixed tokens: the test double of the
    /// `Authenticator` seam.
    pub(crate) struct StaticAuthenticator(pub(crate) Vec<(&'static str, Principal)>);

    impl Authenticator for StaticAuthenticator {
        fn authenticate(&self, token: &str) -> Option<Principal> {
            self.0
                .iter()
                .find(|(t, _)| *t == token)
                .map(|(_, p)| p.clone())
        }
    }

    fn principal(name: &str, token: &str, clients: &str) -> String {
        format!(
            "[[principal]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nclients = {clients}\n",
            token_sha256_hex(token)
        )
    }

    fn parse_err(text: &str) -> String {
        match TokenAuthenticator::from_toml_str(text) {
            Ok(auth) => panic!("expected an error, got {auth:?}"),
            Err(problem) => problem,
        }
    }

    #[test]
    fn good_file_authenticates_each_principal_with_its_scope() {
        let text = principal("agency", "t-agency", r#"["*"]"#)
            + &principal("acme", "t-acme", r#"["acme", "globex"]"#);
        let auth = TokenAuthenticator::from_toml_str(&text).expect("valid file");

        let agency = auth.authenticate("t-agency").expect("agency token");
        assert_eq!(agency.name, "agency");
        assert_eq!(agency.scope, Scope::AllClients);

        let acme = auth.authenticate("t-acme").expect("acme token");
        assert_eq!(acme.name, "acme");
        assert_eq!(acme.scope, Scope::clients(["acme", "globex"]));

        assert_eq!(auth.authenticate("t-wrong"), None);
        assert_eq!(auth.authenticate(""), None);
    }

    #[test]
    fn plaintext_token_must_match_its_hash() {
        let good = principal("demo", "secret", r#"["*"]"#) + "token = \"secret\"\n";
        assert!(TokenAuthenticator::from_toml_str(&good).is_ok());

        let bad = principal("demo", "secret", r#"["*"]"#) + "token = \"other\"\n";
        assert!(parse_err(&bad).contains("token does not match token_sha256"));
    }

    #[test]
    fn bad_toml_names_the_position() {
        let problem = parse_err("[[principal]\nname = 1");
        assert!(problem.starts_with("line 1, column"), "{problem}");
    }

    #[test]
    fn missing_field_is_named() {
        let text = "[[principal]]\nname = \"a\"\nclients = [\"*\"]\n";
        let problem = parse_err(text);
        assert!(
            problem.contains("missing field `token_sha256`"),
            "{problem}"
        );
    }

    #[test]
    fn unknown_field_is_rejected() {
        let text = principal("a", "t", r#"["*"]"#) + "role = \"admin\"\n";
        let problem = parse_err(&text);
        assert!(problem.contains("unknown field `role`"), "{problem}");

        let problem = parse_err("[[principals]]\nname = \"a\"\n");
        assert!(problem.contains("unknown field `principals`"), "{problem}");
    }

    #[test]
    fn bad_hex_is_rejected() {
        let text = "[[principal]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\nclients = [\"*\"]\n";
        let problem = parse_err(text);
        assert!(
            problem.contains("principal \"a\": token_sha256 must be 64 hex characters"),
            "{problem}"
        );

        // Right alphabet, wrong length (a SHA-1).
        let text = format!(
            "[[principal]]\nname = \"a\"\ntoken_sha256 = \"{}\"\nclients = [\"*\"]\n",
            "ab".repeat(20)
        );
        assert!(parse_err(&text).contains("64 hex characters"));
    }

    #[test]
    fn duplicate_name_is_rejected() {
        let text = principal("a", "t1", r#"["*"]"#) + &principal("a", "t2", r#"["x"]"#);
        assert_eq!(parse_err(&text), "principal \"a\" is defined twice");
    }

    #[test]
    fn duplicate_token_is_rejected() {
        let text = principal("a", "same", r#"["*"]"#) + &principal("b", "same", r#"["x"]"#);
        let problem = parse_err(&text);
        assert!(
            problem.starts_with("principal \"b\" has the same token_sha256"),
            "{problem}"
        );
    }

    #[test]
    fn empty_clients_is_rejected() {
        let problem = parse_err(&principal("a", "t", "[]"));
        assert!(
            problem.contains("principal \"a\": clients is empty"),
            "{problem}"
        );
    }

    #[test]
    fn star_mixed_with_ids_is_rejected() {
        let problem = parse_err(&principal("a", "t", r#"["*", "acme"]"#));
        assert!(problem.contains("mixes \"*\" with client ids"), "{problem}");
    }

    #[test]
    fn empty_name_and_empty_file_are_rejected() {
        let problem = parse_err(&principal(" ", "t", r#"["*"]"#));
        assert!(
            problem.contains("principal #1 has an empty name"),
            "{problem}"
        );
        assert!(parse_err("").contains("defines no [[principal]]"));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auth.toml");
        std::fs::write(&path, principal("a", "t", "[]")).expect("write");
        let err = TokenAuthenticator::from_file(&path).expect_err("malformed");
        let line = err.to_string();
        assert!(
            line.starts_with(&format!("auth file {}: ", path.display())),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(err.exit_code(), 2);

        let missing = dir.path().join("missing.toml");
        let err = TokenAuthenticator::from_file(&missing).expect_err("missing");
        assert!(err.to_string().contains("cannot read it"), "{err}");
    }

    #[test]
    fn unknown_clients_are_reported_with_principal_and_id() {
        let dir = Path::new("auth.toml");
        let text =
            principal("agency", "t1", r#"["*"]"#) + &principal("acme", "t2", r#"["acme", "typo"]"#);
        let auth = TokenAuthenticator::from_toml_str(&text).expect("valid");
        let known: BTreeSet<String> = ["acme".to_string(), "globex".to_string()].into();

        let err = auth
            .check_clients(dir, &known)
            .expect_err("typo is unknown");
        let line = err.to_string();
        assert!(
            line.contains("principal \"acme\" lists client \"typo\""),
            "{line}"
        );
        assert_eq!(err.exit_code(), 2);

        // A warehouse without data cannot contradict the file.
        auth.check_clients(dir, &BTreeSet::new())
            .expect("empty warehouse");
    }

    #[test]
    fn token_check_compares_whole_hashes() {
        let auth = TokenAuthenticator::from_toml_str(&principal("a", "token-1", r#"["*"]"#))
            .expect("valid");
        assert!(auth.authenticate("token-1").is_some());
        // Prefixes, extensions and case changes are different tokens.
        for wrong in ["token-", "token-12", "TOKEN-1", " token-1"] {
            assert_eq!(auth.authenticate(wrong), None, "{wrong:?}");
        }
        // The hash itself is not a token.
        assert_eq!(auth.authenticate(&token_sha256_hex("token-1")), None);
    }

    #[test]
    fn debug_output_hides_hashes() {
        let auth =
            TokenAuthenticator::from_toml_str(&principal("a", "t", r#"["*"]"#)).expect("valid");
        let debug = format!("{auth:?}");
        assert!(!debug.contains(&token_sha256_hex("t")), "{debug}");
        let credential = Credential::Bearer("t0ken".into());
        assert!(!format!("{credential:?}").contains("t0ken"));
    }

    #[test]
    fn basic_with_padded_base64() {
        // "user:tok" is 8 bytes: base64 needs one padding character.
        let encoded = STANDARD.encode("user:tok");
        assert!(encoded.ends_with('='));
        assert_eq!(
            parse_authorization(&format!("Basic {encoded}")),
            Ok(Credential::Basic {
                user: "user".into(),
                password: "tok".into()
            })
        );
    }

    #[test]
    fn basic_with_unpadded_base64() {
        let encoded = STANDARD_NO_PAD.encode("user:tok");
        assert!(!encoded.ends_with('='));
        let credential = parse_authorization(&format!("Basic {encoded}")).expect("unpadded");
        assert_eq!(credential.token(), "tok");
    }

    #[test]
    fn basic_password_may_contain_colons_and_user_may_be_empty() {
        let encoded = STANDARD.encode(":a:b");
        assert_eq!(
            parse_authorization(&format!("basic {encoded}")),
            Ok(Credential::Basic {
                user: String::new(),
                password: "a:b".into()
            })
        );
    }

    #[test]
    fn bearer_is_accepted_in_any_case() {
        assert_eq!(
            parse_authorization("Bearer abc"),
            Ok(Credential::Bearer("abc".into()))
        );
        assert_eq!(
            parse_authorization("bearer  abc "),
            Ok(Credential::Bearer("abc".into()))
        );
    }

    #[test]
    fn garbage_is_rejected_without_echoing_it() {
        assert_eq!(
            parse_authorization("Basic !!!"),
            Err(HeaderError::MalformedBasic)
        );
        let no_colon = STANDARD.encode("just-a-token");
        assert_eq!(
            parse_authorization(&format!("Basic {no_colon}")),
            Err(HeaderError::MalformedBasic)
        );
        let not_utf8 = STANDARD.encode([0xff, 0xfe, b':', b'x']);
        assert_eq!(
            parse_authorization(&format!("Basic {not_utf8}")),
            Err(HeaderError::MalformedBasic)
        );
        assert_eq!(
            parse_authorization(&format!("Basic {}", STANDARD.encode("user:"))),
            Err(HeaderError::EmptyToken)
        );
        assert_eq!(parse_authorization("Bearer"), Err(HeaderError::EmptyToken));
        assert_eq!(
            parse_authorization("Bearer   "),
            Err(HeaderError::EmptyToken)
        );
        assert_eq!(
            parse_authorization("Token abc"),
            Err(HeaderError::UnsupportedScheme)
        );
        assert_eq!(parse_authorization(""), Err(HeaderError::UnsupportedScheme));
        let err = parse_authorization("Digest s3cret").expect_err("unsupported");
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn test_double_implements_the_seam() {
        let double = StaticAuthenticator(vec![(
            "t",
            Principal {
                name: "p".into(),
                scope: Scope::clients(["c"]),
            },
        )]);
        let auth: &dyn Authenticator = &double;
        assert_eq!(auth.authenticate("t").map(|p| p.name), Some("p".into()));
        assert!(auth.authenticate("u").is_none());
    }
}
