//! Phone-number candidates: a state machine over digit groups and their
//! separators that streams (it needs nothing of the buffer once a byte is
//! read), and the SWAR skip to the next digit.

use super::scanner::Finder;
use super::{DIGIT, IdentifierKind, PHONE_MAX_DIGITS, PHONE_MIN_DIGITS, PHONE_SEP, class};

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
pub(super) struct PhoneRun {
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
    pub(super) fn reset(&mut self) {
        self.state = PhoneState::Idle;
        self.window_len = 0;
        self.group_count = 0;
    }

    #[inline]
    pub(super) fn feed(&mut self, bytes: &[u8], find: &mut Finder<'_, impl FnMut(u32)>) {
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
    pub(super) fn finish(&mut self, find: &mut Finder<'_, impl FnMut(u32)>) {
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

    #[inline]
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
pub(super) fn next_digit(bytes: &[u8], mut i: usize) -> usize {
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
