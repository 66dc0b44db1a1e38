//! RSA key generation on every free core: AWS-LC's own generator (FIPS 186-4 B.3.3, the one
//! `aws_lc_rs::rsa::KeyPair::generate` runs), raced on several threads when one key is wanted.
//!
//! Nearly all of an RSA key's time is its prime search, whose length varies from key to key;
//! the first of N independent searches to finish is on average much faster than one. The
//! losers stop at their next candidate: AWS-LC calls a progress callback for every candidate and
//! every Miller-Rabin round, and a callback that returns 0 ends the search. The key that wins is
//! an ordinary AWS-LC key; nothing about how it is made changes. Taking the first to finish does
//! not skew which keys come out: AWS-LC draws every candidate afresh (it does not step from a
//! random start), so how long a search took says nothing about the primes it found.
//!
//! Only idle cores join: a process-wide count of keys being generated divides the cores, so the
//! workers of a large reconcile (one key each, as many as cores) each search alone, as before,
//! and a single call (the CLI, the Python binding, a reconcile with one cluster to issue) gets
//! the whole machine. A helper that finds the machine busier than when it started gives up.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use aws_lc_sys as sys;
use zeroize::Zeroizing;

/// Keys being generated in this process right now (each by one or more threads).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// At most this many threads race for one key: past it, the expected gain is a few percent.
const MAX_LANES: usize = 8;

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many threads should search for one key when `in_flight` keys (this one included) are
/// being made on `cores` cores.
pub(crate) fn lanes(cores: usize, in_flight: usize) -> usize {
    (cores / in_flight.max(1)).clamp(1, MAX_LANES)
}

/// One thread's part in a race: `index` 0 is the caller's thread, which never gives up on its
/// own; helpers give up once the cores they were counted on are needed by other keys.
struct Lane<'a> {
    won: &'a AtomicBool,
    index: usize,
    cores: usize,
}

impl Lane<'_> {
    fn keep_going(&self) -> bool {
        if self.won.load(Ordering::Acquire) {
            return false;
        }
        self.index == 0 || self.index < lanes(self.cores, IN_FLIGHT.load(Ordering::Relaxed))
    }
}

