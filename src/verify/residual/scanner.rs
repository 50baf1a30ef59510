//! The streaming scan: reads a stream through a fixed buffer, hands the
//! bytes around each anchor to `email` and every byte to `phone`, and looks
//! each candidate up: a direct-mapped cache of recent candidates, a prefix
//! filter of the hashes, then the hash table of the erased identifiers.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::sync::Mutex;

use memchr::memmem;
use serde::Serialize;

use super::email::{at_sign, email_at};
use super::phone::PhoneRun;
use super::{DOMAIN_MAX, Fingerprint, IdentifierKind, LOCAL_MAX};

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
pub(super) const BUFFER: usize = 64 * 1024;
/// How far left of an `@` the local part is looked for: the longest local
/// part, and a JSON escape (`\u00a0`) before it.
pub(super) const LOCAL_SCAN: usize = LOCAL_MAX + 8;
/// Bytes kept before the next unscanned one when the buffer is refilled.
pub(super) const BACK: usize = LOCAL_SCAN + 8;
/// Bytes an anchor needs after it: the longest `@` (`&#x0000040;`), the
/// longest domain with trailing dots, one byte to end it.
pub(super) const AHEAD: usize = 16 + DOMAIN_MAX + 16 + 1;
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
    pub(super) buffer: usize,
    json_at: memmem::Finder<'static>,
    pub(super) spare: Mutex<Vec<Scratch>>,
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

/// Erased identifiers gathered page by page from the state store (hash,
/// kind, the length of the value when it was stored), then made into one
/// scanner that hashes only candidates of the lengths seen — for each kind
/// whose every value's length is known.
#[derive(Default)]
pub struct Erased {
    hashes: Vec<(IdentifierKind, [u8; 32], u32)>,
    // `None` once one value of the kind has no stored length.
    lengths: HashMap<IdentifierKind, Option<std::collections::BTreeSet<usize>>>,
}

impl Erased {
    /// One erased identifier of entity `entity` (the caller's index).
    pub fn add(&mut self, kind: IdentifierKind, hash: [u8; 32], entity: u32, len: Option<u64>) {
        self.hashes.push((kind, hash, entity));
        let known = self
            .lengths
            .entry(kind)
            .or_insert_with(|| Some(Default::default()));
        match (known.as_mut(), len.and_then(|n| usize::try_from(n).ok())) {
            (Some(set), Some(n)) => {
                set.insert(n);
            }
            _ => *known = None,
        }
    }

    /// The scanner; `None` when nothing was added.
    pub fn scanner(self, fingerprint: Fingerprint) -> Option<Scanner> {
        if self.hashes.is_empty() {
            return None;
        }
        let mut scanner = Scanner::new(fingerprint, self.hashes);
        // Only candidates of the erased values' lengths are hashed (numbers
        // of other lengths — dates, ids, amounts — cost no HMAC).
        for (kind, set) in self.lengths {
            if let Some(set) = set {
                scanner = scanner.only_lengths(kind, set);
            }
        }
        Some(scanner)
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
pub(super) struct Scratch {
    pub(super) buf: Vec<u8>,
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
pub(super) struct Finder<'a, F> {
    scanner: &'a Scanner,
    cache: &'a mut [Slot],
    hit: &'a mut F,
    stats: &'a mut ScanStats,
}

impl<F: FnMut(u32)> Finder<'_, F> {
    #[inline]
    pub(super) fn candidate(&mut self, kind: IdentifierKind, normalised: &[u8]) {
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
