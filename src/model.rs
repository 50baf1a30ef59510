//! The domain's vocabulary shared by every stage: entity refs, entity keys as
//! the CRM stores them, and instants.
//!
//! An entity ref is `type:key` everywhere (CLI, API, reports). Keys are kept
//! typed (`EntityKey::Int` / `EntityKey::Text`) so that deletes bind the value
//! the way the CRM column stores it; their canonical text form is the join key
//! between the CRM, the link index and the plan.

use std::fmt;

/// A key as read from the CRM's key column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKey {
    Int(i64),
    Text(String),
}

impl EntityKey {
    /// The canonical text form (the join key with link rules and user input).
    pub fn canonical(&self) -> String {
        match self {
            EntityKey::Int(i) => i.to_string(),
            EntityKey::Text(s) => s.clone(),
        }
    }

    /// Rebuilds a key from its stored form: `kind` is `i` or `t`.
    pub fn from_stored(kind: &str, text: &str) -> Option<EntityKey> {
        match kind {
            "i" => text.parse().ok().map(EntityKey::Int),
            "t" => Some(EntityKey::Text(text.to_string())),
            _ => None,
        }
    }

    pub fn stored_kind(&self) -> &'static str {
        match self {
            EntityKey::Int(_) => "i",
            EntityKey::Text(_) => "t",
        }
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityKey::Int(i) => write!(f, "{i}"),
            EntityKey::Text(s) => f.write_str(s),
        }
    }
}

/// A UUID in the text PostgreSQL and MariaDB print for it (lower case,
/// hyphens at 8-4-4-4-12), from a spelling a user may type: either case,
/// with or without those hyphens, in braces or not. `None` when `text` is
/// no UUID. The printed text is what a UUID key is everywhere in lethe
/// (plans, holds, links), so a key typed in another spelling names the
/// same row.
pub fn canonical_uuid(text: &str) -> Option<String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let b = inner.as_bytes();
    let digits: Vec<u8> = match b.len() {
        36 if [8, 13, 18, 23].iter().all(|&i| b[i] == b'-') => b
            .iter()
            .enumerate()
            .filter(|(i, _)| ![8, 13, 18, 23].contains(i))
            .map(|(_, c)| *c)
            .collect(),
        32 => b.to_vec(),
        _ => return None,
    };
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, c) in digits.iter().enumerate() {
        if [8, 12, 16, 20].contains(&i) {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase() as char);
    }
    Some(out)
}

/// The printed text of a UUID spelled otherwise (capitals, braces, no
/// hyphens), as a payload file may spell the key of the row it names;
/// `None` when `key` is no UUID or is spelled as printed already. A link
/// is matched by its key as written first, and by this spelling only when
/// that finds nothing: a text key column may hold capitals of its own.
pub fn uuid_respelled(key: &str) -> Option<String> {
    canonical_uuid(key).filter(|c| c != key)
}

/// The other spellings of a printed UUID a payload may use: capitals,
/// braces, no hyphens, and their mixes (seven). Empty when `printed` is
/// no UUID as printed. Mixed case within one UUID is not among them.
pub fn uuid_spellings(printed: &str) -> Vec<String> {
    if !is_printed_uuid(printed) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(7);
    for upper in [false, true] {
        for hyphens in [true, false] {
            let mut core: String = if hyphens {
                printed.to_string()
            } else {
                printed.replace('-', "")
            };
            if upper {
                core = core.to_ascii_uppercase();
            }
            for braces in [false, true] {
                let s = if braces {
                    format!("{{{core}}}")
                } else {
                    core.clone()
                };
                if s != printed {
                    out.push(s);
                }
            }
        }
    }
    out
}

/// Whether `text` is a UUID as the database prints it (and so can equal
/// a UUID column's text).
pub fn is_printed_uuid(text: &str) -> bool {
    canonical_uuid(text).is_some_and(|c| c == text)
}

