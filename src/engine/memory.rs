//! An engine that keeps everything in memory: the cache-only case.

use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

use crate::engine::{EngineStats, Entry, Update};
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

    fn set_expiring(&self, _key: String, _value: String, _expires_at: u64) -> Result<()> {
        Err(not_yet("TTL"))
    }

    fn get_entry(&self, _key: &str) -> Result<Option<Entry>> {
        Err(not_yet("get_entry"))
    }

    fn update<R>(&self, _key: String, _f: impl FnOnce(Option<Entry>) -> (Update, R)) -> Result<R> {
        Err(not_yet("update"))
    }

    fn scan(&self, _after: Option<&str>, _limit: usize) -> Result<Vec<String>> {
        Err(not_yet("scan"))
    }

    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn clear(&self) -> Result<()> {
        self.map.clear();
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            keys: self.len(),
            ..EngineStats::default()
        }
    }
}

// TODO(memory helper): replaced by real implementations before issue 8 lands.
fn not_yet(what: &str) -> KvsError {
    KvsError::InvalidInput(format!(
        "{what} is not implemented by the memory engine yet"
    ))
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
