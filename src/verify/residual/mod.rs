//! The residual scanner: finds the identifiers (e-mail addresses, phone
//! numbers) of erased entities in any byte stream, knowing only their keyed
//! hashes. It owns the one definition of a normalised identifier
//! ([`normalise`], which the apply also uses on the CRM's values), the keyed
//! hash of one ([`Fingerprint`]: HMAC-SHA256(audit key, kind ‖ 0x00 ‖
//! normalised value)) and the search ([`Scanner`]). Pure: no database, no
//! store; verify hands it readers.
//!
//! The values themselves are never known here. The scanner picks *candidate*
//! identifiers out of the bytes, normalises each as [`normalise`] would,
//! hashes it and looks the hash up. Streaming with a fixed buffer: memory is
//! bounded whatever the input (gigabyte lines, no newline at all, binary).
//! Phone numbers are searched only when the set holds phone hashes, e-mail
//! addresses only when it holds e-mail hashes.
//!
//! This file holds the definitions (kinds, normalising, the byte classes,
//! the keyed hash); `scanner.rs` the streaming scan (buffer, cache of recent
//! candidates, hash look-up), `email.rs` the addresses around each spelling
//! of `@`, `phone.rs` the phone-number state machine, `tests.rs` every
//! spelling below, found and not found.
//!
//! # What is found
//!
//! E-mail addresses (normalised: trimmed, lower-cased; a local part of at
//! most 64 bytes of letters, digits and ``.!#$%&'*+-/=?^_`{|}~`` not starting
//! with `.` or one of ``!#$%&'*/=?^`{|}~``, then `@`, then a domain of at most
//! 255 bytes of letters, digits, `.` and `-` that holds a `.` and neither
//! starts nor ends with `.` or `-`; non-ASCII letters and digits count as
//! letters):
//!
//! - plain, in any letter case (`Jane.Doe@Example.COM`), however delimited:
//!   spaces, quotes (a CSV field's quotes, `""` doubled or not, are not part
//!   of the address), `<>`, `()`, `[]`, `,`, `;`, `:` (`mailto:`), a
//!   sentence's final `.`, typographic quotes, any non-letter;
//! - after `=`, `/`, `'`, `?` and the other characters an address does not
//!   start with (`?email=jane@…`, `/users/jane@…`, `'jane@…'`);
//! - in JSON strings, also after an escape (`\njane@…`, `\u00a0jane@…`,
//!   `https:\/\/…\/jane@…`) and with `@` written `\u0040`;
//! - XML/HTML-escaped `@`: `&#64;`, `&#x40;` (any case, leading zeros) and
//!   `&commat;`;
//! - percent-encoded `@` (`%40`) in URLs, after `%XX` (`%3Djane%40…`).
//!
//! Phone numbers (normalised: the digits alone, 7 to 20 of them): the
//! digits, in groups separated by at most three of space, `-`, `.`, `/`,
//! `(`, `)`, `+`, no-break space (`+49 (0)30 123-45 67`, `030/1234567`,
//! `(030) 1234567`, `+49.30.1234567`), in any format (JSON, CSV, XML, text).
//! Each run of consecutive groups is tried, so a number beside other
//! numbers is still found (`2024-03-12 10:00:00.5 0301234567`,
//! `030 1234567 / 030 7654321`).
//!
//! # What is not found
//!
//! - A phone number written with another prefix than the CRM holds (`+49 30
//!   1234567` in the file, `030 1234567` in the CRM, or with and without a
//!   trunk `(0)`), or without the extension the CRM holds: the digits
//!   differ. (The other way round it is found: `030 1234567-89` holds
//!   `030 1234567`.)
//! - A phone number glued to other digits (`90301234567`), or whose groups
//!   are separated by anything else (a tab, `%20`, four spaces, a letter);
//!   one with letters (`0800-FLOWERS`) or non-ASCII digits.
//! - An address glued to a preceding letter, digit, `.`, `-`, `_` or `+`
//!   (`Mr.jane@…` is the address `mr.jane@…`), or with a sub-address the CRM
//!   does not hold (`jane+news@…` is not `jane@…`).
//! - An address split across lines (a soft line wrap, quoted-printable
//!   `=\r\n`), with other characters escaped (`o&apos;brien@…`,
//!   `jane%2Bnews%40…`, `\u006aane@…`, `\/` inside it, `\\u0040`), or spelt
//!   out (`jane at example dot com`, `[at]`).
//! - A domain in another form (punycode `xn--…` against Unicode), or
//!   non-ASCII letters in another Unicode normal form; a quoted local part
//!   (`"jane doe"@…`); an address without a `.` in its domain.
//! - Anything encoded or compressed: base64 (MIME attachments, data URLs,
//!   JWTs), gzip and zip (so also .docx, .xlsx, .odt), PDF streams,
//!   UTF-16 text, encrypted files.
//!
//! # Speed
//!
//! Bytes are skipped 32 at a time until a digit (SWAR, for phones) and by
//! `memchr` to the next `@`, `&`, `%` or `\u0040` (for e-mails); the cost
//! is the HMAC of each candidate (two SHA-256 compressions). Candidates
//! repeat (dates, times, a sender's address), so a small direct-mapped
//! cache in memory remembers the answer for recent ones: a date seen a
//! million times is hashed once. Nothing is stored beyond the hashes the
//! apply wrote. What stays costly is what is dense in distinct candidates:
//! a list of addresses (one HMAC each), text tables of numbers separated by
//! spaces (every run of groups of 7 to 20 digits); there
//! [`Scanner::only_lengths`] saves most of the phone numbers' HMACs, if the
//! caller knows the lengths of the values.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sensitive::Sensitive;

