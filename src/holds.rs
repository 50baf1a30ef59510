//! Legal holds as people give them: the bounds and characters a target,
//! reason and author may have, the audit records of adding and lifting a
//! hold, and how stored holds are shown. Shared by the CLI and the API, so
//! both refuse and record alike; the statements live in `state`.

use std::borrow::Cow;

use crate::audit::{self, NewRecord, pseudonym::Pseudonymizer};
use crate::state::{HoldKind, StateError, StateStore};

/// A hold target (`lead:4711`, `object:KEY`, `prefix:P`), in bytes.
pub const MAX_TARGET_BYTES: usize = 1024;
/// A hold's reason, in characters.
pub const MAX_REASON_CHARS: usize = 2000;
/// A hold's author, in characters.
pub const MAX_AUTHOR_CHARS: usize = 200;

/// Why a text given for a hold is refused. The message never quotes the
/// text; the caller names the field (`--reason`, `reason`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextError {
    #[error("empty; {0}")]
    Empty(&'static str),
    #[error("{len} {unit}, more than the {max} allowed; shorten it")]
    TooLong {
        len: usize,
        max: usize,
        unit: &'static str,
    },
    #[error(
        "contains the control character U+{code:04X} at character {at}; write it on one line, without tabs or other control characters"
    )]
    Control { code: u32, at: usize },
}

