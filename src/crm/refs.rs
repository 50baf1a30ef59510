//! Entity refs as users type them (`lead:018`, `"lead: 22"`, `lead:1.5`),
//! read against the key column's type: an integer key column takes only
//! integers, written in any way (`018` is `18`); a UUID column (PostgreSQL
//! `uuid`, MariaDB `UUID`) only UUIDs, in either case (`A0EE…` is the
//! `a0ee…` the server prints); and the canonical form is what holds, links
//! and explanations store. A ref that cannot name a row is refused, never
//! stored as a hold that protects nothing.

use std::collections::BTreeMap;

use super::{Crm, CrmError};
use crate::config::{Config, did_you_mean};
use crate::model::{EntityKey, EntityRef, canonical_uuid};

/// The longest entity key accepted from a user (bytes).
pub const MAX_KEY_BYTES: usize = 1024;

/// How an entity type's key column stores its keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyKind {
    /// Text (or anything else): a key is taken as typed.
    #[default]
    Text,
    /// Integers: `018` is `18`; `1.5` names nothing.
    Integer,
    /// The server's UUID type: any spelling of a UUID is its printed text.
    Uuid,
}

/// Per entity type: how its key column stores keys.
#[derive(Clone, Debug, Default)]
pub struct KeyKinds(pub BTreeMap<String, KeyKind>);

impl KeyKinds {
    /// The types whose key column is a UUID column.
    pub fn uuid_types(&self) -> std::collections::HashSet<String> {
        self.0
            .iter()
            .filter(|(_, k)| **k == KeyKind::Uuid)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Asks the CRM's catalogue about every type's key column.
    pub async fn read(config: &Config, crm: &dyn Crm) -> Result<KeyKinds, CrmError> {
        let mut kinds = BTreeMap::new();
        for et in &config.entities {
            let kind = crm
                .columns(&et.table)
                .await?
                .and_then(|cols| {
                    cols.into_iter()
                        .find(|c| super::fit::same(crm.kind(), &c.name, &et.key))
                })
                .map_or(KeyKind::Text, |c| {
                    if c.integer {
                        KeyKind::Integer
                    } else if c.uuid {
                        KeyKind::Uuid
                    } else {
                        KeyKind::Text
                    }
                });
            kinds.insert(et.name.clone(), kind);
        }
        Ok(KeyKinds(kinds))
    }

    /// How `entity_type`'s key column stores keys (text when unknown).
    pub fn of(&self, entity_type: &str) -> KeyKind {
        self.0.get(entity_type).copied().unwrap_or_default()
    }

    /// Reads `input` as a ref of this config: a known type, a key without
    /// control characters or surrounding blanks, an integer where the key
    /// column holds integers, a UUID (in its printed text) where it holds
    /// UUIDs. Returns the canonical ref and its typed key.
    pub fn parse(&self, config: &Config, input: &str) -> Result<(EntityRef, EntityKey), String> {
        let r = EntityRef::parse(input).map_err(|e| e.to_string())?;
        if config.entity(&r.entity_type).is_none() {
            let types: Vec<&str> = config.entities.iter().map(|e| e.name.as_str()).collect();
            return Err(format!(
                "`{}` is not an entity type of this config{}; its types: {}",
                printable(&r.entity_type),
                did_you_mean(&r.entity_type, types.iter().copied()),
                types.join(", ")
            ));
        }
        let key = r.key.as_str();
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "the key of `{}` is {} bytes long; keys of more than {MAX_KEY_BYTES} bytes are refused",
                r.entity_type,
                key.len()
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(format!(
                "the key in `{}` holds a control character (newline, tab, NUL …); type the key as the CRM stores it",
                printable(input)
            ));
        }
        if key.trim() != key {
            return Err(format!(
                "the key in `{}` has blanks around it; write {}:{}",
                printable(input),
                r.entity_type,
                key.trim()
            ));
        }
        let column = || {
            config
                .entity(&r.entity_type)
                .map(|e| e.key.as_str())
                .unwrap_or("?")
        };
        if self.of(&r.entity_type) == KeyKind::Uuid {
            let Some(uuid) = canonical_uuid(key) else {
                return Err(format!(
                    "`{}`: {} keys are UUIDs (column {}), and `{}` is not one; write it as 8-4-4-4-12 hexadecimal digits",
                    printable(input),
                    r.entity_type,
                    column(),
                    printable(key)
                ));
            };
            return Ok((
                EntityRef::new(r.entity_type, uuid.clone()),
                EntityKey::Text(uuid),
            ));
        }
        if self.of(&r.entity_type) == KeyKind::Integer {
            let digits = key.strip_prefix('-').unwrap_or(key);
            let n = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| key.parse::<i64>().ok())
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "`{}`: {} keys are integers (column {}), and `{}` is not one",
                        printable(input),
                        r.entity_type,
                        column(),
                        printable(key)
                    )
                })?;
            return Ok((
                EntityRef::new(r.entity_type, n.to_string()),
                EntityKey::Int(n),
            ));
        }
        let k = EntityKey::Text(r.key.clone());
        Ok((r, k))
    }
}

