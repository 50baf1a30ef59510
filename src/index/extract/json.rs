//! Whole-document JSONPath evaluation, for paths that cannot stream (the
//! document in memory, within a byte budget, refused when a member name
//! repeats), and [`json`], which picks the streaming evaluator
//! (`jsonstream`) when the rule's path allows it.

use std::io::{BufReader, Read};

use super::{Found, LineGuard, Unreadable, check_room, json_error_class};

/// Stops reading past the budget, so that a hostile file costs bounded time.
struct Budget<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(
                "larger than technical.max_content_bytes",
            ));
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn budget<R: Read>(r: R, max: u64) -> Budget<R> {
    Budget {
        inner: r,
        left: max.saturating_add(1),
    }
}

/// Whole-document evaluation, for paths that cannot stream: the document is
/// parsed into memory (at most `max` bytes), and rejected when a member name
/// repeats (which of the values would the path mean?). `record`: how many
/// of the path's steps lead to the record (see [`Found::record`]).
pub fn json_whole(
    reader: impl Read,
    path: &serde_json_path::JsonPath,
    record: Option<usize>,
    max: u64,
) -> Result<Vec<Found>, Unreadable> {
    json_whole_with(
        serde_json::Deserializer::from_reader(BufReader::new(budget(reader, max))),
        path,
        record,
    )
}

/// The pointer of the node `depth` steps down `pointer` (its first `depth`
/// reference tokens; a token holds no `/`, which escapes as `~1`).
pub(super) fn pointer_prefix(pointer: &str, depth: usize) -> Option<&str> {
    if depth == 0 {
        return Some("");
    }
    let mut slashes = pointer.match_indices('/').map(|(at, _)| at);
    if slashes.next() != Some(0) {
        return None;
    }
    match slashes.nth(depth - 1) {
        Some(at) => Some(&pointer[..at]),
        // Exactly `depth` tokens: the pointer is the node's own.
        None if pointer.split('/').count() == depth + 1 => Some(pointer),
        None => None,
    }
}

pub(super) fn json_whole_with<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    path: &serde_json_path::JsonPath,
    record: Option<usize>,
) -> Result<Vec<Found>, Unreadable> {
    let value: serde_json::Value = <Strict as serde::Deserialize>::deserialize(&mut de)
        .map(|s| s.0)
        .map_err(|e| Unreadable(format!("not valid JSON ({})", json_error_class(&e))))?;
    de.end()
        .map_err(|e| Unreadable(format!("not valid JSON ({})", json_error_class(&e))))?;
    let mut out = Vec::new();
    for node in path.query_located(&value).all() {
        let key = match node.node() {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => continue,
        };
        check_room(&out)?;
        let location = node.location().to_json_pointer();
        let record = match record {
            None => None,
            // The record is a proper prefix of the path: every value the
            // path selects lies below one.
            Some(depth) => Some(
                pointer_prefix(&location, depth)
                    .ok_or_else(|| Unreadable("a value outside any record".into()))?
                    .to_string(),
            ),
        };
        out.push(Found {
            key,
            location,
            record,
        });
    }
    Ok(out)
}

/// Either evaluation, as the rule allows.
pub fn json(
    reader: impl Read,
    path: &serde_json_path::JsonPath,
    steps: Option<&[crate::config::rules::Step]>,
    record: Option<usize>,
    max_whole: u64,
    max_line: u64,
) -> Result<Vec<Found>, Unreadable> {
    match steps {
        Some(steps) => {
            super::jsonstream::extract(LineGuard::new(reader, max_line, b'\n', b','), steps, record)
        }
        None => json_whole(reader, path, record, max_whole),
    }
}

/// Builds a `serde_json::Value`, refusing repeated member names.
struct Strict(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
                Ok(Strict(
                    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into),
                ))
            }
            fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_string<E>(self, v: String) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict(serde_json::Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Strict, A::Error> {
                let mut v = Vec::new();
                while let Some(Strict(x)) = seq.next_element()? {
                    v.push(x);
                }
                Ok(Strict(v.into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Strict, A::Error> {
                let mut m = serde_json::Map::new();
                while let Some(k) = map.next_key::<String>()? {
                    let Strict(v) = map.next_value()?;
                    if m.insert(k, v).is_some() {
                        return Err(serde::de::Error::custom("duplicate member name"));
                    }
                }
                Ok(Strict(m.into()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_with_pointers_and_big_ids() {
        let p = serde_json_path::JsonPath::parse("$.leads[*].id").unwrap();
        let doc = br#"{"leads":[{"id":9007199254740993},{"id":"A-7"},{"id":1.5}]}"#;
        let found = json_whole(&doc[..], &p, None, 1 << 20).unwrap();
        assert_eq!(
            found,
            vec![
                Found {
                    key: "9007199254740993".into(),
                    location: "/leads/0/id".into(),
                    record: None
                },
                Found {
                    key: "A-7".into(),
                    location: "/leads/1/id".into(),
                    record: None
                },
            ]
        );
    }

    #[test]
    fn records_of_a_path_beyond_the_streamable_subset() {
        // A filter below the record: the whole-document evaluator names the
        // record by the first steps of each value's location.
        let kind = crate::config::ContentKind::json(
            "$.records[*].leads[?@.active].id",
            Some("$.records[*]"),
        )
        .unwrap();
        let crate::config::ContentKind::Json {
            path,
            steps: None,
            record: Some(record),
        } = &kind
        else {
            panic!("a whole-document rule with a record");
        };
        let doc = br#"{"records": [{"leads": [{"id": 1, "active": true}, {"id": 2}]}, {"leads": []}, {"leads": [{"id": 3, "active": 1}]}]}"#;
        let found = json_whole(&doc[..], path, Some(record.steps.len()), 1 << 20).unwrap();
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|f| (f.key.as_str(), f.record.as_deref().unwrap()))
            .collect();
        assert_eq!(got, [("1", "/records/0"), ("3", "/records/2")]);
        assert_eq!(
            pointer_prefix("/records/0/leads/1/id", 2),
            Some("/records/0")
        );
        assert_eq!(pointer_prefix("/records/0", 2), Some("/records/0"));
        assert_eq!(pointer_prefix("/records", 2), None);
        assert_eq!(pointer_prefix("/a~1b/0/c", 1), Some("/a~1b"));
    }

    #[test]
    fn json_errors_do_not_quote_content() {
        let p = serde_json_path::JsonPath::parse("$.id").unwrap();
        let err =
            json_whole(&b"{\"email\": \"jane@example.com\""[..], &p, None, 1 << 20).unwrap_err();
        assert!(!err.0.contains("jane"), "{err}");
        let err = json_whole(&b"{\"id\": 1} trailing"[..], &p, None, 1 << 20).unwrap_err();
        assert!(err.0.contains("not valid JSON"));
        let err = json_whole(&br#"{"id": "0123456789"}"#[..], &p, None, 8).unwrap_err();
        assert!(err.0.contains("max_content_bytes"), "{err}");
    }
}
