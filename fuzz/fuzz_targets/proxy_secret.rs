//! Sidecar secret dumps (JSON or YAML) as `meshca verify --proxy-secret` and `inspect` read them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = meshca_ops::proxy::parse(text, "fuzz.json");
    }
});
