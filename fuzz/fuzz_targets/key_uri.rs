//! A PKCS#11 key URI (a `ca-key.uri` file, the policy's `pkcs11.uri`, `--key-uri`): what parses
//! prints in its canonical form and parses back to the same value; what does not is refused
//! without its text in the message.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match meshca_ops::pkcs11::KeyUri::parse(text) {
        Ok(uri) => {
            let printed = uri.to_string();
            assert_eq!(meshca_ops::pkcs11::KeyUri::parse(&printed).ok(), Some(uri), "{printed}");
        }
        Err(_) => {
            // A refused URI is never echoed whole. Checked with a marker that no message holds
            // appended to the input: the fuzzer also finds inputs that are pieces of the fixed
            // messages themselves, which a message "contains" without echoing anything
            // (testdata/fuzz-regressions/key_uri-fixed-message).
            let marked = format!("{text}\u{2603}");
            if let Err(e) = meshca_ops::pkcs11::KeyUri::parse(&marked) {
                let shown = e.to_string();
                assert!(!shown.contains('\u{2603}'), "echoed: {shown}");
            }
        }
    }
});
