//! The buffers small objects are read whole into (`read_batch`), handed
//! back by the reader that parsed or searched them and taken again for the
//! next objects.
//!
//! A fresh buffer per file cost the kernel's zeroing of fresh pages as
//! much as parsing the file (a quarter to a third of a warm index's time):
//! the buffers are allocated on the store's reading threads and freed on
//! the parsing threads, and the allocator kept taking new pages instead of
//! the ones just freed. The pool holds at most [`POOL_BYTES`] of buffers,
//! each at most [`BUFFER_MAX`] bytes: what waits here is never more than
//! what was in flight at once, within those bounds.

use std::sync::Mutex;

/// At most this many bytes of buffers wait in the pool.
const POOL_BYTES: usize = 64 << 20;

/// Buffers hold a power of two of bytes, from 4 KiB up to this (a larger
/// buffer is let go, not kept).
pub const BUFFER_MAX: usize = 2 << 20;
const SMALLEST: u32 = 12;
const CLASSES: usize = (BUFFER_MAX.trailing_zeros() - SMALLEST + 1) as usize;

struct Pool {
    /// The free buffers by size: `free[c]` holds `1 << (SMALLEST + c)`
    /// bytes each (so that a buffer taken never grows, which is a fresh
    /// allocation again).
    free: [Vec<Vec<u8>>; CLASSES],
    /// The capacity of the buffers in `free`.
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: [const { Vec::new() }; CLASSES],
    bytes: 0,
});

/// The size class of a buffer for `len` bytes, if it is pooled.
fn class(len: usize) -> Option<usize> {
    let bits = len
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .max(SMALLEST);
    let c = (bits - SMALLEST) as usize;
    (c < CLASSES).then_some(c)
}

/// An empty buffer with room for at least `len` bytes.
pub fn take(len: usize) -> Vec<u8> {
    let Some(c) = class(len) else {
        return Vec::with_capacity(len);
    };
    let pooled = POOL.lock().ok().and_then(|mut p| {
        let b = p.free[c].pop()?;
        p.bytes -= b.capacity();
        Some(b)
    });
    match pooled {
        Some(mut b) => {
            b.clear();
            b
        }
        None => Vec::with_capacity(1 << (SMALLEST as usize + c)),
    }
}

/// Gives a buffer back for the next read (its content is overwritten
/// before anyone reads it again: [`take`] hands it out empty). Only
/// buffers [`take`] made are kept.
pub fn give(b: Vec<u8>) {
    let cap = b.capacity();
    let Some(c) = class(cap).filter(|&c| cap == 1 << (SMALLEST as usize + c)) else {
        return;
    };
    if let Ok(mut p) = POOL.lock()
        && p.bytes + cap <= POOL_BYTES
    {
        p.bytes += cap;
        p.free[c].push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_with_room_and_the_pool_stays_bounded() {
        for len in [0, 1, 4095, 4096, 4097, 30_000, 1 << 20, (1 << 20) + 1] {
            let mut b = take(len);
            assert!(b.is_empty() && b.capacity() >= len, "{len}");
            b.extend_from_slice(b"personal data");
            give(b);
            // Whichever buffer comes back (other tests share the pool),
            // it is empty and has the room asked for.
            let again = take(len);
            assert!(again.is_empty() && again.capacity() >= len, "{len}");
            give(again);
        }
        // Too large to keep, or not made here: not pooled.
        give(Vec::with_capacity(BUFFER_MAX * 2));
        give(Vec::with_capacity(5000));
        let huge = take(BUFFER_MAX + 1);
        assert!(huge.capacity() > BUFFER_MAX);
        give(huge);
        let p = POOL.lock().unwrap();
        assert!(p.bytes <= POOL_BYTES);
        let held: usize = p.free.iter().flatten().map(Vec::capacity).sum();
        assert_eq!(p.bytes, held);
        for (c, free) in p.free.iter().enumerate() {
            assert!(
                free.iter()
                    .all(|b| b.capacity() == 1 << (SMALLEST as usize + c))
            );
        }
    }
}
