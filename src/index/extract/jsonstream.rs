//! Streaming evaluation of the JSONPaths that allow it: `$` followed by
//! member names, array indices and wildcards (`$.lead.id`,
//! `$.records[*].attributes.referenceId`, `$['a b'][0]`). The document is
//! never held in memory: values off the path are skipped as they stream by,
//! so a 1 GB array costs what one element costs. Paths with filters,
//! slices or descendant segments fall back to whole-document evaluation.
//!
//! Duplicate member names: each value is visited, so each yields a link
//! (the conservative reading: a file naming two entities links to both).
//! Under a rule with a record, each value also carries the pointer of the
//! record it lies in: the node the record's steps (a prefix of the path's)
//! lead to, as the whole-document evaluator names it too.

use std::cell::RefCell;
use std::fmt;
use std::io::Read;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Found, Unreadable};
pub use crate::config::rules::{Step, simple_path};

/// A member name as a JSON pointer token (RFC 6901: `~` and `/` escaped).
pub(crate) fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

struct Walk<'a> {
    steps: &'a [Step],
    pointer: String,
    out: &'a RefCell<Vec<Found>>,
    /// Under a rule with a record: `Err(k)` while `k` more steps lead to
    /// the record, then `Ok(pointer)` of the record this value is in.
    record: Option<Result<&'a str, usize>>,
}

impl<'a> Walk<'a> {
    /// A scalar: a link when the path ends here (within the links cap).
    fn leaf<E: serde::de::Error>(self, key: impl FnOnce() -> String) -> Result<(), E> {
        if self.steps.is_empty() {
            if self.out.borrow().len() >= super::MAX_LINKS {
                return Err(E::custom(super::TOO_MANY));
            }
            let record = match self.record {
                None => None,
                Some(Ok(r)) => Some(r.to_string()),
                // The record is a proper prefix of the path.
                Some(Err(_)) => return Err(E::custom("a value outside any record")),
            };
            self.out.borrow_mut().push(Found {
                key: key(),
                location: self.pointer,
                record,
            });
        }
        Ok(())
    }

    /// The walk one step down, at `pointer`; `held` keeps the pointer of a
    /// record entered there alive for the values below it.
    fn child<'b>(&'b self, pointer: String, held: &'b mut Option<String>) -> Walk<'b> {
        let record = match self.record {
            Some(Err(1)) => {
                let r: &'b str = held.insert(pointer.clone());
                Some(Ok(r))
            }
            Some(Err(k)) => Some(Err(k - 1)),
            Some(Ok(r)) => Some(Ok(r)),
            None => None,
        };
        Walk {
            steps: &self.steps[1..],
            pointer,
            out: self.out,
            record,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(|| v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(|| v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(|| v.to_string())
    }

    // Floats, booleans and null are never keys.
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys are compared where they lie; only a followed key is copied.
        while let Some(follow) = map.next_key_seed(KeyMatch(self.steps.first()))? {
            match follow {
                Some(key) => {
                    let mut held = None;
                    let pointer = format!("{}/{}", self.pointer, pointer_escape(&key));
                    map.next_value_seed(self.child(pointer, &mut held))?
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let follow = match self.steps.first() {
                Some(Step::Index(n)) => *n == i,
                Some(Step::Any) => true,
                _ => false,
            };
            let more = if follow {
                let mut held = None;
                let pointer = format!("{}/{i}", self.pointer);
                seq.next_element_seed(self.child(pointer, &mut held))?
                    .is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Deserializes a member name into `Some(name)` when the step follows it,
/// `None` (without allocating) when it does not.
struct KeyMatch<'a>(Option<&'a Step>);

impl<'de> DeserializeSeed<'de> for KeyMatch<'_> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyMatch<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<String>, E> {
        Ok(match self.0 {
            Some(Step::Member(m)) if m == v => Some(v.to_string()),
            Some(Step::Any) => Some(v.to_string()),
            _ => None,
        })
    }
}

/// Evaluates `steps` over the document streaming from `reader`. `record`:
/// how many of the steps lead to the record (see [`Found::record`]).
pub fn extract(
    reader: impl Read,
    steps: &[Step],
    record: Option<usize>,
) -> Result<Vec<Found>, Unreadable> {
    extract_with(
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(64 * 1024, reader)),
        steps,
        record,
    )
}

/// The same over any serde_json source (a slice parses several times faster).
pub fn extract_with<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    steps: &[Step],
    record: Option<usize>,
) -> Result<Vec<Found>, Unreadable> {
    let out = RefCell::new(Vec::new());
    let root = String::new();
    Walk {
        steps,
        pointer: String::new(),
        out: &out,
        record: record.map(|depth| {
            if depth == 0 {
                Ok(root.as_str())
            } else {
                Err(depth)
            }
        }),
    }
    .deserialize(&mut de)
    .map_err(|e| match super::json_error_class(&e) {
        class if class == super::TOO_MANY => Unreadable(class),
        class => Unreadable(format!("not valid JSON ({class})")),
    })?;
    de.end()
        .map_err(|e| Unreadable(format!("not valid JSON ({})", super::json_error_class(&e))))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streamable_subset() {
        assert_eq!(
            simple_path("$.records[*].attributes.referenceId"),
            Some(vec![
                Step::Member("records".into()),
                Step::Any,
                Step::Member("attributes".into()),
                Step::Member("referenceId".into())
            ])
        );
        assert_eq!(
            simple_path("$['a b'][2]"),
            Some(vec![Step::Member("a b".into()), Step::Index(2)])
        );
        assert_eq!(simple_path("$.*"), Some(vec![Step::Any]));
        assert_eq!(simple_path("$..id"), None);
        assert_eq!(simple_path("$.items[?@.x]"), None);
        assert_eq!(simple_path("$.items[1:3]"), None);
        assert_eq!(simple_path("$.items[-1]"), None);
    }

    #[test]
    fn agrees_with_serde_json_path_on_the_samples() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/samples/payloads/json");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            panic!("samples missing at {}", dir.display());
        };
        let paths = [
            "$.records[*].attributes.referenceId",
            "$.records[*].accountId",
            "$.records[0].email",
            "$.*[*].attributes.type",
            "$.records[3]",
        ];
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            for p in paths {
                let streamed = extract(&bytes[..], &simple_path(p).unwrap(), None).unwrap();
                let whole = crate::index::extract::json_whole(
                    &bytes[..],
                    &serde_json_path::JsonPath::parse(p).unwrap(),
                    None,
                    1 << 30,
                )
                .unwrap();
                assert_eq!(streamed, whole, "{p} on {}", entry.path().display());
            }
        }
    }