/// Whether the CRM holds the row `key` of `entity_type`.
pub async fn exists(
    config: &Config,
    crm: &dyn Crm,
    entity_type: &str,
    key: &EntityKey,
) -> Result<bool, CrmError> {
    let Some(et) = config.entity(entity_type) else {
        return Ok(false);
    };
    Ok(!crm
        .existing(et, std::slice::from_ref(key))
        .await?
        .is_empty())
}

/// `text` with control characters escaped, for messages that quote input.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(char::escape_debug)
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[crm]
url = "sqlite://crm.db"
[crm.entities.lead]
table = "leads"
key = "id"
clock = "modified_at"
[crm.entities.quote]
table = "quotes"
key = "number"
clock = "modified_at"
[technical]
url = "technical"
[[policy]]
name = "p"
root = "lead"
retain = "24 months"
basis = "b"
[audit]
key = "0123456789abcdef"
"#;
        crate::config::parse(
            text,
            std::path::Path::new("l.toml"),
            std::path::Path::new("/"),
        )
        .unwrap()
    }

    #[test]
    fn integer_keys_are_read_as_integers_and_refused_otherwise() {
        let c = config();
        let kinds = KeyKinds(
            [
                ("lead".to_string(), KeyKind::Integer),
                ("quote".to_string(), KeyKind::Text),
            ]
            .into_iter()
            .collect(),
        );
        let (r, k) = kinds.parse(&c, "lead:018").unwrap();
        assert_eq!(
            (r.to_string(), k),
            ("lead:18".to_string(), EntityKey::Int(18))
        );
        assert_eq!(kinds.parse(&c, "lead:-1").unwrap().1, EntityKey::Int(-1));
        for bad in [
            "lead:1.5",
            "lead: 22",
            "lead:22 ",
            "lead:+3",
            "lead:1e3",
            "lead:1\nINJECT",
            "lead:99999999999999999999",
        ] {
            let e = kinds.parse(&c, bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
        // A text key stays as typed, leading zeros and all.
        assert_eq!(
            kinds.parse(&c, "quote:018").unwrap().1,
            EntityKey::Text("018".into())
        );
        assert!(kinds.parse(&c, "quote:a\0b").is_err());
        let e = kinds.parse(&c, "leads:1").unwrap_err();
        assert!(
            e.contains("did you mean `lead`?") && e.contains("its types: lead, quote"),
            "{e}"
        );
    }

    #[test]
    fn uuid_keys_are_read_in_the_text_the_server_prints() {
        let c = config();
        let kinds = KeyKinds(
            [
                ("lead".to_string(), KeyKind::Uuid),
                ("quote".to_string(), KeyKind::Text),
            ]
            .into_iter()
            .collect(),
        );
        let printed = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for typed in [
            "lead:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "lead:A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "lead:{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        ] {
            let (r, k) = kinds.parse(&c, typed).unwrap();
            assert_eq!(r.to_string(), format!("lead:{printed}"), "{typed}");
            assert_eq!(k, EntityKey::Text(printed.into()), "{typed}");
        }
        for bad in [
            "lead:4711",
            "lead:a0eebc99-9c0b",
            "lead:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1x",
        ] {
            let e = kinds.parse(&c, bad).unwrap_err();
            assert!(e.contains("keys are UUIDs (column id)"), "{e}");
        }
        // A text key column keeps the letters as typed.
        assert_eq!(
            kinds.parse(&c, "quote:A0EE").unwrap().1,
            EntityKey::Text("A0EE".into())
        );
    }
}
