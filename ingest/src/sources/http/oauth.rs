//! Credentials and OAuth2 access tokens: a token is refreshed when it is
//! missing, about to expire, or refused with 401, and cached per
//! credentials.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::debug;

use super::{CallStats, FailureKind, HttpClient, SourceError, Tally, url_encode, without_url};

/// Credentials of one source. `Debug` never shows a secret.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// A long-lived access token (TikTok, Shopify) or a fixed one.
    pub access_token: Option<String>,
    /// OAuth2 token endpoint for the refresh-token flow.
    pub token_url: Option<String>,
    /// OAuth2 client id.
    pub client_id: Option<String>,
    /// OAuth2 client secret.
    pub client_secret: Option<String>,
    /// OAuth2 refresh token.
    pub refresh_token: Option<String>,
    /// Google Ads developer token.
    pub developer_token: Option<String>,
    /// Google Ads manager account id.
    pub login_customer_id: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Credentials")
            .field("access_token", &shown(&self.access_token))
            .field("token_url", &self.token_url)
            .field("client_id", &shown(&self.client_id))
            .field("client_secret", &shown(&self.client_secret))
            .field("refresh_token", &shown(&self.refresh_token))
            .field("developer_token", &shown(&self.developer_token))
            .field("login_customer_id", &self.login_customer_id)
            .finish()
    }
}

impl Credentials {
    pub(super) fn can_refresh(&self) -> bool {
        self.token_url.is_some() && self.refresh_token.is_some()
    }
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    value: String,
    expires_at: Option<Instant>,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: Option<u64>,
}

impl HttpClient {
    pub(super) async fn token(
        &self,
        cred_key: &str,
        creds: &Credentials,
        source_key: &str,
        tally: &Tally<'_>,
    ) -> Result<Option<String>, SourceError> {
        if !creds.can_refresh() {
            return Ok(creds.access_token.clone());
        }
        if let Some(t) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cred_key)
            .filter(|t| t.expires_at.is_none_or(|e| Instant::now() < e))
        {
            return Ok(Some(t.value.clone()));
        }
        let fail = |kind, message: String| SourceError {
            source_key: source_key.to_owned(),
            kind,
            message,
            attempts: 1,
        };
        let url = creds.token_url.as_deref().unwrap_or_default();
        let mut form = vec![
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                creds.refresh_token.as_deref().unwrap_or_default(),
            ),
        ];
        if let Some(id) = &creds.client_id {
            form.push(("client_id", id));
        }
        if let Some(secret) = &creds.client_secret {
            form.push(("client_secret", secret));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        tally.each(CallStats::add_call);
        let reply = self
            .inner
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                fail(
                    FailureKind::Transient,
                    format!("token refresh failed: {}", without_url(&e)),
                )
            })?;
        let status = reply.status();
        let bytes = reply.bytes().await.map_err(|e| {
            fail(
                FailureKind::Transient,
                format!("token refresh failed: {}", without_url(&e)),
            )
        })?;
        if !status.is_success() {
            let kind = if status.is_server_error() {
                FailureKind::Transient
            } else {
                FailureKind::Auth
            };
            return Err(fail(
                kind,
                format!("token refresh refused with HTTP {status}"),
            ));
        }
        let parsed: TokenReply = serde_json::from_slice(&bytes).map_err(|_| {
            fail(
                FailureKind::Auth,
                "token refresh reply has no access_token".to_owned(),
            )
        })?;
        let expires_at = parsed
            .expires_in
            .map(|s| Instant::now() + Duration::from_secs(s.saturating_sub(60)));
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                cred_key.to_owned(),
                Token {
                    value: parsed.access_token.clone(),
                    expires_at,
                },
            );
        debug!(source = source_key, "access token refreshed");
        Ok(Some(parsed.access_token))
    }

    pub(super) fn forget_token(&self, cred_key: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cred_key);
    }
}
