//! Producer ids for idempotent producers (stub until implemented).

use std::path::Path;

use crate::error::BrokerError;

/// Hands out producer ids.
pub struct ProducerIdManager {}

impl ProducerIdManager {
    pub fn open(_data_dir: &Path) -> Result<Self, BrokerError> {
        Ok(Self {})
    }
}
