//! A `ca-crl.pem` as read from a bundle or the revocation list's Secret: parse every CRL and
//! read every field meshca shows or acts on (entries, number, the issuer's cluster and serial).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(crls) = meshca::Crl::from_pem_all(data, "ca-crl.pem") {
        for c in &crls {
            let _ = (c.issuer(), c.this_update(), c.next_update(), c.entries(), c.number());
            let _ = c.issuer_cluster_and_serial();
        }
    }
});
