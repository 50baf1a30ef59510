//! An in-memory technical store (`memory://`): for tests and the property
//! test; it lives as long as the process. A rewrite replaces an object's
//! bytes under the lock, so it is as atomic and conditional as the other
//! stores'; its date becomes the time of the rewrite.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    DeleteOutcome, Expected, Listed, ObjectMeta, RewriteOutcome, StoreError, TechnicalStore,
    validate_key,
};
use crate::model::Instant;

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, (Vec<u8>, Instant)>>,
}

impl MemoryStore {
    pub fn put(&self, key: &str, content: Vec<u8>, modified: Instant) {
        self.lock().insert(key.to_string(), (content, modified));
    }

    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Vec<u8>, Instant)>> {
        // A panic while holding the lock leaves a consistent map.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn meta(key: &str, v: &(Vec<u8>, Instant)) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: v.0.len() as u64,
            modified: Some(v.1),
            etag: None,
            metadata: Vec::new(),
            name: None,
        }
    }
}

#[async_trait]
impl TechnicalStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn check(&self) -> Result<Vec<String>, StoreError> {
        Ok(vec![
            "memory store: contents live only as long as this process".into(),
        ])
    }

    async fn list(&self, sink: &mut (dyn FnMut(Listed) + Send)) -> Result<u64, StoreError> {
        let all: Vec<ObjectMeta> = self.lock().iter().map(|(k, v)| Self::meta(k, v)).collect();
        let n = all.len() as u64;
        for m in all {
            sink(Listed::Object(m));
        }
        Ok(n)
    }

    async fn read(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        validate_key(key)?;
        match self.lock().get(key) {
            Some((c, _)) => Ok(Box::new(std::io::Cursor::new(c.clone()))),
            None => Err(StoreError::io("open", std::io::ErrorKind::NotFound.into())),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        validate_key(key)?;
        Ok(self.lock().get(key).map(|v| Self::meta(key, v)))
    }

    async fn delete(&self, key: &str) -> Result<DeleteOutcome, StoreError> {
        validate_key(key)?;
        Ok(match self.lock().remove(key) {
            Some(_) => DeleteOutcome::Deleted,
            None => DeleteOutcome::AlreadyGone,
        })
    }

    async fn rewrite(
        &self,
        key: &str,
        expected: &Expected,
        content: &std::path::Path,
    ) -> Result<RewriteOutcome, StoreError> {
        validate_key(key)?;
        let new = std::fs::read(content).map_err(|source| StoreError::io("read spool", source))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let mut objects = self.lock();
        let Some(old) = objects.get_mut(key) else {
            return Ok(RewriteOutcome::AlreadyGone);
        };
        if !expected.matches(&Self::meta(key, old)) {
            // Already the new content: an earlier rewrite whose answer was lost.
            return Ok(if old.0 == new {
                RewriteOutcome::Rewritten(Self::meta(key, old))
            } else {
                RewriteOutcome::Changed
            });
        }
        *old = (new, now);
        Ok(RewriteOutcome::Rewritten(Self::meta(key, old)))
    }
}
