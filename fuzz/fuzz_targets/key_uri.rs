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
        Err(e) => {
            // The messages' own fixed example is not an echo of the input.
            let shown = e.to_string().replace("pkcs11:token=meshca;object=root-ca", "");
            // A refused URI of some length is never echoed whole.
            if text.len() > 24 && !text.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                assert!(!shown.contains(text), "echoed: {shown}");
            }
        }
    }
});
