//! CSR parsing, and signing whatever parses.
#![no_main]
#[path = "../common/root.rs"]
mod root;

use rand_core::SeedableRng;
use root::signer;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = meshca::Csr::from_pem(data, "fuzz.csr") {
        let (ca, now) = signer();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        ca.sign_intermediate_csr(&csr, &meshca::IntermediateParams::new("fuzz"), &mut rng, *now)
            .expect("a parsed CSR signs");
    }
});
