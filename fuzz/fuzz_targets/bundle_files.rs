//! A bundle from a file map, either layout: byte 0 picks the layout, NUL separates files.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meshca_fuzz_support::bundle(data));

mod meshca_fuzz_support {
    const ISTIO: [&str; 4] = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"];
    const TLS: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];

    pub(crate) fn bundle(data: &[u8]) {
        let Some((&sel, rest)) = data.split_first() else { return };
        let names: &[&str] = if sel % 2 == 0 { &ISTIO } else { &TLS };
        let files: meshca::Files = names.iter().zip(rest.split(|&b| b == 0)).map(|(n, d)| (*n, d.to_vec())).collect();
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        if let Ok(b) = meshca::Cacerts::from_files(&files, now) {
            // A bundle that parsed must serialise and parse again to the same thing.
            let again = meshca::Cacerts::from_files(&b.to_files(meshca::Layout::Istio), now).expect("round trip");
            assert_eq!(again.path(), b.path());
            // The same chain judged without its key must agree.
            let t = meshca::TrustChain::from_pems(
                &again.to_files(meshca::Layout::Istio).get("cert-chain.pem").unwrap_or_default(),
                &again.to_files(meshca::Layout::Istio).get("root-cert.pem").unwrap_or_default(),
                now,
            )
            .expect("public chain of a valid bundle");
            assert_eq!(t.path(), b.path());
        }
        // The public-chain reader on its own (cert-chain.pem and root-cert.pem of the input).
        if let (Some(chain), Some(roots)) = (files.get("cert-chain.pem"), files.get("root-cert.pem")) {
            let _ = meshca::TrustChain::from_pems(chain, roots, now);
        }
    }
}
