#![no_main]
//! Both JSON evaluators on arbitrary bytes: no panic, bounded work, and the
//! streaming one agrees with the whole-document one where both succeed,
//! records included.
use libfuzzer_sys::fuzz_target;
use lethe::index::{extract, jsonstream};

fuzz_target!(|data: &[u8]| {
    for (p, record) in [
        ("$.id", None),
        ("$.records[*].attributes.referenceId", Some(2)),
        ("$[0]", None),
        ("$.*", None),
        ("$[*].id", Some(1)),
    ] {
        let path = serde_json_path::JsonPath::parse(p).unwrap();
        let steps = jsonstream::simple_path(p).unwrap();
        let streamed = jsonstream::extract(data, &steps, record);
        let whole = extract::json_whole(data, &path, record, 1 << 20);
        if let (Ok(s), Ok(w)) = (streamed, whole) {
            assert_eq!(s, w, "evaluators disagree on {p}");
        }
    }
});
