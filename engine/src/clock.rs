//! What "now" is for the engine: relative date ranges (`yesterday`,
//! `last_7_days`), `now()`, `current_date` and `current_timestamp` all read
//! the engine's clock, so one statement sees one instant and a report can
//! be reproduced (a fixed clock), or moved across a day boundary (tests).

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// The system clock, or a fixed instant that can be moved.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Mutex<DateTime<Utc>>>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that stays at `at` until [`Clock::set`] moves it.
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self(Some(Arc::new(Mutex::new(at))))
    }

    /// Moves a fixed clock (and every engine sharing it) to `at`; a no-op
    /// on the system clock.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(fixed) = &self.0 {
            *fixed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
        }
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Some(fixed) => *fixed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            None => Utc::now(),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(_) => write!(f, "Clock::fixed({})", self.now()),
            None => f.write_str("Clock::system()"),
        }
    }
}
