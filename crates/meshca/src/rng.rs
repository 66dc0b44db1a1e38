//! The one randomness seam. Every issuing function takes `&mut dyn Entropy`: any RustCrypto
//! `CryptoRngCore` (e.g. a seeded ChaCha in tests, for reproducible keys and serials) is one,
//! and [`OsRng`], the operating system's generator, is one that also knows a faster way to make
//! ECDSA keys (ring's, which reads the OS generator itself).

use rand_core::{CryptoRngCore, RngCore};
use zeroize::Zeroizing;

use crate::key::KeyAlgorithm;

/// A source of randomness for keys and serial numbers.
pub trait Entropy {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
    /// This source as a RustCrypto RNG (RSA and portable ECDSA key generation).
    fn rng(&mut self) -> &mut dyn CryptoRngCore;
    /// A new ECDSA key as PKCS#8 from a faster generator, if this source has one; `None` makes
    /// the caller derive the key from [`Entropy::rng`].
    fn ecdsa_pkcs8(&mut self, alg: KeyAlgorithm) -> Option<Zeroizing<Vec<u8>>> {
        let _ = alg;
        None
    }
}

impl<R: CryptoRngCore> Entropy for R {
    fn fill(&mut self, dest: &mut [u8]) {
        self.fill_bytes(dest);
    }
    fn rng(&mut self) -> &mut dyn CryptoRngCore {
        self
    }
}

/// The operating system's generator: what callers outside tests pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRng;

impl Entropy for OsRng {
    fn fill(&mut self, dest: &mut [u8]) {
        rand_core::OsRng.fill_bytes(dest);
    }
    fn rng(&mut self) -> &mut dyn CryptoRngCore {
        // rand_core's OsRng is a zero-sized handle: leaking a box of it allocates nothing.
        Box::leak(Box::new(rand_core::OsRng))
    }
    fn ecdsa_pkcs8(&mut self, alg: KeyAlgorithm) -> Option<Zeroizing<Vec<u8>>> {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
        let ring_alg = match alg {
            KeyAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            KeyAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            _ => return None,
        };
        let doc = EcdsaKeyPair::generate_pkcs8(ring_alg, &ring::rand::SystemRandom::new()).ok()?;
        Some(Zeroizing::new(doc.as_ref().to_vec()))
    }
}
