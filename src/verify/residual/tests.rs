use std::io::{self, Read};

use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use sha2::Sha256;

use super::phone::next_digit;
use super::scanner::{AHEAD, BACK, BUFFER};
use super::*;

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
