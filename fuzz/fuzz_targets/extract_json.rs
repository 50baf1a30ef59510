#![no_main]
//! Both JSON evaluators on arbitrary bytes: no panic, bounded work, and the
//! streaming one agrees with the whole-document one where both succeed.
use libfuzzer_sys::fuzz_target;
use lethe::index::{extract, jsonstream};

fuzz_target!(|data: &[u8]| {
    for p in ["$.id", "$.records[*].attributes.referenceId", "$[0]", "$.*"] {
        let path = serde_json_path::JsonPath::parse(p).unwrap();
        let steps = jsonstream::simple_path(p).unwrap();
        let streamed = jsonstream::extract(data, &steps);
        let whole = extract::json_whole(data, &path, 1 << 20);
        if let (Ok(s), Ok(w)) = (streamed, whole) {
            assert_eq!(s, w, "evaluators disagree on {p}");
        }
    }
});
