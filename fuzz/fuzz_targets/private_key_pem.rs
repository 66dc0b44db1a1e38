//! Private key import, every PEM format.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(k) = meshca::PrivateKey::from_pem(data, "fuzz") {
        let again = meshca::PrivateKey::from_pem(k.to_pkcs8_pem().as_bytes(), "again").expect("export re-imports");
        assert_eq!(again.public_key_raw(), k.public_key_raw());
    }
});
