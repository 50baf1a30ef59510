//! E-mail candidates: every address the bytes around a spelling of `@`
//! can hold (the domain after it, each place the local part can start
//! before it), normalised as `normalise` would, handed to the `Finder`.

use super::scanner::{Finder, LOCAL_SCAN};
use super::{DOMAIN, DOMAIN_MAX, IdentifierKind, LOCAL, SPLIT, class, domain_ok, local_ok};

/// The length of the `@` spelling that starts `rest`, if one does: `@`,
/// `%40`, `&#64;`, `&#x40;` (leading zeros, either case), `&commat;`.
pub(super) fn at_sign(rest: &[u8]) -> Option<usize> {
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
pub(super) fn email_at(
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
