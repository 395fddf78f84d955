//! What the routes share: the rule service behind its lock, the event hub, and the API's own
//! runtime state (sign-in throttling).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::{events::Hub, service::Service};

/// What the API handlers share: the state behind its lock, and the event hub.
#[derive(Clone, Debug)]
pub struct Shared {
    pub(crate) state: Arc<Mutex<Service>>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) web: Arc<super::Runtime>,
}

pub fn lock(s: &Shared) -> MutexGuard<'_, Service> {
    // A panic while holding the lock leaves state that is still consistent with the store
    // (store first, kernel second); keep serving.
    s.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
