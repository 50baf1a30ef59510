//! Pseudonyms: HMAC-SHA256(audit key, ref). Anyone holding the key can
//! recompute the pseudonym of `lead:4711` and find its records; nobody
//! without it can go back from a pseudonym to the ref.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::sensitive::Sensitive;

#[derive(Clone)]
pub struct Pseudonymizer {
    /// The HMAC keyed once; each pseudonym starts from a copy of it (the
    /// key's two compression rounds are not paid per pseudonym).
    keyed: Hmac<Sha256>,
}

impl Pseudonymizer {
    pub fn new(key: Sensitive<Vec<u8>>) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose())
            .expect("HMAC takes keys of any length");
        Pseudonymizer { keyed }
    }

    fn mac_bytes(&self, text: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn mac(&self, text: &str) -> String {
        hex::encode(self.mac_bytes(text))
    }

    /// [`Pseudonymizer::entity`] as its 32 bytes (what `audit verify` holds).
    pub fn entity_bytes(&self, entity_type: &str, key: &str) -> [u8; 32] {
        self.mac_bytes(&format!("{entity_type}:{key}"))
    }

    /// [`Pseudonymizer::object`] as its 32 bytes.
    pub fn object_bytes(&self, key: &str) -> [u8; 32] {
        self.mac_bytes(&format!("object:{key}"))
    }

    /// The pseudonym of a hold's target, HMAC of its canonical text
    /// (`lead:4711`, `object:KEY`, `prefix:P`): an entity's or an object's
    /// hold records share the pseudonym of its deletion.
    pub fn target(&self, canonical: &str) -> String {
        self.mac(canonical)
    }

    /// The full pseudonym of an entity ref, as stored in the audit log.
    pub fn entity(&self, entity_type: &str, key: &str) -> String {
        self.mac(&format!("{entity_type}:{key}"))
    }

    /// The full pseudonym of an object key (relative to the store's root).
    pub fn object(&self, key: &str) -> String {
        self.mac(&format!("object:{key}"))
    }

    /// Short display form for reports: `lead:~3fa9c2e1b0d47a12`.
    pub fn show_entity(&self, entity_type: &str, key: &str) -> String {
        format!("{entity_type}:~{}", &self.entity(entity_type, key)[..16])
    }

    pub fn show_object(&self, key: &str) -> String {
        format!("object:~{}", &self.object(key)[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_keyed_and_distinct() {
        let a = Pseudonymizer::new(Sensitive::new(b"0123456789abcdef".to_vec()));
        let b = Pseudonymizer::new(Sensitive::new(b"fedcba9876543210".to_vec()));
        assert_eq!(a.entity("lead", "4711"), a.entity("lead", "4711"));
        assert_ne!(a.entity("lead", "4711"), b.entity("lead", "4711"));
        assert_ne!(a.entity("lead", "4711"), a.entity("quote", "4711"));
        assert_ne!(a.entity("lead", "1"), a.object("lead:1"));
        assert_eq!(a.entity("lead", "4711").len(), 64);
        assert!(!a.show_entity("lead", "4711").contains("4711"));
    }
}
