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

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::str::FromStr;
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use memchr::memmem;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sensitive::Sensitive;

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

/// What a scan read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScanStats {
    /// Bytes read from the stream.
    pub bytes: u64,
    /// Normalised candidates looked up.
    pub candidates: u64,
    /// Of those, how many were hashed (the others were answered by the
    /// cache of recent candidates).
    pub hashed: u64,
}

impl std::ops::AddAssign for ScanStats {
    fn add_assign(&mut self, o: ScanStats) {
        self.bytes += o.bytes;
        self.candidates += o.candidates;
        self.hashed += o.hashed;
    }
}

/// Read buffer of one scan.
const BUFFER: usize = 64 * 1024;
/// How far left of an `@` the local part is looked for: the longest local
/// part, and a JSON escape (`\u00a0`) before it.
const LOCAL_SCAN: usize = LOCAL_MAX + 8;
/// Bytes kept before the next unscanned one when the buffer is refilled.
const BACK: usize = LOCAL_SCAN + 8;
/// Bytes an anchor needs after it: the longest `@` (`&#x0000040;`), the
/// longest domain with trailing dots, one byte to end it.
const AHEAD: usize = 16 + DOMAIN_MAX + 16 + 1;
/// Remembered candidates (direct-mapped; a power of two).
const CACHE_SLOTS: usize = 4096;
const MISS: u32 = u32::MAX;

/// Finds the identifiers of erased entities, from their keyed hashes.
/// `Sync`: one scanner serves any number of threads, each scan with its
/// own buffer (kept for the next scan).
pub struct Scanner {
    fingerprint: Fingerprint,
    /// Hash → index into `entities`.
    table: HashMap<[u8; 32], u32, BuildHasherDefault<DigestHasher>>,
    /// Bit `i` is set when a hash in `table` begins with the bits of `i`:
    /// a filter small enough to stay in cache (at most 1/16 full), so that
    /// most candidates' hashes, which are not in the set, cost no look-up
    /// in a table of 100k entries that does not.
    prefix_bits: Box<[u64]>,
    prefix_shift: u32,
    entities: Vec<Box<[u32]>>,
    emails: bool,
    phones: bool,
    /// Per kind (email, phone), bit `n`: a value of `n` bytes may be in
    /// the set.
    lengths: [Lengths; 2],
    buffer: usize,
    json_at: memmem::Finder<'static>,
    spare: Mutex<Vec<Scratch>>,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("hashes", &self.table.len())
            .field("emails", &self.emails)
            .field("phones", &self.phones)
            .finish_non_exhaustive()
    }
}

