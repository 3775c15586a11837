//! An engine that keeps everything in memory: the cache-only case.

use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

use crate::{KvsEngine, KvsError, Result};

/// A [`KvsEngine`] on a concurrent skip list, with nothing on disk.
#[derive(Clone, Default)]
pub struct MemoryEngine {
    map: Arc<SkipMap<String, String>>,
}

impl MemoryEngine {
    /// Creates an empty engine.
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }
}

impl KvsEngine for MemoryEngine {
    fn set(&self, key: String, value: String) -> Result<()> {
        self.map.insert(key, value);
        Ok(())
    }

    fn get(&self, key: String) -> Result<Option<String>> {
        Ok(self.map.get(&key).map(|e| e.value().clone()))
    }

    fn remove(&self, key: String) -> Result<()> {
        match self.map.remove(&key) {
            Some(_) => Ok(()),
            None => Err(KvsError::KeyNotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_remove() {
        let e = MemoryEngine::new();
        e.set("a".into(), "1".into()).unwrap();
        let c = e.clone();
        assert_eq!(c.get("a".into()).unwrap().as_deref(), Some("1"));
        c.remove("a".into()).unwrap();
        assert_eq!(e.get("a".into()).unwrap(), None);
        assert!(matches!(e.remove("a".into()), Err(KvsError::KeyNotFound)));
    }
}