/// AWS-LC's progress callback: 1 goes on, 0 stops the search (`RSA_generate_key_ex` then fails).
unsafe extern "C" fn progress(_event: c_int, _n: c_int, cb: *mut sys::BN_GENCB) -> c_int {
    // SAFETY: `one_key` set the argument to a `Lane` that outlives the generation, and nothing
    // else uses this callback.
    let lane = unsafe { &*(sys::BN_GENCB_get_arg(cb) as *const Lane<'_>) };
    c_int::from(lane.keep_going())
}

/// An AWS-LC object freed by its own function when dropped (unless released).
struct Owned<T> {
    ptr: *mut T,
    free: unsafe extern "C" fn(*mut T),
}

impl<T> Owned<T> {
    fn new(ptr: *mut T, free: unsafe extern "C" fn(*mut T)) -> Option<Self> {
        (!ptr.is_null()).then_some(Owned { ptr, free })
    }

    fn release(mut self) -> *mut T {
        std::mem::replace(&mut self.ptr, std::ptr::null_mut())
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` came from the allocator `free` belongs to and is freed only here.
            unsafe { (self.free)(self.ptr) }
        }
    }
}

/// One search for a key of `bits` bits with e = 65537, as PKCS#8 DER; `None` when the lane
/// was told to stop (or AWS-LC failed).
fn one_key(bits: c_int, lane: &Lane<'_>) -> Option<Zeroizing<Vec<u8>>> {
    // SAFETY: every pointer is checked for null and owned by a guard that frees it once; the
    // callback argument is `lane`, which outlives the call that uses it; the CBB is initialised
    // before use and cleaned up on every path; the output buffer is copied, then cleansed and
    // freed by AWS-LC's allocator (`OPENSSL_free` clears what it frees).
    unsafe {
        let e = Owned::new(sys::BN_new(), sys::BN_free)?;
        if sys::BN_set_word(e.ptr, 65537) != 1 {
            return None;
        }
        let cb = Owned::new(sys::BN_GENCB_new(), sys::BN_GENCB_free)?;
        sys::BN_GENCB_set(cb.ptr, Some(progress), lane as *const Lane<'_> as *mut c_void);
        let rsa = Owned::new(sys::RSA_new(), sys::RSA_free)?;
        if sys::RSA_generate_key_ex(rsa.ptr, bits, e.ptr, cb.ptr) != 1 {
            sys::ERR_clear_error();
            return None;
        }
        let pkey = Owned::new(sys::EVP_PKEY_new(), sys::EVP_PKEY_free)?;
        if sys::EVP_PKEY_assign_RSA(pkey.ptr, rsa.ptr) != 1 {
            return None;
        }
        let _owned_by_pkey = rsa.release();
        let mut cbb: sys::CBB = std::mem::zeroed();
        if sys::CBB_init(&mut cbb, 4096) != 1 {
            return None;
        }
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        if sys::EVP_marshal_private_key(&mut cbb, pkey.ptr) != 1 || sys::CBB_finish(&mut cbb, &mut out, &mut len) != 1 {
            sys::CBB_cleanup(&mut cbb);
            return None;
        }
        let der = Zeroizing::new(std::slice::from_raw_parts(out, len).to_vec());
        sys::OPENSSL_free(out.cast());
        Some(der)
    }
}

/// Decrements [`IN_FLIGHT`] however the generation ends.
struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A new RSA key of `bits` bits (2048, 3072 or 4096) as PKCS#8 DER, from as many threads as
/// there are idle cores; `None` if AWS-LC failed.
pub(crate) fn generate(bits: usize) -> Option<Zeroizing<Vec<u8>>> {
    let bits = c_int::try_from(bits).ok()?;
    let in_flight = IN_FLIGHT.fetch_add(1, Ordering::Relaxed) + 1;
    let _counted = InFlight;
    let cores = cores();
    let won = AtomicBool::new(false);
    let first: Mutex<Option<Zeroizing<Vec<u8>>>> = Mutex::new(None);
    let run = |index: usize| {
        let lane = Lane { won: &won, index, cores };
        if let Some(key) = one_key(bits, &lane) {
            if let Ok(mut slot) = first.lock() {
                if slot.is_none() {
                    *slot = Some(key);
                }
            }
            won.store(true, Ordering::Release);
        }
    };
    // The scope joins the helpers: each stops within one candidate (a Miller-Rabin round at
    // most) after the winner sets `won`.
    std::thread::scope(|s| {
        for index in 1..lanes(cores, in_flight) {
            let run = &run;
            // A thread that cannot be started is a helper less, not a failure.
            let _ = std::thread::Builder::new().name("meshca-rsa".into()).spawn_scoped(s, move || run(index));
        }
        run(0);
    });
    first.into_inner().ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_cores_are_shared_between_the_keys_being_made() {
        assert_eq!(lanes(1, 1), 1);
        assert_eq!(lanes(2, 1), 2);
        assert_eq!(lanes(2, 2), 1, "two reconcile workers on two cores: one thread each, as before");
        assert_eq!(lanes(2, 3), 1);
        assert_eq!(lanes(8, 3), 2);
        assert_eq!(lanes(64, 1), MAX_LANES);
        assert_eq!(lanes(4, 0), 4);
    }

    #[test]
    fn a_lane_stops_when_the_race_is_won_and_a_helper_when_cores_are_taken() {
        let won = AtomicBool::new(false);
        let caller = Lane { won: &won, index: 0, cores: 2 };
        let helper = Lane { won: &won, index: 1, cores: 2 };
        assert!(caller.keep_going());
        // Another key in flight besides this test's view of the count: two keys on two cores.
        IN_FLIGHT.fetch_add(2, Ordering::Relaxed);
        let crowded = helper.keep_going();
        IN_FLIGHT.fetch_sub(2, Ordering::Relaxed);
        assert!(!crowded, "a helper gives its core back");
        assert!(caller.keep_going(), "the caller's own search never gives up for others");
        won.store(true, Ordering::Release);
        assert!(!caller.keep_going());
        assert!(one_key(2048, &caller).is_none(), "a search told to stop returns nothing");
    }

    /// The keys are AWS-LC's and whole: each loads (ring, another implementation, checks the
    /// private key's consistency), has the size asked for, and signs what verifies.
    #[test]
    fn raced_keys_are_complete_rsa_keys_of_the_asked_size() {
        let keys: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(|| generate(2048).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let one_more = generate(3072).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let mut moduli = Vec::new();
        for (der, bits) in keys.iter().map(|k| (k, 2048)).chain([(&one_more, 3072)]) {
            let pair = ring::signature::RsaKeyPair::from_pkcs8(der).unwrap();
            assert_eq!(pair.public().modulus_len() * 8, bits);
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, b"tbs", &mut sig).unwrap();
            ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, pair.public())
                .verify(b"tbs", &sig)
                .unwrap();
            moduli.push(pair.public().as_ref().to_vec());
        }
        moduli.sort();
        moduli.dedup();
        assert_eq!(moduli.len(), 4, "every key is its own");
        assert_eq!(IN_FLIGHT.load(Ordering::Relaxed), 0, "every generation is counted out");
    }
}
