//! `inspect` on arbitrary PEM: parse certificates and read every field it shows.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = meshca::parse_certificates(data, "fuzz.pem") {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let views: Vec<_> = certs.iter().map(|c| meshca_ops::describe::cert_view(c, now)).collect();
        let mut out = String::new();
        meshca_ops::describe::write_tree(&mut out, &certs, &views, "");
        for c in &certs {
            let _ = (c.authority_key_id(), c.subject_key_id(), c.uri_sans(), c.is_self_signed());
        }
    }
});