mod email;
mod phone;
mod scanner;
#[cfg(test)]
mod tests;

pub use scanner::{Erased, ScanStats, Scanner};

/// Fewer digits than this are not a phone number (nor searched: dates,
/// amounts and ids would all be candidates).
pub const PHONE_MIN_DIGITS: usize = 7;
/// More digits than this are not one phone number (E.164 allows 15, plus
/// `00`, a trunk `0` and a short extension). Bounds the scanner's work per
/// digit group.
pub const PHONE_MAX_DIGITS: usize = 20;
/// RFC 5321's limit of a local part.
pub const LOCAL_MAX: usize = 64;
/// RFC 5321's limit of a domain.
pub const DOMAIN_MAX: usize = 255;

/// What an identifier column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentifierKind {
    /// An e-mail address: trimmed, lower-cased.
    Email,
    /// A phone number: its digits.
    Phone,
}

impl IdentifierKind {
    pub const ALL: [IdentifierKind; 2] = [IdentifierKind::Email, IdentifierKind::Phone];

    /// The name in configuration, in the state store and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
        }
    }

    fn index(self) -> usize {
        match self {
            IdentifierKind::Email => 0,
            IdentifierKind::Phone => 1,
        }
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown identifier kind `{0}` (expected email or phone)")]
pub struct UnknownKind(pub String);

impl FromStr for IdentifierKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdentifierKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// The normalised form of an identifier, the one that is hashed; `None`
/// when `raw` is not an identifier of that kind that the scanner could find
/// (see the module doc for the exact shape), so that there is nothing to
/// search for and the caller should say so. E-mail: trimmed and
/// lower-cased. Phone: its ASCII digits, 7 to 20 of them.
pub fn normalise(kind: IdentifierKind, raw: &str) -> Option<String> {
    match kind {
        IdentifierKind::Email => {
            let value = raw.trim();
            let (local, domain) = value.split_once('@')?;
            (local_ok(local.as_bytes()) && domain_ok(domain.as_bytes())).then(|| fold_case(value))
        }
        IdentifierKind::Phone => {
            let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
            (PHONE_MIN_DIGITS..=PHONE_MAX_DIGITS)
                .contains(&digits.len())
                .then_some(digits)
        }
    }
}

fn fold_case(value: &str) -> String {
    if value.is_ascii() {
        value.to_ascii_lowercase()
    } else {
        value.to_lowercase()
    }
}

// Byte classes. Bytes >= 0x80 are let into e-mail runs and judged as UTF-8
// afterwards (a non-ASCII letter or digit belongs to an address; anything
// else, or invalid UTF-8, is a boundary).
const DIGIT: u8 = 1;
/// Separates the digit groups of a phone number.
const PHONE_SEP: u8 = 2;
const LOCAL: u8 = 4;
const DOMAIN: u8 = 8;
/// A local-part character no address starts with: a candidate also starts
/// right after it (`email=jane@…`, `'jane@…'`).
const SPLIT: u8 = 16;

const fn byte_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut k = 0;
        if b.is_ascii_digit() {
            k |= DIGIT | LOCAL | DOMAIN;
        }
        if b.is_ascii_alphabetic() || b >= 0x80 {
            k |= LOCAL | DOMAIN;
        }
        match b {
            b'.' | b'-' => k |= LOCAL | DOMAIN,
            b'_' | b'+' => k |= LOCAL,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'/' | b'=' | b'?' | b'^' | b'`'
            | b'{' | b'|' | b'}' | b'~' => k |= LOCAL | SPLIT,
            _ => {}
        }
        // 0xC2 0xA0 is U+00A0 (no-break space) in UTF-8; 0xA0 alone is it
        // in Latin-1.
        match b {
            b' ' | b'-' | b'.' | b'/' | b'(' | b')' | b'+' | 0xA0 | 0xC2 => k |= PHONE_SEP,
            _ => {}
        }
        t[i] = k;
        i += 1;
    }
    t
}

