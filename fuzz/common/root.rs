//! What the signing fuzz targets share: one root CA, made once, and the instant it signs at.

use std::sync::OnceLock;

use rand_core::SeedableRng;

/// A P-256 root made from a fixed seed, and a time inside its validity.
pub fn signer() -> &'static (meshca::SigningCa, time::OffsetDateTime) {
    static S: OnceLock<(meshca::SigningCa, time::OffsetDateTime)> = OnceLock::new();
    S.get_or_init(|| {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        (meshca::SigningCa::generate_root(&meshca::RootParams::default(), &mut rng, now).expect("root"), now)
    })
}