    /// Under a record rule both evaluators name each value's record by the
    /// same pointer, and every value has one (the record being a proper
    /// prefix of the path, none can lie outside).
    #[test]
    fn records_agree_between_the_evaluators() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/samples/payloads/json");
        let rules = [
            ("$.records[*].attributes.referenceId", "$.records[*]"),
            ("$.records[*].accountId", "$['records'][*]"),
            ("$.*[*].attributes.type", "$.*[*]"),
            ("$.*[*].attributes.type", "$.*"),
        ];
        let mut compared = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            for (p, r) in rules {
                let depth = simple_path(r).unwrap().len();
                let streamed = extract(&bytes[..], &simple_path(p).unwrap(), Some(depth)).unwrap();
                let whole = crate::index::extract::json_whole(
                    &bytes[..],
                    &serde_json_path::JsonPath::parse(p).unwrap(),
                    Some(depth),
                    1 << 30,
                )
                .unwrap();
                assert_eq!(streamed, whole, "{p} on {}", entry.path().display());
                for f in &streamed {
                    let record = f.record.as_deref().expect("every value in a record");
                    assert!(f.location.starts_with(&format!("{record}/")), "{f:?}");
                    assert_eq!(record.matches('/').count(), depth, "{f:?}");
                }
                compared += streamed.len();
            }
        }
        assert!(compared > 300, "the samples yield values ({compared})");
        // Escaped names, and arrays in arrays.
        let doc = br#"{"a/b": [[{"id": 1}, {"id": 2}], [{"id": 3}]], "c~": [{"id": 4}]}"#;
        for (p, r) in [("$.*[*][*].id", "$.*[*]"), ("$.*[*][*].id", "$.*[*][*]")] {
            let depth = simple_path(r).unwrap().len();
            let streamed = extract(&doc[..], &simple_path(p).unwrap(), Some(depth)).unwrap();
            let whole = crate::index::extract::json_whole(
                &doc[..],
                &serde_json_path::JsonPath::parse(p).unwrap(),
                Some(depth),
                1 << 20,
            )
            .unwrap();
            assert_eq!(streamed, whole, "{p}");
        }
        let records: Vec<String> =
            extract(&doc[..], &simple_path("$.*[*][*].id").unwrap(), Some(2))
                .unwrap()
                .into_iter()
                .map(|f| f.record.unwrap())
                .collect();
        assert_eq!(records, ["/a~1b/0", "/a~1b/0", "/a~1b/1"]);
    }

    #[test]
    fn links_per_object_are_capped() {
        let doc = format!("[{}0]", "1,".repeat(super::super::MAX_LINKS));
        let err = extract(doc.as_bytes(), &simple_path("$[*]").unwrap(), None).unwrap_err();
        assert_eq!(err.0, super::super::TOO_MANY);
    }

    #[test]
    fn duplicate_members_link_each_value() {
        let found = extract(
            &br#"{"id": 1, "id": "2"}"#[..],
            &simple_path("$.id").unwrap(),
            None,
        )
        .unwrap();
        let keys: Vec<&str> = found.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, vec!["1", "2"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        // Unclosed, as in the JSONTestSuite sample: an error, not a crash.
        let doc = "[".repeat(100_000);
        let err = extract(doc.as_bytes(), &simple_path("$[0]").unwrap(), None).unwrap_err();
        assert!(err.0.contains("not valid JSON"), "{err}");
        // Closed and deep along the path: the recursion limit answers.
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let path = format!("${}", "[0]".repeat(999));
        let err = extract(deep.as_bytes(), &simple_path(&path).unwrap(), None).unwrap_err();
        assert!(err.0.contains("nested deeper"), "{err}");
        // Deep off the path: skipped without recursion, no link, no error.
        assert_eq!(
            extract(deep.as_bytes(), &simple_path("$.x").unwrap(), None).unwrap(),
            vec![]
        );
    }
}
