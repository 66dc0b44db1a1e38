//! The one randomness seam. Every issuing function takes `&mut dyn Entropy`: any RustCrypto
//! `CryptoRngCore` (e.g. a seeded ChaCha in tests, for reproducible keys and serials) is one,
//! and [`OsRng`], the operating system's generator, is one that also knows faster ways to make
//! keys: AWS-LC's generators (feature `aws-lc`, on by default), else ring's for ECDSA, which
//! read the OS generator themselves. A seeded source always uses the portable generators, so
//! its keys stay reproducible.

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
    /// An independent source for another thread, if this one can make one without giving up
    /// anything (the OS generator can). `None` (the default, and what a seeded source says, so
    /// that its keys stay reproducible) makes callers work on one thread.
    fn fork(&mut self) -> Option<Box<dyn Entropy + Send>> {
        None
    }
    /// A new key from a generator that hands it over ready to sign with, if this source has one
    /// ([`OsRng`] with AWS-LC, for ECDSA: no PKCS#8 round trip). `None` (the default) makes the
    /// caller try [`Entropy::ecdsa_pkcs8`], [`Entropy::rsa_pkcs8`], then [`Entropy::rng`].
    fn key(&mut self, alg: KeyAlgorithm) -> Option<crate::Result<crate::PrivateKey>> {
        let _ = alg;
        None
    }
    /// A new RSA key of `bits` bits as PKCS#8 from a faster generator, if this source has one;
    /// `None` makes the caller derive the key from [`Entropy::rng`].
    fn rsa_pkcs8(&mut self, bits: usize) -> Option<Zeroizing<Vec<u8>>> {
        let _ = bits;
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
    fn fork(&mut self) -> Option<Box<dyn Entropy + Send>> {
        Some(Box::new(OsRng))
    }
    fn rng(&mut self) -> &mut dyn CryptoRngCore {
        // rand_core's OsRng is a zero-sized handle: leaking a box of it allocates nothing.
        Box::leak(Box::new(rand_core::OsRng))
    }
    #[cfg(feature = "aws-lc")]
    fn key(&mut self, alg: KeyAlgorithm) -> Option<crate::Result<crate::PrivateKey>> {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
        let lc_alg = match alg {
            KeyAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            KeyAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            _ => return None,
        };
        let key = EcdsaKeyPair::generate(lc_alg).ok()?;
        Some(crate::PrivateKey::from_fresh_ecdsa(alg, key))
    }

    #[cfg(feature = "aws-lc")]
    fn ecdsa_pkcs8(&mut self, alg: KeyAlgorithm) -> Option<Zeroizing<Vec<u8>>> {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
        let lc_alg = match alg {
            KeyAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            KeyAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            _ => return None,
        };
        let doc = EcdsaKeyPair::generate(lc_alg).and_then(|k| k.to_pkcs8v1()).ok()?;
        Some(Zeroizing::new(doc.as_ref().to_vec()))
    }

    #[cfg(not(feature = "aws-lc"))]
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

    /// AWS-LC's RSA key generation (by median 2.5 to 3 times faster than the portable `rsa`
    /// crate's prime search), raced on the cores no other key is using (`rsa_keygen`).
    #[cfg(feature = "aws-lc")]
    fn rsa_pkcs8(&mut self, bits: usize) -> Option<Zeroizing<Vec<u8>>> {
        match bits {
            2048 | 3072 | 4096 => crate::rsa_keygen::generate(bits),
            _ => None,
        }
    }
}
