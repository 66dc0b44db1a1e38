//! CSR parsing, and signing whatever parses.
#![no_main]
use std::sync::OnceLock;

use rand_core::SeedableRng;

fn signer() -> &'static (meshca::SigningCa, time::OffsetDateTime) {
    static S: OnceLock<(meshca::SigningCa, time::OffsetDateTime)> = OnceLock::new();
    S.get_or_init(|| {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        (meshca::SigningCa::generate_root(&meshca::RootParams::default(), &mut rng, now).expect("root"), now)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = meshca::Csr::from_pem(data, "fuzz.csr") {
        let (ca, now) = signer();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        ca.sign_intermediate_csr(&csr, &meshca::IntermediateParams::new("fuzz"), &mut rng, *now)
            .expect("a parsed CSR signs");
    }
});