impl Scanner {
    /// A scanner for these erased identifiers: (kind, hash, entity index).
    /// An entity index is the caller's (the entity's row in its own list);
    /// a hash may belong to several entities.
    pub fn new(
        fingerprint: Fingerprint,
        erased: impl IntoIterator<Item = (IdentifierKind, [u8; 32], u32)>,
    ) -> Self {
        let mut pairs: Vec<([u8; 32], u32)> = Vec::new();
        let (mut emails, mut phones) = (false, false);
        for (kind, hash, entity) in erased {
            match kind {
                IdentifierKind::Email => emails = true,
                IdentifierKind::Phone => phones = true,
            }
            pairs.push((hash, entity));
        }
        pairs.sort_unstable();
        pairs.dedup();
        let mut table = HashMap::with_capacity_and_hasher(pairs.len(), Default::default());
        let mut entities: Vec<Box<[u32]>> = Vec::new();
        let bits = (pairs.len() * 16)
            .next_power_of_two()
            .clamp(1 << 12, 1 << 24);
        let prefix_shift = 64 - bits.trailing_zeros();
        let mut prefix_bits = vec![0u64; bits / 64].into_boxed_slice();
        for same in pairs.chunk_by(|a, b| a.0 == b.0) {
            let i = prefix(&same[0].0, prefix_shift);
            prefix_bits[i / 64] |= 1 << (i % 64);
            table.insert(same[0].0, entities.len() as u32);
            entities.push(same.iter().map(|p| p.1).collect());
        }
        Scanner {
            fingerprint,
            table,
            prefix_bits,
            prefix_shift,
            entities,
            emails,
            phones,
            lengths: [Lengths::ALL; 2],
            buffer: BUFFER,
            json_at: memmem::Finder::new(b"\\u0040"),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Hashes only candidates of these lengths (bytes of the normalised
    /// value: an address's, a phone number's digits), which must be the
    /// lengths of every value of that kind in the set: a value of another
    /// length would never be found. Saves the HMAC of most candidates in
    /// number-dense files (dates, ids, amounts), at the price of knowing
    /// the lengths, which the hashes alone do not tell.
    pub fn only_lengths(
        mut self,
        kind: IdentifierKind,
        lengths: impl IntoIterator<Item = usize>,
    ) -> Self {
        let mut only = Lengths([0; 6]);
        for n in lengths {
            if n < Lengths::MAX {
                only.0[n / 64] |= 1 << (n % 64);
            }
        }
        self.lengths[kind.index()] = only;
        self
    }

    /// Distinct hashes searched for.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether identifiers of this kind are searched (the set holds some).
    pub fn searches(&self, kind: IdentifierKind) -> bool {
        match kind {
            IdentifierKind::Email => self.emails,
            IdentifierKind::Phone => self.phones,
        }
    }

    /// Reads `reader` to its end and calls `hit` with the entity index of
    /// each erased identifier found, once per occurrence and entity. Reads
    /// nothing when there is nothing to search for.
    pub fn scan(&self, reader: impl Read, hit: &mut impl FnMut(u32)) -> io::Result<ScanStats> {
        let mut scratch = self
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| Scratch::new(self.buffer));
        let result = self.scan_with(&mut scratch, reader, hit);
        self.spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(scratch);
        result
    }

    fn scan_with(
        &self,
        scratch: &mut Scratch,
        mut reader: impl Read,
        hit: &mut impl FnMut(u32),
    ) -> io::Result<ScanStats> {
        let mut stats = ScanStats::default();
        if !self.emails && !self.phones {
            return Ok(stats);
        }
        let Scratch {
            buf,
            cache,
            email,
            phone,
        } = scratch;
        phone.reset();
        let cap = buf.len();
        let mut find = Finder {
            scanner: self,
            cache: &mut cache[..],
            hit,
            stats: &mut stats,
        };
        // buf[..len] holds data; anchors before `from` were searched. Bytes
        // at or after `limit` wait for more data (an address there could
        // continue past the end), unless the stream ended.
        let (mut len, mut from, mut eof) = (0, 0, false);
        loop {
            while len < cap && !eof {
                match reader.read(&mut buf[len..]) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        len += n;
                        find.stats.bytes += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let limit = if eof { len } else { len - AHEAD };
            if self.emails {
                self.emails_in(&buf[..len], from, limit, email, &mut find);
            }
            if self.phones {
                phone.feed(&buf[from..limit], &mut find);
            }
            if eof {
                break;
            }
            // Keep what a local part before the next anchor may need.
            let keep = limit - BACK;
            buf.copy_within(keep..len, 0);
            len -= keep;
            from = limit - keep;
        }
        if self.phones {
            phone.finish(&mut find);
        }
        Ok(stats)
    }

    /// Every address around an `@` (or an escaped one) at `from..limit`.
    /// `buf` is all the data there is around them: `buf[0]` is the start of
    /// the stream, or at least `BACK` bytes before `from`.
    fn emails_in(
        &self,
        buf: &[u8],
        from: usize,
        limit: usize,
        email: &mut Vec<u8>,
        find: &mut Finder<'_, impl FnMut(u32)>,
    ) {
        for i in memchr::memchr3_iter(b'@', b'&', b'%', &buf[from..limit]) {
            let at = from + i;
            if let Some(marker) = at_sign(&buf[at..]) {
                email_at(buf, at, marker, email, find);
            }
        }
        let end = (limit + 5).min(buf.len());
        for i in self.json_at.find_iter(&buf[from..end]) {
            let at = from + i;
            if at < limit {
                email_at(buf, at, 6, email, find);
            }
        }
    }

    fn lookup(&self, kind: IdentifierKind, normalised: &[u8]) -> u32 {
        let hash = self.fingerprint.hash_bytes(kind, normalised);
        let i = prefix(&hash, self.prefix_shift);
        if self.prefix_bits[i / 64] & (1 << (i % 64)) == 0 {
            return MISS;
        }
        self.table.get(&hash).copied().unwrap_or(MISS)
    }
}

/// The first bits of a hash, as an index into `Scanner::prefix_bits`.
fn prefix(hash: &[u8; 32], shift: u32) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    (u64::from_be_bytes(first) >> shift) as usize
}

/// A set of lengths up to that of the longest address.
#[derive(Clone, Copy, Debug)]
struct Lengths([u64; 6]);

impl Lengths {
    const MAX: usize = 6 * 64;
    const ALL: Lengths = Lengths([u64::MAX; 6]);

    fn holds(&self, n: usize) -> bool {
        // Longer ones (an address that grew in lower case) are all hashed.
        n >= Self::MAX || self.0[n / 64] & (1 << (n % 64)) != 0
    }
}

/// A scan's own memory, reused by the next scan.
struct Scratch {
    buf: Vec<u8>,
    cache: Box<[Slot]>,
    email: Vec<u8>,
    phone: PhoneRun,
}

impl Scratch {
    fn new(buffer: usize) -> Self {
        Scratch {
            buf: vec![0; buffer.max(BACK + AHEAD + 1)],
            cache: vec![Slot::EMPTY; CACHE_SLOTS].into_boxed_slice(),
            email: Vec::with_capacity(LOCAL_MAX + DOMAIN_MAX + 1),
            phone: PhoneRun::default(),
        }
    }
}

/// A remembered candidate: its bytes (at most 31, zero-padded, the length
/// in the last byte, so never all zero) and its answer. The kind is not in
/// the key: an address holds `@`, a phone number only digits.
#[derive(Clone, Copy)]
struct Slot {
    key: [u64; 4],
    entities: u32,
}

impl Slot {
    const EMPTY: Slot = Slot {
        key: [0; 4],
        entities: MISS,
    };
}

/// Where candidates go: the cache, then the hash table, then `hit`.
struct Finder<'a, F> {
    scanner: &'a Scanner,
    cache: &'a mut [Slot],
    hit: &'a mut F,
    stats: &'a mut ScanStats,
}

impl<F: FnMut(u32)> Finder<'_, F> {
    #[inline]
    fn candidate(&mut self, kind: IdentifierKind, normalised: &[u8]) {
        self.stats.candidates += 1;
        if self.scanner.lengths[kind.index()].holds(normalised.len()) {
            self.look_up(kind, normalised);
        }
    }

    #[inline(never)]
    fn look_up(&mut self, kind: IdentifierKind, normalised: &[u8]) {
        let entities = if normalised.len() < 32 {
            let mut raw = [0u8; 32];
            raw[..normalised.len()].copy_from_slice(normalised);
            raw[31] = normalised.len() as u8;
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&raw[i * 8..i * 8 + 8]);
                u64::from_le_bytes(w)
            };
            let key = [word(0), word(1), word(2), word(3)];
            let mix = (key[0] ^ key[1].rotate_left(19) ^ key[2].rotate_left(38) ^ key[3])
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            // The top bits of the product depend on every bit of the key.
            let slot = &mut self.cache[(mix >> (64 - CACHE_SLOTS.trailing_zeros())) as usize];
            if slot.key == key {
                slot.entities
            } else {
                self.stats.hashed += 1;
                let entities = self.scanner.lookup(kind, normalised);
                *slot = Slot { key, entities };
                entities
            }
        } else {
            self.stats.hashed += 1;
            self.scanner.lookup(kind, normalised)
        };
        if entities != MISS {
            for &e in self.scanner.entities[entities as usize].iter() {
                (self.hit)(e);
            }
        }
    }
}

/// The length of the `@` spelling that starts `rest`, if one does: `@`,
/// `%40`, `&#64;`, `&#x40;` (leading zeros, either case), `&commat;`.
fn at_sign(rest: &[u8]) -> Option<usize> {
    match rest {
        [b'@', ..] => Some(1),
        [b'%', b'4', b'0', ..] => Some(3),
        [b'&', b'c', b'o', b'm', b'm', b'a', b't', b';', ..] => Some(8),
        [b'&', b'#', tail @ ..] => {
            let (radix, digits) = match tail {
                [b'x' | b'X', digits @ ..] => (16, digits),
                digits => (10, digits),
            };
            let n = digits
                .iter()
                .take(8)
                .take_while(|b| b.is_ascii_hexdigit() && (radix == 16 || b.is_ascii_digit()))
                .count();
            let value = std::str::from_utf8(&digits[..n])
                .ok()
                .and_then(|d| u32::from_str_radix(d, radix).ok());
            (n > 0 && value == Some(0x40) && digits.get(n) == Some(&b';'))
                .then(|| rest.len() - digits.len() + n + 1)
        }
        _ => None,
    }
}