/// Characters that would break a line or a terminal: Unicode's control
/// characters (Cc: NUL, tab, newline, escape, …) and the line and paragraph
/// separators.
fn is_forbidden(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn printable(text: &str) -> Result<(), TextError> {
    match text.chars().enumerate().find(|(_, c)| is_forbidden(*c)) {
        Some((at, c)) => Err(TextError::Control {
            code: c as u32,
            at: at + 1,
        }),
        None => Ok(()),
    }
}

/// A hold target as given: at most [`MAX_TARGET_BYTES`], printable.
pub fn check_target(text: &str) -> Result<(), TextError> {
    if text.len() > MAX_TARGET_BYTES {
        return Err(TextError::TooLong {
            len: text.len(),
            max: MAX_TARGET_BYTES,
            unit: "bytes",
        });
    }
    printable(text)
}

/// A hold's reason: not blank, at most [`MAX_REASON_CHARS`], printable.
pub fn check_reason(text: &str) -> Result<(), TextError> {
    check_line(
        text,
        MAX_REASON_CHARS,
        "say why (a case number, not personal data)",
    )
}

/// A hold's author: not blank, at most [`MAX_AUTHOR_CHARS`], printable.
pub fn check_author(text: &str) -> Result<(), TextError> {
    check_line(text, MAX_AUTHOR_CHARS, "say who puts or lifts the hold")
}

fn check_line(text: &str, max: usize, hint: &'static str) -> Result<(), TextError> {
    if text.trim().is_empty() {
        return Err(TextError::Empty(hint));
    }
    let len = text.chars().count();
    if len > max {
        return Err(TextError::TooLong {
            len,
            max,
            unit: "characters",
        });
    }
    printable(text)
}

/// Stored text, shown on one line: control characters and the separators
/// as escapes (`\n`, `\u{1b}`), and the backslash doubled so that an escape
/// is never mistaken for the same characters typed. Holds stored before the
/// checks above may hold anything.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_forbidden(c) || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_forbidden(c) || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A stored instant as RFC 3339 to the second (holds were once stored with
/// nanoseconds); anything unparsable is shown escaped, as it is.
pub fn show_instant(stored: &str) -> String {
    match stored.parse::<jiff::Timestamp>() {
        Ok(t) => jiff::Timestamp::from_second(t.as_second())
            .unwrap_or(t)
            .to_string(),
        Err(_) => escape(stored).into_owned(),
    }
}

/// A hold's target as typed (`lead:018`, `object:KEY`, `prefix:P/`) read
/// into its kind, its canonical stored text and (entities) its typed key;
/// `Err` says why it names nothing.
pub fn parse_target(
    config: &crate::config::Config,
    kinds: &crate::crm::refs::KeyKinds,
    target: &str,
) -> Result<(HoldKind, String, Option<crate::model::EntityKey>), String> {
    if let Some(k) = target.strip_prefix("object:") {
        crate::store::validate_key(k).map_err(|e| e.to_string())?;
        return Ok((HoldKind::Object, k.to_string(), None));
    }
    if let Some(p) = target.strip_prefix("prefix:") {
        if p.is_empty() {
            return Err("an empty prefix would hold every object; name one".into());
        }
        return Ok((HoldKind::Prefix, p.to_string(), None));
    }
    let (r, key) = kinds
        .parse(config, target)
        .map_err(|m| format!("{m} (a hold names an entity ref, object:KEY or prefix:PATH/)"))?;
    Ok((HoldKind::Entity, r.to_string(), Some(key)))
}

/// The canonical text of a stored target: `lead:4711`, `object:KEY`,
/// `prefix:P`.
pub fn canonical(kind: HoldKind, target: &str) -> String {
    match kind {
        HoldKind::Entity => target.to_string(),
        HoldKind::Object => format!("object:{target}"),
        HoldKind::Prefix => format!("prefix:{target}"),
    }
}

fn record(
    pseudo: &Pseudonymizer,
    action: &'static str,
    kind: HoldKind,
    target: &str,
    reason: Option<&str>,
    author: &str,
) -> NewRecord {
    let entity_type = match kind {
        HoldKind::Entity => target.split_once(':').map(|(t, _)| t.to_string()),
        HoldKind::Object | HoldKind::Prefix => None,
    };
    NewRecord {
        plan_id: String::new(),
        policy: None,
        basis: None,
        action,
        entity_type,
        pseudonym: pseudo.target(&canonical(kind, target)),
        bytes: None,
        author: Some(author.to_string()),
        reason_chars: reason.map(|r| r.chars().count() as i64),
        detail: None,
    }
}

/// Puts a hold on and, when it is new, appends its `hold-add` record in the
/// same transaction; false when the target was on hold already.
pub async fn add(
    state: &StateStore,
    pseudo: &Pseudonymizer,
    kind: HoldKind,
    target: &str,
    reason: &str,
    author: &str,
) -> Result<bool, StateError> {
    let r = record(pseudo, audit::HOLD_ADD, kind, target, Some(reason), author);
    state
        .add_hold_audited(kind, target, reason, author, Some(r))
        .await
}

/// Lifts a hold and appends its `hold-rm` record in the same transaction;
/// false when the target was not on hold.
pub async fn remove(
    state: &StateStore,
    pseudo: &Pseudonymizer,
    kind: HoldKind,
    target: &str,
    author: &str,
) -> Result<bool, StateError> {
    let r = record(pseudo, audit::HOLD_RM, kind, target, None, author);
    state.remove_hold_audited(kind, target, Some(r)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_wherever_they_are() {
        for evil in [
            "lead:1\nINJECT",
            "lead:\0",
            "a\tb",
            "x\u{1b}[2J",
            "a\u{2028}b",
            "a\u{85}",
        ] {
            assert!(
                matches!(check_target(evil), Err(TextError::Control { .. })),
                "{evil:?}"
            );
            assert!(
                matches!(check_reason(evil), Err(TextError::Control { .. })),
                "{evil:?}"
            );
            assert!(
                matches!(check_author(evil), Err(TextError::Control { .. })),
                "{evil:?}"
            );
        }
        assert_eq!(
            check_reason("LH-1\n"),
            Err(TextError::Control { code: 10, at: 5 })
        );
        assert_eq!(check_reason("LH-2026-001 (Müller GmbH)"), Ok(()));
    }

    #[test]
    fn lengths_are_bounded_and_blank_is_refused() {
        assert!(check_target(&"a".repeat(MAX_TARGET_BYTES)).is_ok());
        // Bytes for targets: 513 two-byte characters are 1026 bytes.
        assert!(matches!(
            check_target(&"ä".repeat(513)),
            Err(TextError::TooLong { len: 1026, .. })
        ));
        assert!(check_reason(&"ä".repeat(MAX_REASON_CHARS)).is_ok());
        assert!(matches!(
            check_reason(&"a".repeat(MAX_REASON_CHARS + 1)),
            Err(TextError::TooLong { .. })
        ));
        assert!(matches!(
            check_author(&"a".repeat(MAX_AUTHOR_CHARS + 1)),
            Err(TextError::TooLong { .. })
        ));
        assert!(matches!(check_reason("  "), Err(TextError::Empty(_))));
        assert!(matches!(check_author(""), Err(TextError::Empty(_))));
    }

    #[test]
    fn stored_text_prints_on_one_line_and_unambiguously() {
        assert_eq!(escape("lead:1\nINJECT"), "lead:1\\nINJECT");
        assert_eq!(escape("lead:1\\nINJECT"), "lead:1\\\\nINJECT");
        assert_eq!(escape("a\u{1b}b"), "a\\u{1b}b");
        assert!(matches!(escape("lead:4711"), Cow::Borrowed(_)));
    }

    #[test]
    fn instants_show_to_the_second() {
        assert_eq!(
            show_instant("2026-03-01T10:20:30.123456789Z"),
            "2026-03-01T10:20:30Z"
        );
        assert_eq!(show_instant("bad\nvalue"), "bad\\nvalue");
    }
}
