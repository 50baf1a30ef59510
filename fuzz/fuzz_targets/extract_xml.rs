#![no_main]
//! The XML extractor on arbitrary bytes: no panic, no expansion, bounded.
use libfuzzer_sys::fuzz_target;
use lethe::config::rules::XmlPath;
use lethe::index::extract;

fuzz_target!(|data: &[u8]| {
    for p in ["/Quotation/ID", "//ID", "/a/@id"] {
        let path = XmlPath::parse(p).unwrap();
        let _ = extract::xml(data, &path, None, 1 << 16);
    }
});
