//! JWT bearer tokens: an optional second identity source beside the auth
//! file, for deployments whose identity provider signs tokens.
//!
//! A token is accepted when its signature verifies with the configured key
//! (HS256 with a shared secret, or RS256 with the provider's public key),
//! it has not expired (`exp` is required), and its issuer and audience
//! match when those are configured. The caller's clients come from the
//! `clients` claim, with the same rules as the auth file (`["*"]` for the
//! whole agency, else client ids); the principal's name is `jwt:<sub>`.
//!
//! ```json
//! { "sub": "dashboard-acme", "clients": ["acme"], "exp": 1767225600 }
//! ```

use std::fmt;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{Authenticator, Principal, parse_clients};
use crate::error::{Error, Result};

/// Shortest HS256 secret accepted: RFC 7518 asks for a key at least as
/// long as the hash output (32 bytes).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The claim holding the caller's client list.
pub const CLIENTS_CLAIM: &str = "clients";

/// Verifies JWTs and turns their claims into principals.
#[derive(Clone)]
pub struct JwtAuthenticator {
    key: DecodingKey,
    validation: Validation,
}

// Hand-written: the key must never reach a log.
impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithms", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

/// The claims adlake reads; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    clients: Vec<String>,
}

impl JwtAuthenticator {
    /// Accepts HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> std::result::Result<Self, String> {
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(format!(
                "the HS256 secret has {} bytes; at least {MIN_HS256_SECRET_BYTES} are needed",
                secret.len()
            ));
        }
        Ok(Self::with_key(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// Accepts RS256 tokens whose signature verifies with the PEM-encoded
    /// RSA public key `pem`.
    pub fn rs256_pem(pem: &[u8]) -> std::result::Result<Self, String> {
        let key = DecodingKey::from_rsa_pem(pem)
            .map_err(|err| format!("not a PEM-encoded RSA public key: {err}"))?;
        Ok(Self::with_key(key, Algorithm::RS256))
    }

    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Without a configured audience, a token that names one is still
        // accepted (the library would refuse it otherwise).
        validation.validate_aud = false;
        validation.leeway = 30;
        Self { key, validation }
    }

    /// Also requires the `iss` claim to be `issuer`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self.validation.required_spec_claims.insert("iss".into());
        self
    }

    /// Also requires the `aud` claim to contain `audience`.
    #[must_use]
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self
    }

    /// The authenticator the flags ask for: `None` when neither key file is
    /// given. Errors name the file and what is wrong with it.
    pub fn from_files(
        hs256_secret_file: Option<&Path>,
        rs256_public_key_file: Option<&Path>,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Option<Self>> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|err| {
                Error::Config(format!(
                    "JWT key file {}: cannot read it: {err}",
                    path.display()
                ))
            })
        };
        let authenticator = match (hs256_secret_file, rs256_public_key_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give either --jwt-hs256-secret-file or --jwt-rs256-public-key-file, not both"
                        .into(),
                ));
            }
            (Some(path), None) => {
                let secret = read(path)?;
                // A trailing newline from `echo > file` is not part of the secret.
                let secret = secret.trim_ascii_end();
                Self::hs256(secret).map_err(|problem| {
                    Error::Config(format!("JWT key file {}: {problem}", path.display()))
                })?
            }
            (None, Some(path)) => Self::rs256_pem(&read(path)?).map_err(|problem| {
                Error::Config(format!("JWT key file {}: {problem}", path.display()))
            })?,
        };
        let authenticator = match issuer {
            Some(issuer) => authenticator.with_issuer(issuer),
            None => authenticator,
        };
        Ok(Some(match audience {
            Some(audience) => authenticator.with_audience(audience),
            None => authenticator,
        }))
    }

    /// The principal of a valid token, or why the token is refused (for the
    /// log: the caller only learns that the token is invalid).
    pub fn verify(&self, token: &str) -> std::result::Result<Principal, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|err| err.to_string())?;
        let claims = data.claims;
        if claims.sub.trim().is_empty() {
            return Err("empty `sub` claim".into());
        }
        let scope = parse_clients(&claims.clients)
            .map_err(|problem| format!("`{CLIENTS_CLAIM}` claim: {problem}"))?;
        Ok(Principal {
            name: format!("jwt:{}", claims.sub),
            scope,
        })
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, token: &str) -> Option<Principal> {
        match self.verify(token) {
            Ok(principal) => Some(principal),
            Err(reason) => {
                tracing::debug!(reason, "JWT refused");
                None
            }
        }
    }
}

/// The auth file's tokens first, then JWTs: the server's authenticator
/// when a JWT key is configured.
pub struct TokensThenJwt<T> {
    /// The opaque tokens of the auth file (or demo mode).
    pub tokens: T,
    /// The JWT verifier.
    pub jwt: JwtAuthenticator,
}

