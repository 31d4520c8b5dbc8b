//! Where data comes from: the platform connectors and the HTTP layer they
//! call the platforms through.
//!
//! - [`connectors`]: one module per platform, turning its payloads into
//!   unified records.
//! - [`http`]: retries, rate limits, circuit breakers and OAuth tokens of
//!   every platform call.

pub mod connectors;
pub mod http;
