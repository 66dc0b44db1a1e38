//! `inspect` on arbitrary PEM: parse certificates and read every field it shows.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = meshca::parse_certificates(data, "fuzz.pem") {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        // The data inspect shows: each certificate's view, and who issued whom (the CLI draws
        // the tree from these; its drawing is bounded by the render tests).
        let views: Vec<_> = certs.iter().map(|c| meshca_ops::describe::cert_view(c, now)).collect();
        let parents = meshca_ops::describe::issuers(&certs);
        assert_eq!((views.len(), parents.len()), (certs.len(), certs.len()));
        assert!(parents.iter().enumerate().all(|(i, p)| p.is_none_or(|p| p != i && p < certs.len())));
        for c in &certs {
            let _ = (c.authority_key_id(), c.subject_key_id(), c.uri_sans(), c.is_self_signed());
        }
    }
});