impl<T: Authenticator> Authenticator for TokensThenJwt<T> {
    fn authenticate(&self, token: &str) -> Option<Principal> {
        self.tokens
            .authenticate(token)
            .or_else(|| self.jwt.authenticate(token))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use adlake_engine::Scope;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    pub(crate) const SECRET: &[u8] = b"an-hs256-secret-of-at-least-32-bytes!";
    /// A 2048-bit RSA key pair made for these tests only.
    const RSA_PRIVATE: &str = include_str!("testdata/jwt-test-rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("testdata/jwt-test-rsa-public.pem");

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    pub(crate) fn hs256_token(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode")
    }

    fn rs256_token(claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("private key");
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("encode")
    }

    #[test]
    fn hs256_token_gives_the_clients_of_its_claim() {
        let jwt = JwtAuthenticator::hs256(SECRET).expect("secret");
        let token = hs256_token(&json!({"sub": "dash", "clients": ["acme"], "exp": now() + 600}));
        let principal = jwt.verify(&token).expect("valid");
        assert_eq!(principal.name, "jwt:dash");
        assert_eq!(principal.scope, Scope::clients(["acme"]));
        let agency = hs256_token(&json!({"sub": "ops", "clients": ["*"], "exp": now() + 600}));
        assert_eq!(jwt.verify(&agency).expect("valid").scope, Scope::AllClients);
    }

    #[test]
    fn rs256_token_verifies_with_the_public_key() {
        let jwt = JwtAuthenticator::rs256_pem(RSA_PUBLIC.as_bytes()).expect("public key");
        let token = rs256_token(&json!({"sub": "bi", "clients": ["beta"], "exp": now() + 600}));
        assert_eq!(
            jwt.verify(&token).expect("valid").scope,
            Scope::clients(["beta"])
        );
        // An HS256 token signed with the public key's bytes as a secret (the
        // classic algorithm-confusion attack) is refused.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "bi", "clients": ["*"], "exp": now() + 600}),
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        )
        .expect("encode");
        assert!(jwt.verify(&forged).is_err());
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let jwt = JwtAuthenticator::hs256(SECRET).expect("secret");
        let expired = hs256_token(&json!({"sub": "a", "clients": ["acme"], "exp": now() - 3600}));
        assert!(jwt.verify(&expired).unwrap_err().contains("xpired"));
        let no_exp = hs256_token(&json!({"sub": "a", "clients": ["acme"]}));
        assert!(jwt.verify(&no_exp).is_err());
        let no_clients = hs256_token(&json!({"sub": "a", "exp": now() + 600}));
        assert!(jwt.verify(&no_clients).unwrap_err().contains("clients"));
        let mixed = hs256_token(&json!({"sub": "a", "clients": ["*", "acme"], "exp": now() + 600}));
        assert!(jwt.verify(&mixed).is_err());
        let other_key = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a", "clients": ["*"], "exp": now() + 600}),
            &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
        )
        .expect("encode");
        assert!(jwt.verify(&other_key).is_err());
        let valid = hs256_token(&json!({"sub": "a", "clients": ["acme"], "exp": now() + 600}));
        let mut tampered = valid.clone();
        tampered.insert(valid.find('.').expect("dot") + 2, 'x');
        assert!(jwt.verify(&tampered).is_err());
        for garbage in ["", ".", "..", "a.b.c", "not a token", "Bearer x"] {
            assert!(jwt.authenticate(garbage).is_none(), "{garbage:?}");
        }
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let jwt = JwtAuthenticator::hs256(SECRET)
            .expect("secret")
            .with_issuer("idp")
            .with_audience("adlake");
        let exp = now() + 600;
        let good = hs256_token(
            &json!({"sub": "a", "clients": ["acme"], "exp": exp, "iss": "idp", "aud": "adlake"}),
        );
        assert!(jwt.verify(&good).is_ok());
        let wrong_iss = hs256_token(
            &json!({"sub": "a", "clients": ["acme"], "exp": exp, "iss": "other", "aud": "adlake"}),
        );
        assert!(jwt.verify(&wrong_iss).is_err());
        let no_aud =
            hs256_token(&json!({"sub": "a", "clients": ["acme"], "exp": exp, "iss": "idp"}));
        assert!(jwt.verify(&no_aud).is_err());
    }

    #[test]
    fn short_secrets_and_bad_key_files_are_refused() {
        assert!(JwtAuthenticator::hs256(b"short").is_err());
        assert!(JwtAuthenticator::rs256_pem(b"not pem").is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"short\n").expect("write");
        let err = JwtAuthenticator::from_files(Some(&secret), None, None, None).unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let missing = dir.path().join("missing");
        let err = JwtAuthenticator::from_files(None, Some(&missing), None, None).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        assert!(
            JwtAuthenticator::from_files(None, None, None, None)
                .expect("none")
                .is_none()
        );
    }

    #[test]
    fn tokens_then_jwt_accepts_both() {
        use crate::auth::tests::StaticAuthenticator;
        let both = TokensThenJwt {
            tokens: StaticAuthenticator(vec![(
                "opaque",
                Principal {
                    name: "file".into(),
                    scope: Scope::clients(["beta"]),
                },
            )]),
            jwt: JwtAuthenticator::hs256(SECRET).expect("secret"),
        };
        assert_eq!(both.authenticate("opaque").expect("file").name, "file");
        let token = hs256_token(&json!({"sub": "d", "clients": ["acme"], "exp": now() + 600}));
        assert_eq!(both.authenticate(&token).expect("jwt").name, "jwt:d");
        assert!(both.authenticate("unknown").is_none());
    }
}
