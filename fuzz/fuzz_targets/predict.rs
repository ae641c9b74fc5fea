//! Level prediction on arbitrary bytes: no panic, no hang (libFuzzer reports a slow input),
//! and the rules that hold whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = pyclink::python::predict::predict(data);
    // `__debug__` anywhere in the bytes keeps level 1 compiled.
    if memmem(data, b"__debug__") {
        assert!(!p.same.level1_is_level0());
    }
    // Only a non-ASCII byte can make a non-ASCII name.
    if data.is_ascii() {
        assert!(!p.non_ascii_names);
    }
});

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