/// Tries every address the `@` spelling at `buf[at..at + marker]` can end
/// the local part of.
fn email_at(
    buf: &[u8],
    at: usize,
    marker: usize,
    email: &mut Vec<u8>,
    find: &mut Finder<'_, impl FnMut(u32)>,
) {
    // The domain: the run of domain bytes after the `@`.
    let d0 = at + marker;
    let stop = (d0 + DOMAIN_MAX + 16).min(buf.len());
    let mut d1 = d0;
    while d1 < stop && class(buf[d1]) & DOMAIN != 0 {
        d1 += 1;
    }
    if d1 == stop && d1 < buf.len() && class(buf[d1]) & DOMAIN != 0 {
        return; // longer than any domain
    }
    let Some(domain) = domain_in(&buf[d0..d1]) else {
        return;
    };
    // The local part ends at `at`; where it starts is not known, so each
    // place an address can start is tried.
    let lo = at.saturating_sub(LOCAL_SCAN);
    let mut start = at;
    while start > lo && class(buf[start - 1]) & LOCAL != 0 {
        start -= 1;
    }
    let run = &buf[start..at];
    // A run that goes on past `lo` is longer than a local part: only the
    // places inside it can start one.
    let open = start == lo && lo > 0 && class(buf[lo - 1]) & LOCAL != 0;
    // (Cut there, it may begin inside a character.)
    let torn = if open {
        run.iter()
            .take_while(|&&b| (0x80..0xC0).contains(&b))
            .count()
    } else {
        0
    };
    let inner = local_floor(&run[torn..]);
    let floor = torn + inner;
    // Bit `n` set: try the local part of the last `n` bytes.
    let mut lengths: u128 = 0;
    let mut try_at = |i: usize| {
        if i >= floor && i < run.len() {
            lengths |= 1 << (run.len() - i);
        }
    };
    if !open || inner > 0 {
        try_at(floor);
    }
    if !open && floor == 0 && start > 0 && buf[start - 1] == b'\\' {
        // A JSON escape before the address: `\njane@`, `\u00a0jane@`.
        try_at(1);
        if run.len() > 5 && run[0] == b'u' && run[1..5].iter().all(u8::is_ascii_hexdigit) {
            try_at(5);
        }
    }
    for (i, &b) in run.iter().enumerate() {
        if class(b) & SPLIT != 0 {
            try_at(i + 1);
            if b == b'%' && run.len() > i + 2 && run[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit)
            {
                try_at(i + 3);
            }
        }
    }
    let mut last = usize::MAX;
    while lengths != 0 {
        // Longest first, so that dots skipped below meet the previous one.
        let n = 127 - lengths.leading_zeros() as usize;
        lengths &= !(1 << n);
        let mut local = &run[run.len() - n..];
        while let [b'.', rest @ ..] = local {
            local = rest;
        }
        if local.len() == last {
            continue;
        }
        last = local.len();
        if !local_ok(local) {
            continue;
        }
        email.clear();
        email.extend_from_slice(local);
        email.push(b'@');
        email.extend_from_slice(domain);
        if email.is_ascii() {
            email.make_ascii_lowercase();
            find.candidate(IdentifierKind::Email, email);
        } else if let Ok(text) = std::str::from_utf8(email) {
            let folded = text.to_lowercase();
            find.candidate(IdentifierKind::Email, folded.as_bytes());
        }
    }
}

/// The domain a run of domain bytes starts with: up to the first byte
/// that is not part of a letter or digit (non-ASCII) or of valid UTF-8,
/// without trailing dots and hyphens (a sentence's end).
fn domain_in(run: &[u8]) -> Option<&[u8]> {
    let mut end = run.len();
    if !run.is_ascii() {
        end = 0;
        'chunks: for chunk in run.utf8_chunks() {
            for (i, c) in chunk.valid().char_indices() {
                if !c.is_ascii() && !c.is_alphanumeric() {
                    end += i;
                    break 'chunks;
                }
            }
            end += chunk.valid().len();
            if !chunk.invalid().is_empty() {
                break;
            }
        }
    }
    let mut domain = &run[..end];
    while let [rest @ .., b'.' | b'-'] = domain {
        domain = rest;
    }
    domain_ok(domain).then_some(domain)
}

