//! SoftHSM2 for tests: the module when it is installed, and a fresh token per test.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, when the module is initialised, and a module is
//! initialised once per process; so a test process gets one temporary configuration (set before
//! the module is first loaded) and every test makes its own token in it. Tests that run the CLI
//! give each child process its own configuration instead (see the CLI tests).
//!
//! When the module is absent, `softhsm()` returns `None` and the caller says so loudly (the
//! test command prints which PKCS#11 tests were skipped); `MESHCA_REQUIRE_SOFTHSM=1` (set by
//! `.ci/run`) turns that into a failure.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

/// The user PIN every test token gets.
pub const PIN: &str = "4711-meshca";
const SO_PIN: &str = "so-4711-meshca";

/// Where SoftHSM2's module is, if installed (`MESHCA_TEST_PKCS11_MODULE` overrides).
pub fn module_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESHCA_TEST_PKCS11_MODULE") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
        "/opt/homebrew/lib/softhsm/libsofthsm2.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// The process's SoftHSM: its module and token directory.
#[derive(Debug)]
pub struct SoftHsm {
    pub module: PathBuf,
    pub tokens: PathBuf,
}

/// SoftHSM for this process, or `None` (printed) when it is not installed.
pub fn softhsm(test: &str) -> Option<&'static SoftHsm> {
    static HSM: OnceLock<Option<SoftHsm>> = OnceLock::new();
    let hsm = HSM.get_or_init(|| {
        let module = module_path()?;
        let dir = std::env::temp_dir().join(format!("meshca-softhsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
        )
        .unwrap();
        // Before the module is loaded anywhere in this process (it reads the variable once).
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Some(SoftHsm { module, tokens })
    });
    if hsm.is_none() {
        assert!(
            std::env::var_os("MESHCA_REQUIRE_SOFTHSM").is_none(),
            "{test}: SoftHSM2 is required (MESHCA_REQUIRE_SOFTHSM) but libsofthsm2.so was not found"
        );
        eprintln!("SKIPPED {test}: SoftHSM2 is not installed (apt-get install softhsm2)");
    }
    hsm.as_ref()
}

impl SoftHsm {
    /// Initialises a new token (label unique in this process) with [`PIN`] as its user PIN.
    pub fn new_token(&self, tag: &str) -> String {
        static SERIAL: Mutex<()> = Mutex::new(());
        static N: AtomicUsize = AtomicUsize::new(0);
        let label = format!("{tag}-{}", N.fetch_add(1, Ordering::SeqCst));
        let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let ctx = meshca_ops::pkcs11::module(&self.module).unwrap();
        let slot = ctx
            .get_all_slots()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).map(|t| !t.token_initialized()).unwrap_or(false))
            .expect("SoftHSM always offers one uninitialised slot");
        ctx.init_token(slot, &AuthPin::from(SO_PIN), &label).unwrap();
        let session = ctx.open_rw_session(slot).unwrap();
        session.login(UserType::So, Some(&AuthPin::from(SO_PIN))).unwrap();
        session.init_pin(&AuthPin::from(PIN)).unwrap();
        session.logout().unwrap();
        label
    }
}