static CLASS: [u8; 256] = byte_classes();

#[inline]
fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

/// Whether these bytes can be the local part of an address the scanner
/// finds.
fn local_ok(local: &[u8]) -> bool {
    let Some(&first) = local.first() else {
        return false;
    };
    local.len() <= LOCAL_MAX && first != b'.' && class(first) & SPLIT == 0 && all_of(local, LOCAL)
}

/// Whether these bytes can be the domain of an address the scanner finds.
fn domain_ok(domain: &[u8]) -> bool {
    let edge = |b: Option<&u8>| matches!(b, None | Some(b'.' | b'-'));
    domain.len() <= DOMAIN_MAX
        && !edge(domain.first())
        && !edge(domain.last())
        && domain.contains(&b'.')
        && all_of(domain, DOMAIN)
}

/// Every ASCII byte is of class `k`, and the rest is UTF-8 for letters and
/// digits.
fn all_of(bytes: &[u8], k: u8) -> bool {
    // Bytes >= 0x80 are of every e-mail class: checked below.
    if !bytes.iter().all(|&b| class(b) & k != 0) {
        return false;
    }
    bytes.is_ascii()
        || std::str::from_utf8(bytes).is_ok_and(|s| {
            s.chars().all(|c| {
                if c.is_ascii() {
                    class(c as u8) & k != 0
                } else {
                    c.is_alphanumeric()
                }
            })
        })
}

/// The keyed hash of normalised identifiers: HMAC-SHA256(audit key, kind ‖
/// 0x00 ‖ value). The keyed states are computed once: the hmac crate's
/// (cloned per value), and for a message that fits one SHA-256 block
/// (every phone number, most addresses) the two compression states
/// themselves, so that a value costs two compressions and no more (the
/// scanner hashes every candidate). Tests hold both to the same answers.
#[derive(Clone)]
pub struct Fingerprint {
    mac: Hmac<Sha256>,
    /// SHA-256 states after the key block xor ipad, and xor opad.
    inner: [u32; 8],
    outer: [u32; 8],
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

impl Fingerprint {
    pub fn new(audit_key: &Sensitive<Vec<u8>>) -> Self {
        let key = audit_key.expose();
        // HMAC accepts keys of any length, so this cannot fail.
        let mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        // RFC 2104: a key longer than a block is hashed first, then padded
        // with zeros to a block.
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let keyed = |pad: u8| {
            let mut state = SHA256_IV;
            sha2::block_api::compress256(&mut state, &[block.map(|b| b ^ pad)]);
            state
        };
        Fingerprint {
            mac,
            inner: keyed(0x36),
            outer: keyed(0x5c),
        }
    }

    /// The hash of a value [`normalise`] returned.
    pub fn hash(&self, kind: IdentifierKind, normalised: &str) -> [u8; 32] {
        self.hash_bytes(kind, normalised.as_bytes())
    }

    /// [`Fingerprint::hash`] in hex, as the state store keeps it.
    pub fn hex(&self, kind: IdentifierKind, normalised: &str) -> String {
        hex::encode(self.hash(kind, normalised))
    }

    fn hash_bytes(&self, kind: IdentifierKind, normalised: &[u8]) -> [u8; 32] {
        let prefix = kind.as_str().as_bytes();
        let len = prefix.len() + 1 + normalised.len();
        if len > 55 {
            return self.hash_by_crate(kind, normalised);
        }
        // One block: the message, 0x80, zeros, the bit length of key block
        // and message (big-endian).
        let mut block = [0u8; 64];
        block[..prefix.len()].copy_from_slice(prefix);
        block[prefix.len() + 1..len].copy_from_slice(normalised);
        block[len] = 0x80;
        block[56..].copy_from_slice(&((64 + len as u64) * 8).to_be_bytes());
        let mut inner = self.inner;
        sha2::block_api::compress256(&mut inner, &[block]);
        let mut block = [0u8; 64];
        for (out, word) in block.chunks_exact_mut(4).zip(inner) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((64 + 32u64) * 8).to_be_bytes());
        let mut outer = self.outer;
        sha2::block_api::compress256(&mut outer, &[block]);
        let mut digest = [0u8; 32];
        for (out, word) in digest.chunks_exact_mut(4).zip(outer) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }

    fn hash_by_crate(&self, kind: IdentifierKind, normalised: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(kind.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(normalised);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprint([redacted])")
    }
}

/// A stored hash in hex (as in `erased_identifiers.hash`) back to its bytes.
pub fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}
