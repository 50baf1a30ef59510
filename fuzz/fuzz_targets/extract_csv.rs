#![no_main]
//! The CSV extractor on arbitrary bytes, with and without a delimiter.
use libfuzzer_sys::fuzz_target;
use lethe::index::extract;

fuzz_target!(|data: &[u8]| {
    let _ = extract::csv(data, "LeadId", None, 1 << 16);
    let _ = extract::csv(data, "id", Some(b';'), 1 << 16);
});