/// Where in a run of local-part bytes an address may start at the
/// earliest: after its last non-ASCII character that is no letter or digit
/// (a typographic quote, a no-break space) and its last invalid UTF-8.
fn local_floor(run: &[u8]) -> usize {
    if run.is_ascii() {
        return 0;
    }
    let (mut floor, mut pos) = (0, 0);
    for chunk in run.utf8_chunks() {
        for (i, c) in chunk.valid().char_indices() {
            if !c.is_ascii() && !c.is_alphanumeric() {
                floor = pos + i + c.len_utf8();
            }
        }
        pos += chunk.valid().len() + chunk.invalid().len();
        if !chunk.invalid().is_empty() {
            floor = pos;
        }
    }
    floor
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PhoneState {
    /// Not in a run of digit groups.
    #[default]
    Idle,
    /// In a group of digits.
    Group,
    /// After a group, this many separators.
    Gap(u8),
}

/// The phone-number state machine: digit groups separated by up to three
/// separators. It keeps the digits of the last groups (at most
/// `PHONE_MAX_DIGITS`, the group being read included) and, when a group
/// ends, tries every run of groups that ends with it; nothing of the buffer
/// is needed afterwards, so it streams.
#[derive(Default)]
struct PhoneRun {
    state: PhoneState,
    /// Digits of the last groups, oldest first.
    window: [u8; PHONE_MAX_DIGITS],
    window_len: usize,
    /// Where each group of `window` starts (the last one: the group being
    /// read, in state `Group`).
    groups: [u8; PHONE_MAX_DIGITS],
    group_count: usize,
    /// The group being read has more than `PHONE_MAX_DIGITS` digits.
    overlong: bool,
}

impl PhoneRun {
    fn reset(&mut self) {
        self.state = PhoneState::Idle;
        self.window_len = 0;
        self.group_count = 0;
    }

    fn feed(&mut self, bytes: &[u8], find: &mut Finder<'_, impl FnMut(u32)>) {
        let mut i = 0;
        let n = bytes.len();
        loop {
            if self.state == PhoneState::Idle {
                i = next_digit(bytes, i);
            }
            while i < n {
                let b = bytes[i];
                i += 1;
                self.step(b, find);
                if self.state == PhoneState::Idle {
                    break;
                }
            }
            if i >= n {
                return;
            }
        }
    }

    /// The stream ended.
    fn finish(&mut self, find: &mut Finder<'_, impl FnMut(u32)>) {
        if self.state == PhoneState::Group {
            self.end_group(find);
        }
        self.reset();
    }

    #[inline]
    fn step(&mut self, b: u8, find: &mut Finder<'_, impl FnMut(u32)>) {
        let c = class(b);
        match self.state {
            PhoneState::Idle => {
                if c & DIGIT != 0 {
                    self.window_len = 0;
                    self.group_count = 0;
                    self.begin_group(b);
                }
            }
            PhoneState::Group => {
                if c & DIGIT != 0 {
                    self.push(b);
                } else {
                    self.end_group(find);
                    self.state = if c & PHONE_SEP != 0 {
                        PhoneState::Gap(1)
                    } else {
                        PhoneState::Idle
                    };
                }
            }
            PhoneState::Gap(seps) => {
                if c & DIGIT != 0 {
                    self.begin_group(b);
                } else if c & PHONE_SEP != 0 && seps < 3 {
                    self.state = PhoneState::Gap(seps + 1);
                } else {
                    self.state = PhoneState::Idle;
                }
            }
        }
    }

    fn begin_group(&mut self, b: u8) {
        self.state = PhoneState::Group;
        self.overlong = false;
        self.groups[self.group_count] = self.window_len as u8;
        self.group_count += 1;
        self.push(b);
    }

    #[inline]
    fn push(&mut self, b: u8) {
        if self.window_len == PHONE_MAX_DIGITS {
            if self.group_count == 1 {
                // No number holds this group.
                self.overlong = true;
                return;
            }
            // Drop the oldest group.
            let cut = self.groups[1];
            self.window.copy_within(cut as usize.., 0);
            self.window_len -= cut as usize;
            self.groups.copy_within(1..self.group_count, 0);
            self.group_count -= 1;
            for g in &mut self.groups[..self.group_count] {
                *g -= cut;
            }
        }
        self.window[self.window_len] = b;
        self.window_len += 1;
    }

    fn end_group(&mut self, find: &mut Finder<'_, impl FnMut(u32)>) {
        if self.overlong {
            // The next group starts afresh.
            self.window_len = 0;
            self.group_count = 0;
            return;
        }
        for g in (0..self.group_count).rev() {
            let start = self.groups[g] as usize;
            if self.window_len - start >= PHONE_MIN_DIGITS {
                find.candidate(IdentifierKind::Phone, &self.window[start..self.window_len]);
            }
        }
    }
}

/// The first ASCII digit at or after `i`, or the end. Eight bytes at a
/// time (SWAR), 32 while there is none.
fn next_digit(bytes: &[u8], mut i: usize) -> usize {
    let n = bytes.len();
    while i + 32 <= n {
        let block = &bytes[i..i + 32];
        let any = digits_of(&block[..8])
            | digits_of(&block[8..16])
            | digits_of(&block[16..24])
            | digits_of(&block[24..]);
        if any != 0 {
            break;
        }
        i += 32;
    }
    while i + 8 <= n {
        let digits = digits_of(&bytes[i..i + 8]);
        if digits != 0 {
            // Little-endian: the first byte is the lowest.
            return i + (digits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && class(bytes[i]) & DIGIT == 0 {
        i += 1;
    }
    i
}

/// The high bit of each of eight bytes that is an ASCII digit: for a byte
/// below 0x80, adding 0x50 sets its high bit when it is at least `0`,
/// adding 0x46 when it is above `9`.
#[inline]
fn digits_of(eight: &[u8]) -> u64 {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut w = [0u8; 8];
    w.copy_from_slice(eight);
    let w = u64::from_le_bytes(w);
    let low = w & !HIGH;
    let at_least_0 = low + (0x80 - b'0' as u64) * ONES;
    let above_9 = low + (0x80 - b'9' as u64 - 1) * ONES;
    at_least_0 & !above_9 & !w & HIGH
}

/// Hashes a map key that is already an HMAC output: its first bytes.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(w))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMAIL: IdentifierKind = IdentifierKind::Email;
    const PHONE: IdentifierKind = IdentifierKind::Phone;

    fn key() -> Sensitive<Vec<u8>> {
        Sensitive::new(b"residual-test-key-0123456789".to_vec())
    }

    /// A scanner for these (kind, CRM value) pairs, entity = position.
    fn scanner(values: &[(IdentifierKind, &str)]) -> Scanner {
        scanner_with(values, BUFFER)
    }

    fn scanner_with(values: &[(IdentifierKind, &str)], buffer: usize) -> Scanner {
        let fp = Fingerprint::new(&key());
        let erased: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, &(kind, raw))| {
                let n = normalise(kind, raw).expect("a searchable test value");
                (kind, fp.hash(kind, &n), i as u32)
            })
            .collect();
        let mut s = Scanner::new(fp, erased);
        s.buffer = buffer;
        s
    }

    fn hits(s: &Scanner, bytes: &[u8]) -> Vec<u32> {
        let mut found = Vec::new();
        s.scan(bytes, &mut |e| found.push(e))
            .expect("reading a slice");
        found.sort_unstable();
        found.dedup();
        found
    }

    fn found(kind: IdentifierKind, value: &str, text: &str) -> bool {
        hits(&scanner(&[(kind, value)]), text.as_bytes()) == [0]
    }

    #[test]
    fn kinds_have_lower_case_names() {
        for kind in IdentifierKind::ALL {
            let json = serde_json::to_string(&kind).expect("serialises");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(
                serde_json::from_str::<IdentifierKind>(&json).expect("parses"),
                kind
            );
            assert_eq!(kind.as_str().parse::<IdentifierKind>(), Ok(kind));
        }
        assert_eq!(EMAIL.as_str(), "email");
        assert_eq!(PHONE.to_string(), "phone");
        let err = "fax".parse::<IdentifierKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown identifier kind `fax` (expected email or phone)"
        );
    }

    #[test]
    fn emails_are_trimmed_and_case_folded() {
        let n = |raw: &str| normalise(EMAIL, raw);
        assert_eq!(
            n("  Jane.Doe@Example.COM \n").as_deref(),
            Some("jane.doe@example.com")
        );
        assert_eq!(
            n("o'brien+news@mail.example.org").as_deref(),
            Some("o'brien+news@mail.example.org")
        );
        assert_eq!(n("Jürgen@Müller.DE").as_deref(), Some("jürgen@müller.de"));
        for not in [
            "",
            "jane",
            "@example.com",
            "jane@",
            "jane@localhost",
            "jane@@example.com",
            "a@b@example.com",
            "jane doe@example.com",
            ".jane@example.com",
            "=jane@example.com",
            "jane@.example.com",
            "jane@example.com.",
            "jane@example-.com-",
            "\"jane\"@example.com",
            "jane@exa_mple.com",
            "jane@example.com>",
            "«jane»@example.com",
        ] {
            assert_eq!(n(not), None, "{not:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(LOCAL_MAX + 1));
        assert_eq!(n(&long_local), None);
        assert!(n(&format!("{}@example.com", "a".repeat(LOCAL_MAX))).is_some());
        let long_domain = format!("jane@{}.com", "d".repeat(DOMAIN_MAX));
        assert_eq!(n(&long_domain), None);
    }

    #[test]
    fn phones_are_their_digits() {
        let n = |raw: &str| normalise(PHONE, raw);
        assert_eq!(n("+49 (0)30 123-45 67").as_deref(), Some("490301234567"));
        assert_eq!(n("030/1234567").as_deref(), Some("0301234567"));
        assert_eq!(n("1234567").as_deref(), Some("1234567"));
        assert_eq!(n("123 456"), None);
        assert_eq!(n("n/a"), None);
        assert_eq!(
            n(&"1".repeat(PHONE_MAX_DIGITS)).as_deref(),
            Some(&*"1".repeat(20))
        );
        assert_eq!(n(&"1".repeat(PHONE_MAX_DIGITS + 1)), None);
    }

    #[test]
    fn fingerprint_is_hmac_of_kind_nul_value() {
        let fp = Fingerprint::new(&key());
        // Every length around the one-block limit, both kinds, and a key
        // longer than a block (hashed first).
        let long_key = Sensitive::new(vec![7u8; 100]);
        let long = Fingerprint::new(&long_key);
        for len in 0..130 {
            let value: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            for kind in IdentifierKind::ALL {
                for (fp, key) in [(&fp, key()), (&long, long_key.clone())] {
                    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose())
                        .expect("any key length");
                    mac.update(format!("{}\0{value}", kind.as_str()).as_bytes());
                    let want: [u8; 32] = mac.finalize().into_bytes().into();
                    assert_eq!(fp.hash(kind, &value), want, "{kind} of {len} bytes");
                    assert_eq!(fp.hex(kind, &value), hex::encode(want));
                    assert_eq!(parse_hash(&fp.hex(kind, &value)), Some(want));
                }
            }
        }
        assert_ne!(fp.hash(EMAIL, "1234567"), fp.hash(PHONE, "1234567"));
        let other = Fingerprint::new(&Sensitive::new(b"another key".to_vec()));
        assert_ne!(fp.hash(PHONE, "1234567"), other.hash(PHONE, "1234567"));
        assert_eq!(format!("{fp:?}"), "Fingerprint([redacted])");
        assert_eq!(parse_hash("zz"), None);
        assert_eq!(parse_hash(&"ab".repeat(31)), None);
    }

    /// Each spelling the module doc promises, as (CRM value, text).
    const EMAIL_SPELLINGS: &[(&str, &str)] = &[
        ("jane.doe@example.com", "jane.doe@example.com"),
        (
            "jane.doe@example.com",
            "Mail from Jane.Doe@Example.COM today",
        ),
        ("JANE.DOE@example.com", "jane.doe@EXAMPLE.com"),
        ("jane@example.com", r#"{"email":"jane@example.com","id":4}"#),
        (
            "jane@example.com",
            r#"{"note":"write to\njane@example.com\tsoon"}"#,
        ),
        ("jane@example.com", r#"{"note":"\u00a0jane@example.com"}"#),
        ("jane@example.com", r#"{"email":"jane\u0040example.com"}"#),
        (
            "jane@example.com",
            r#"{"url":"https:\/\/crm.example\/u\/jane@example.com"}"#,
        ),
        ("jane@example.com", "<Email>jane&#64;example.com</Email>"),
        ("jane@example.com", "<Email>jane&#064;example.com</Email>"),
        (
            "jane@example.com",
            "<a>jane&#x40;example.com</a> <b>jane&#X0040;example.com</b>",
        ),
        ("jane@example.com", "<p>jane&commat;example.com</p>"),
        ("jane@example.com", "<Lead email=\"jane@example.com\"/>"),
        ("jane@example.com", "<Lead email='jane@example.com'/>"),
        ("jane@example.com", "&lt;jane@example.com&gt;"),
        ("jane@example.com", "id;email\r\n4;\"jane@example.com\"\r\n"),
        ("jane@example.com", "4,\"\"\"jane@example.com\"\"\",x\n"),
        ("jane@example.com", "4\tjane@example.com\t5\n"),
        (
            "jane@example.com",
            "GET /unsubscribe?email=jane%40example.com&list=2",
        ),
        ("jane@example.com", "GET /u?to=x%3Djane%40example.com"),
        ("jane@example.com", "GET /users/jane@example.com/edit"),
        ("jane@example.com", "<a href=\"mailto:jane@example.com\">"),
        ("jane@example.com", "From: \"Jane\" <jane@example.com>"),
        ("jane@example.com", "(jane@example.com) [jane@example.com]"),
        ("jane@example.com", "Write to jane@example.com."),
        ("jane@example.com", "Write to jane@example.com..."),
        ("jane@example.com", "user=jane@example.com;"),
        ("jane@example.com", "'jane@example.com'"),
        ("jane@example.com", "“jane@example.com”"),
        ("jane@example.com", "«jane@example.com»"),
        ("jane@example.com", "\u{a0}jane@example.com\u{a0}"),
        ("jane@example.com", "...jane@example.com"),
        (
            "o'brien@example.com",
            "INSERT INTO t VALUES ('o''brien@example.com'), ('o'brien@example.com')",
        ),
        ("jane+news@example.com", "jane+news@example.com"),
        ("jürgen@müller.de", "Kontakt: Jürgen@Müller.de."),
        ("jane@example.com", "\x00\x01jane@example.com\x7f"),
        (LONGEST, LONGEST),
        (
            LONGEST,
            concat!(
                "\\u00a0",
                "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01",
                "%40a23456789012345678901234567890123456789012345678901234567890123.",
                "b23456789012345678901234567890123456789012345678901234567890123.",
                "c23456789012345678901234567890123456789012345678901234567890123.",
                "dxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.com..."
            ),
        ),
    ];

    /// The longest address: a local part of 64 bytes, a domain of 255.
    const LONGEST: &str = concat!(
        "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01",
        "@a23456789012345678901234567890123456789012345678901234567890123.",
        "b23456789012345678901234567890123456789012345678901234567890123.",
        "c23456789012345678901234567890123456789012345678901234567890123.",
        "dxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.com"
    );

    /// Each phone spelling, as (CRM value, text).
    const PHONE_SPELLINGS: &[(&str, &str)] = &[
        ("030 1234567", "0301234567"),
        ("030 1234567", "Tel. 030 1234567"),
        ("0301234567", "030-123 45 67"),
        ("030 1234567", "030/1234567"),
        ("030 1234567", "(030) 1234567"),
        ("030 1234567", "030.123.45.67"),
        ("030 1234567", "030 - 1234567"),
        ("+49 30 1234567", "+49 30 1234567"),
        ("+49 30 1234567", "+49.30.1234567"),
        ("+49 30 1234567", "+49(30)1234567"),
        ("+49 (0)30 1234567", "+49 (0)30 123 4567"),
        ("030 1234567", "030\u{a0}1234567"),
        ("030 1234567", r#"{"phone":"030 1234567","id":12}"#),
        ("030 1234567", "id;phone\r\n12;030 1234567\r\n"),
        ("030 1234567", "<Phone>030 1234567</Phone>"),
        ("030 1234567", "tel:+49-30-1234567 / 030-1234567"),
        ("030 1234567", "2024-03-12 10:00:00.5 0301234567 called"),
        ("030 1234567", "030 1234567 / 030 7654321"),
        ("030 7654321", "030 1234567 / 030 7654321"),
        ("030 1234567", "12 030 1234567 99"),
        ("030 1234567", "030 1234567-89"),
        ("030 1234567", "abc0301234567xyz"),
        ("1234567", "1234567"),
        ("12345678901234567890", "1234 5678 9012 3456 7890"),
    ];

    #[test]
    fn every_email_spelling_is_found() {
        for &(value, text) in EMAIL_SPELLINGS {
            assert!(found(EMAIL, value, text), "{value:?} in {text:?}");
        }
    }

    #[test]
    fn every_phone_spelling_is_found() {
        for &(value, text) in PHONE_SPELLINGS {
            assert!(found(PHONE, value, text), "{value:?} in {text:?}");
        }
    }

    /// What the module doc says is not found stays not found (and is
    /// documented, not silently fixed one day).
    #[test]
    fn what_is_not_found() {
        let not_email = [
            ("jane@example.com", "Mr.jane@example.com"),
            ("jane@example.com", "xjane@example.com"),
            ("jane@example.com", "2jane@example.com"),
            ("jane@example.com", "jane+news@example.com"),
            ("jane@example.com", "jane@exam-\nple.com"),
            ("jane@example.com", "jane@example.\ncom"),
            (
                "jane@example.com",
                "jane at example dot com, jane[at]example.com",
            ),
            ("jane@example.com", "amFuZUBleGFtcGxlLmNvbQ=="),
            ("jane@example.com", "\\u006aane@example.com"),
            ("jane@example.com", "jane\\\\u0040example.com"),
            ("jane@example.com", "jane@example.community"),
            ("jane@example.com", "jane@sub.example.com"),
            ("jane+news@example.com", "jane%2Bnews%40example.com"),
            ("o'brien@example.com", "o&apos;brien@example.com"),
            (
                "jane@example.com",
                "j\0a\0n\0e\0@\0e\0x\0a\0m\0p\0l\0e\0.\0c\0o\0m\0",
            ),
        ];
        for (value, text) in not_email {
            assert!(!found(EMAIL, value, text), "{value:?} in {text:?}");
        }
        let not_phone = [
            ("030 1234567", "+49 30 1234567"),
            ("+49 30 1234567", "030 1234567"),
            ("+49 30 1234567", "+49 (0)30 1234567"),
            ("030 1234567-89", "030 1234567"),
            ("030 1234567", "9030 1234567"),
            ("030 1234567", "030\t1234567"),
            ("030 1234567", "030%201234567"),
            ("030 1234567", "030    1234567"),
            ("030 1234567", "030 x 1234567"),
            ("030 1234567", "MDMwIDEyMzQ1Njc="),
        ];
        for (value, text) in not_phone {
            assert!(!found(PHONE, value, text), "{value:?} in {text:?}");
        }
    }

    #[test]
    fn each_kind_is_searched_only_when_the_set_holds_it() {
        let text = b"jane@example.com 0301234567 2024-03-12";
        let emails = scanner(&[(EMAIL, "nobody@example.org")]);
        assert!(emails.searches(EMAIL) && !emails.searches(PHONE));
        let st = emails.scan(&text[..], &mut |_| {}).expect("reads");
        assert_eq!((st.bytes, st.candidates), (text.len() as u64, 1));
        let phones = scanner(&[(PHONE, "0123456789")]);
        assert!(phones.searches(PHONE) && !phones.searches(EMAIL));
        let st = phones.scan(&text[..], &mut |_| {}).expect("reads");
        // 0301234567, then each run of groups ending in 2024, 03 and 12
        // with at least 7 digits: 0301234567 2024, ... 03, ... 12,
        // 2024 03 12.
        assert_eq!(st.candidates, 5);
        let none = Scanner::new(Fingerprint::new(&key()), []);
        assert!(none.is_empty());
        assert_eq!(
            none.scan(&text[..], &mut |_| {}).expect("reads"),
            ScanStats::default()
        );
    }

    #[test]
    fn a_hash_names_every_entity_that_had_it() {
        let s = scanner(&[
            (EMAIL, "shared@example.com"),
            (PHONE, "030 1234567"),
            (EMAIL, "Shared@Example.com"),
            (EMAIL, "other@example.com"),
        ]);
        assert_eq!(s.len(), 3);
        assert_eq!(hits(&s, b"shared@example.com"), [0, 2]);
        assert_eq!(hits(&s, b"x 0301234567 other@example.com"), [1, 3]);
        let mut each = Vec::new();
        s.scan(&b"other@example.com other@example.com"[..], &mut |e| {
            each.push(e)
        })
        .expect("reads");
        assert_eq!(each, [3, 3], "once per occurrence");
    }

    #[test]
    fn repeated_candidates_are_hashed_once() {
        let s = scanner(&[(PHONE, "030 1234567"), (EMAIL, "jane@example.com")]);
        let text = "2024-03-12 a@example.org ".repeat(1000);
        let st = s.scan(text.as_bytes(), &mut |_| {}).expect("reads");
        assert_eq!(st.candidates, 2000);
        assert_eq!(st.hashed, 2);
        // The next scan keeps the cache (the scanner's buffers are reused).
        let st = s.scan(text.as_bytes(), &mut |_| {}).expect("reads");
        assert_eq!(st.hashed, 0);
        // Distinct candidates are each hashed.
        let text: String = (0..1000)
            .map(|i| format!("{:07};", 1_000_000 + i))
            .collect();
        let st = s.scan(text.as_bytes(), &mut |_| {}).expect("reads");
        assert_eq!((st.candidates, st.hashed), (1000, 1000));
    }

    #[test]
    fn only_lengths_hashes_only_candidates_of_those_lengths() {
        let text = b"2024-03-12;0301234567;12345678901;jane@example.com;a@example.org";
        let all = scanner(&[(PHONE, "030 1234567"), (EMAIL, "jane@example.com")]);
        let st = all.scan(&text[..], &mut |_| {}).expect("reads");
        assert_eq!((st.candidates, st.hashed), (5, 5));
        let some = scanner(&[(PHONE, "030 1234567"), (EMAIL, "jane@example.com")])
            .only_lengths(PHONE, [10])
            .only_lengths(EMAIL, [16]);
        let mut got = Vec::new();
        let st = some.scan(&text[..], &mut |e| got.push(e)).expect("reads");
        got.sort_unstable();
        assert_eq!((st.candidates, st.hashed), (5, 2));
        assert_eq!(got, [0, 1]);
        // Lengths that leave out a value's: it is not found (the caller's
        // promise broken).
        let wrong = scanner(&[(PHONE, "030 1234567")]).only_lengths(PHONE, [11]);
        assert_eq!(hits(&wrong, text), Vec::<u32>::new());
    }

    /// A reader that hands out its bytes `step` at a time.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// Every spelling across buffer refills. With the smallest buffer a
    /// refill brings one byte, so every byte of the spelling is in turn the
    /// first one of a refill; larger buffers move the first refill over
    /// every offset. Padding after the spelling keeps it out of the last
    /// buffer (which is scanned to its end), and reads hand out a few bytes
    /// at a time.
    #[test]
    fn tokens_across_buffer_boundaries_are_found() {
        let smallest = BACK + AHEAD + 1;
        let spellings = EMAIL_SPELLINGS
            .iter()
            .map(|&(v, t)| (EMAIL, v, t))
            .chain(PHONE_SPELLINGS.iter().map(|&(v, t)| (PHONE, v, t)));
        for (kind, value, text) in spellings {
            for buffer in [smallest, smallest + 1, smallest + 7, smallest + 100] {
                let s = scanner_with(&[(kind, value)], buffer);
                let pads = if buffer == smallest {
                    0..=40
                } else {
                    0..=(buffer - AHEAD + text.len())
                };
                for pad in pads {
                    let mut input = vec![b' '; pad];
                    input.extend_from_slice(text.as_bytes());
                    input.extend(std::iter::repeat_n(b' ', AHEAD + 1 + pad % 5));
                    let mut got = Vec::new();
                    let reader = Trickle {
                        bytes: &input,
                        step: 1 + pad % 3,
                    };
                    let st = s.scan(reader, &mut |e| got.push(e)).expect("reads");
                    assert_eq!(st.bytes, input.len() as u64);
                    assert!(
                        got.contains(&0),
                        "{value:?} in {text:?} after {pad} bytes, buffer {buffer}"
                    );
                }
            }
        }
    }

    #[test]
    fn memory_is_bounded_by_the_buffer_whatever_the_input() {
        let s = scanner(&[(EMAIL, "jane@example.com"), (PHONE, "030 1234567")]);
        let cases: Vec<(Vec<u8>, bool)> = vec![
            // One line of 8 MB, no newline, the address at its end.
            (
                [vec![b'x'; 8 << 20], b" jane@example.com".to_vec()].concat(),
                true,
            ),
            // A local part as long as the stream: no address.
            (
                [vec![b'a'; 8 << 20], b"jane@example.com".to_vec()].concat(),
                false,
            ),
            // ... but one may start inside it.
            (
                [vec![b'a'; 8 << 20], b"=jane@example.com".to_vec()].concat(),
                true,
            ),
            // A domain as long as the stream.
            (
                [b"jane@example.com".to_vec(), vec![b'a'; 8 << 20]].concat(),
                false,
            ),
            // Digits without end, then the number after a separator.
            (
                [vec![b'7'; 8 << 20], b" 0301234567".to_vec()].concat(),
                true,
            ),
            // Digit groups without end.
            (
                b"12 "
                    .repeat(3 << 20)
                    .into_iter()
                    .chain(*b"030 1234567")
                    .collect(),
                true,
            ),
            // Escapes and @ without end.
            (b"&#x40;%40@\\u0040".repeat(1 << 20), false),
        ];
        for (input, want) in cases {
            let got = hits(&s, &input);
            assert_eq!(got.is_empty(), !want, "{} bytes", input.len());
        }
        let spare = s.spare.lock().expect("not poisoned");
        assert_eq!(spare.len(), 1);
        assert_eq!(spare[0].buf.len(), BUFFER);
    }

    #[test]
    fn read_errors_are_returned() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let s = scanner(&[(EMAIL, "jane@example.com")]);
        let err = s.scan(Broken, &mut |_| {}).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        // The scanner is still usable afterwards.
        assert_eq!(hits(&s, b"jane@example.com"), [0]);
    }

    #[test]
    fn next_digit_agrees_with_a_byte_loop() {
        let mut bytes: Vec<u8> = (0..=255).collect();
        bytes.extend(b"..............................................9");
        for start in 0..bytes.len() {
            for end in start..bytes.len().min(start + 70) {
                let slice = &bytes[start..end];
                let want = slice
                    .iter()
                    .position(u8::is_ascii_digit)
                    .unwrap_or(slice.len());
                assert_eq!(next_digit(slice, 0), want, "{start}..{end}");
            }
        }
    }

    /// Bytes that cannot continue an address or a number on that side.
    const BEFORE: &[u8] = b" \t\r\n\"<>()[],;:=/'?\\\x00";
    const AFTER: &[u8] = b" \t\r\n\"<>()[],;:'?\\&\x00\xff";

    fn email_spellings(value: &str) -> Vec<Vec<u8>> {
        let (local, domain) = value.split_once('@').expect("an address");
        let upper = value.to_uppercase();
        [
            value.to_owned(),
            upper,
            format!("{local}\\u0040{domain}"),
            format!("{local}&#64;{domain}"),
            format!("{local}&#x40;{domain}"),
            format!("{local}&commat;{domain}"),
            format!("{local}%40{domain}"),
            format!("\"{value}\""),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect()
    }

    fn phone_spellings(digits: &str) -> Vec<Vec<u8>> {
        let groups = |sep: &str, size: usize| {
            digits
                .as_bytes()
                .chunks(size)
                .map(|c| std::str::from_utf8(c).expect("digits"))
                .collect::<Vec<_>>()
                .join(sep)
        };
        vec![
            digits.as_bytes().to_vec(),
            groups(" ", 3).into_bytes(),
            groups("-", 4).into_bytes(),
            groups(".", 2).into_bytes(),
            format!("+{}", groups("/", 5)).into_bytes(),
            format!("({}) {}", &digits[..3], &digits[3..]).into_bytes(),
            groups(" - ", 3).into_bytes(),
        ]
    }

    fn arb_email() -> impl Strategy<Value = String> {
        (
            "[a-z0-9][a-z0-9._+-]{0,20}",
            "[a-z0-9]{1,10}(\\.[a-z0-9-]{0,8}[a-z0-9])?\\.[a-z]{2,6}",
        )
            .prop_map(|(l, d)| format!("{l}@{d}"))
            .prop_filter("searchable", |v| normalise(EMAIL, v).is_some())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// An address anywhere in random bytes, in every spelling, with a
        /// boundary on each side, is found.
        #[test]
        fn an_email_in_random_bytes_is_found(
            value in arb_email(),
            before in proptest::collection::vec(any::<u8>(), 0..600),
            after in proptest::collection::vec(any::<u8>(), 0..600),
            b in proptest::sample::select(BEFORE),
            a in proptest::sample::select(AFTER),
            buffer in (BACK + AHEAD + 1)..(BACK + AHEAD + 200),
        ) {
            let s = scanner_with(&[(EMAIL, &value)], buffer);
            for spelling in email_spellings(&value) {
                let input = [&before[..], &[b], &spelling, &[a], &after].concat();
                prop_assert!(hits(&s, &input).contains(&0), "{}", String::from_utf8_lossy(&spelling));
            }
        }

        #[test]
        fn a_phone_in_random_bytes_is_found(
            digits in "[0-9]{7,20}",
            before in proptest::collection::vec(any::<u8>(), 0..600),
            after in proptest::collection::vec(any::<u8>(), 0..600),
            b in proptest::sample::select(b" ;,\"<>:=x\n\t\xff".as_slice()),
            a in proptest::sample::select(b" ;,\"<>:=x\n\t\xff".as_slice()),
            buffer in (BACK + AHEAD + 1)..(BACK + AHEAD + 200),
        ) {
            let s = scanner_with(&[(PHONE, &digits)], buffer);
            for spelling in phone_spellings(&digits) {
                let input = [&before[..], &[b], &spelling, &[a], &after].concat();
                prop_assert!(hits(&s, &input).contains(&0), "{}", String::from_utf8_lossy(&spelling));
            }
        }

        /// Random bytes rich in what identifiers are made of (digits,
        /// letters, separators, every `@` spelling, and pieces of the value
        /// itself) find the value only where it really is: never, when one
        /// of its characters is left out of the alphabet.
        #[test]
        fn random_bytes_without_it_find_nothing(
            value in arb_email(),
            digits in "[1-9]{7,12}",
            pieces in proptest::collection::vec(
                prop_oneof![
                    proptest::sample::select(vec![
                        "@", "\\u0040", "&#64;", "&#x40;", "%40", "&commat;", " ", "-", ".", "/",
                        "(", ")", "+", "=", "\"", "'", ";", "\n", "\u{a0}",
                    ]).prop_map(str::to_owned),
                    "[a-z0-9]{1,6}",
                ],
                0..200,
            ),
            cut in any::<proptest::sample::Index>(),
        ) {
            // Leave out one character of each value: what remains can
            // hold neither, even where its pieces meet.
            let e = cut.index(value.len());
            let gone_e = value.as_bytes()[e];
            let gone_e = if gone_e == b'@' { value.as_bytes()[0] } else { gone_e };
            let gone_p = digits.as_bytes()[cut.index(digits.len())];
            let mut input = String::new();
            for p in &pieces {
                input.push_str(p);
                // Pieces of the values too, without the left-out character.
                input.push_str(&value[..e]);
                input.push_str(&digits[..digits.len() / 2]);
            }
            let input: Vec<u8> = input
                .bytes()
                .filter(|&c| c.to_ascii_lowercase() != gone_e && c != gone_p)
                .collect();
            let s = scanner(&[(EMAIL, &value), (PHONE, &digits)]);
            prop_assert_eq!(hits(&s, &input), Vec::<u32>::new());
        }
    }
}