/// `type:key`, the entity ref syntax of the contract.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    pub entity_type: String,
    pub key: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{input}` is not an entity ref: write it as type:key, for example lead:4711")]
pub struct RefSyntaxError {
    pub input: String,
}

impl EntityRef {
    pub fn new(entity_type: impl Into<String>, key: impl Into<String>) -> Self {
        EntityRef {
            entity_type: entity_type.into(),
            key: key.into(),
        }
    }

    pub fn parse(input: &str) -> Result<EntityRef, RefSyntaxError> {
        match input.split_once(':') {
            Some((t, k)) if !t.is_empty() && !k.is_empty() && !t.contains(char::is_whitespace) => {
                Ok(EntityRef::new(t, k))
            }
            _ => Err(RefSyntaxError {
                input: input.to_string(),
            }),
        }
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.entity_type, self.key)
    }
}

/// Seconds since the Unix epoch, UTC. All clocks are normalised to this.
pub type Instant = i64;

/// Parses `--as-of`: an RFC 3339 instant or a date (midnight UTC).
pub fn parse_as_of(input: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(ts) = input.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    if let Ok(date) = input.parse::<jiff::civil::Date>() {
        return date
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|_| {
                format!(
                    "`{input}` is out of range: an instant must lie between {} and {}",
                    jiff::Timestamp::MIN.strftime("%Y-%m-%d"),
                    jiff::Timestamp::MAX.strftime("%Y-%m-%d")
                )
            });
    }
    Err(format!(
        "`{input}` is neither an RFC 3339 instant (2026-06-30T00:00:00Z) nor a date (2026-06-30)"
    ))
}

/// Reads a clock value stored as text: RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]`
/// (taken as UTC), or a bare date (midnight UTC).
pub fn parse_clock_text(text: &str) -> Option<Instant> {
    let t = text.trim();
    // Epoch seconds (or milliseconds) stored as numbers, cast to text.
    let body = t.strip_prefix('-').unwrap_or(t);
    if !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && body.bytes().any(|b| b.is_ascii_digit())
    {
        let n: f64 = t.parse().ok()?;
        if !n.is_finite() {
            return None;
        }
        return Some(if n.abs() > 1e11 {
            (n / 1000.0) as i64
        } else {
            n as i64
        });
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Some(ts.as_second());
    }
    if let Ok(dt) = t.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp().as_second());
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>() {
        return d
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp().as_second());
    }
    None
}

/// Formats an instant as RFC 3339 UTC.
pub fn format_instant(at: Instant) -> String {
    jiff::Timestamp::from_second(at)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse_type_and_key() {
        assert_eq!(
            EntityRef::parse("lead:4711").unwrap(),
            EntityRef::new("lead", "4711")
        );
        // keys may themselves contain colons (URNs, composite keys)
        assert_eq!(EntityRef::parse("quote:a:b").unwrap().key, "a:b");
        assert!(EntityRef::parse("lead").is_err());
        assert!(EntityRef::parse(":1").is_err());
        assert!(EntityRef::parse("lead:").is_err());
    }

    #[test]
    fn uuids_in_the_text_the_database_prints() {
        let printed = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for typed in [
            printed,
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert_eq!(canonical_uuid(typed).as_deref(), Some(printed), "{typed}");
        }
        assert!(is_printed_uuid(printed));
        assert!(!is_printed_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"));
        for bad in [
            "",
            "18",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc999-c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1é",
        ] {
            assert_eq!(canonical_uuid(bad), None, "{bad}");
        }
        // The other spellings: seven, distinct, each read back as printed.
        let spellings = uuid_spellings(printed);
        assert_eq!(spellings.len(), 7);
        let distinct: std::collections::BTreeSet<&String> = spellings.iter().collect();
        assert_eq!(distinct.len(), 7);
        for s in &spellings {
            assert_ne!(s, printed);
            assert_eq!(canonical_uuid(s).as_deref(), Some(printed), "{s}");
        }
        assert!(spellings.contains(&"{A0EEBC999C0B4EF8BB6D6BB9BD380A11}".to_string()));
        assert!(uuid_spellings("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11").is_empty());
        assert!(uuid_spellings("18").is_empty());
    }

    #[test]
    fn as_of_accepts_instants_and_dates() {
        assert_eq!(
            parse_as_of("2026-06-30").unwrap().to_string(),
            "2026-06-30T00:00:00Z"
        );
        assert_eq!(
            parse_as_of("2026-06-30T12:00:00+02:00")
                .unwrap()
                .to_string(),
            "2026-06-30T10:00:00Z"
        );
        assert!(parse_as_of("yesterday").is_err());
        // Regression: said "neither an RFC 3339 instant nor a date".
        let e = parse_as_of("9999-12-31").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn clock_text_formats() {
        let d = parse_clock_text("2024-01-31").unwrap();
        assert_eq!(format_instant(d), "2024-01-31T00:00:00Z");
        let dt = parse_clock_text("2024-01-31 10:00:00").unwrap();
        assert_eq!(dt - d, 36_000);
        assert_eq!(
            parse_clock_text("2024-01-31T10:00:00Z"),
            Some(dt),
            "RFC 3339 and SQL datetime agree"
        );
        assert_eq!(parse_clock_text("not a date"), None);
    }
}

#[cfg(test)]
mod server_formats {
    use super::*;

    #[test]
    fn clocks_as_database_servers_print_them() {
        let want = parse_clock_text("2024-01-31T10:00:00Z").unwrap();
        for text in [
            "2024-01-31 10:00:00+00",     // PostgreSQL timestamptz::text
            "2024-01-31 11:00:00+01",     // … in another session time zone
            "2024-01-31 10:00:00",        // timestamp / MySQL DATETIME
            "2024-01-31 10:00:00.000000", // with fractions
            "1706695200",                 // epoch seconds
            "1706695200000",              // epoch milliseconds
        ] {
            assert_eq!(parse_clock_text(text), Some(want), "{text}");
        }
        assert_eq!(parse_clock_text("2024-01-31").unwrap(), want - 36_000);
        assert_eq!(
            parse_clock_text("0000-00-00 00:00:00"),
            None,
            "MySQL zero date"
        );
    }
}
