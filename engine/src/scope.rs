//! Which clients a caller may see.

use std::collections::BTreeSet;
use std::fmt;

/// The set of clients a caller may read. Decided by the caller's identity
/// (never by the request body) and applied by the engine at the scan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The whole agency: every client.
    AllClients,
    /// Exactly these clients (possibly none).
    Clients(BTreeSet<String>),
}

impl Scope {
    /// A scope of the given client ids.
    pub fn clients<I, S>(ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Clients(ids.into_iter().map(Into::into).collect())
    }

    /// Whether the scope lets the caller see `client_id`.
    pub fn allows(&self, client_id: &str) -> bool {
        match self {
            Self::AllClients => true,
            Self::Clients(ids) => ids.contains(client_id),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllClients => f.write_str("*"),
            Self::Clients(ids) => {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                write!(f, "{}", ids.join(","))
            }
        }
    }
}
