#![allow(clippy::unwrap_used)]
//! Name constraints and path building, judged as the public x509-limbo suite judges them (RFC
//! 5280 6.1 and 4.2.1.10): certificates made here with the system OpenSSL, each case once as a
//! `cacerts` bundle or a workload chain, and the independent rustls-webpki where it has a view.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use meshca::{Cacerts, Certificate, Error, Files};
use time::{Duration, OffsetDateTime};

/// A scratch PKI made with `openssl`: each certificate `NAME.pem` with its key `NAME.key`.
struct Pki {
    dir: PathBuf,
    serial: std::cell::Cell<u32>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                      subjectKeyIdentifier=hash\n";

impl Pki {
    /// `None` (said loudly) where no `openssl` is installed; `.ci/run` installs it.
    fn new(tag: &str) -> Option<Self> {
        if !Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success()) {
            eprintln!("SKIPPED {tag}: no openssl on PATH to make the certificates");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("meshca-limbo-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Some(Pki { dir, serial: std::cell::Cell::new(1) })
    }

    fn path(&self, name: &str, ext: &str) -> String {
        self.dir.join(format!("{name}.{ext}")).to_string_lossy().into_owned()
    }

    fn openssl(&self, args: &[&str]) {
        let o = Command::new("openssl").args(args).current_dir(&self.dir).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }

    fn key(&self, name: &str) {
        self.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &self.path(name, "ec")]);
        self.openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &self.path(name, "ec"), "-out", &self.path(name, "key")]);
    }

    fn config(&self, name: &str, ext: &str) -> String {
        let cnf = self.path(name, "cnf");
        std::fs::write(&cnf, format!("[req]\ndistinguished_name=dn\n[dn]\n[ext]\n{ext}")).unwrap();
        cnf
    }

    /// A self-signed root.
    fn root(&self, name: &str, subject: &str, extra: &str) -> Certificate {
        self.key(name);
        let cnf = self.config(name, &format!("{CA_EXT}{extra}"));
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &self.path(name, "key"),
            "-subj",
            subject,
            "-days",
            "3650",
            "-config",
            &cnf,
            "-extensions",
            "ext",
            "-out",
            &self.path(name, "pem"),
        ]);
        self.cert(name)
    }

    /// A certificate for `subject` with the key `key_of` (made when missing), signed by `issuer`.
    fn issue(&self, name: &str, key_of: &str, subject: &str, issuer: &str, days: u32, ext: &str) -> Certificate {
        if !Path::new(&self.path(key_of, "key")).exists() {
            self.key(key_of);
        }
        let cnf = self.config(name, &format!("{ext}authorityKeyIdentifier=keyid\n"));
        let csr = self.path(name, "csr");
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &self.path(key_of, "key"),
            "-subj",
            subject,
            "-config",
            &cnf,
            "-out",
            &csr,
        ]);
        let serial = self.serial.get() + 1;
        self.serial.set(serial);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.path(issuer, "pem"),
            "-CAkey",
            &self.path(issuer, "key"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            &days.to_string(),
            "-extfile",
            &cnf,
            "-extensions",
            "ext",
            "-out",
            &self.path(name, "pem"),
        ]);
        if key_of != name {
            std::fs::copy(self.path(key_of, "key"), self.path(name, "key")).unwrap();
        }
        self.cert(name)
    }

    fn cert(&self, name: &str) -> Certificate {
        meshca::parse_certificates(&std::fs::read(self.path(name, "pem")).unwrap(), name).unwrap().remove(0)
    }

    /// The `cacerts` bundle of CA `name` (key `key_of`) under `root`.
    fn bundle(&self, name: &str, key_of: &str, root: &str, now: OffsetDateTime) -> Result<Cacerts, Error> {
        let read = |n: &str, e: &str| std::fs::read(self.path(n, e)).unwrap();
        let files: Files = [
            ("ca-cert.pem", read(name, "pem")),
            ("ca-key.pem", read(key_of, "key")),
            ("cert-chain.pem", read(name, "pem")),
            ("root-cert.pem", read(root, "pem")),
        ]
        .into_iter()
        .collect();
        Cacerts::from_files(&files, now)
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::minutes(5)
}

const LEAF_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                        extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:spiffe://cluster.local/ns/default/sa/default\n\
                        subjectKeyIdentifier=hash\n";

#[test]
fn a_self_issued_ca_is_exempt_from_the_name_constraints_above_it() {
    let Some(pki) = Pki::new("self-issued") else { return };
    pki.root("root", "/CN=Limbo Root", "nameConstraints=critical,permitted;DNS:example.com\n");
    // Key rollover: the same name as the root, a new key, a DNS name outside the root's
    // constraints. RFC 5280 6.1.3 (b), (c): a self-issued certificate that is not the last of
    // the path is exempt.
    pki.issue(
        "rollover",
        "rollover",
        "/CN=Limbo Root",
        "root",
        365,
        &format!("{CA_EXT}subjectAltName=DNS:outside.org\n"),
    );
    pki.bundle("rollover", "rollover", "root", now()).unwrap();
    // The same CA under another name is not exempt.
    pki.issue("other", "other", "/CN=Limbo Other", "root", 365, &format!("{CA_EXT}subjectAltName=DNS:outside.org\n"));
    let e = pki.bundle("other", "other", "root", now()).unwrap_err();
    assert!(matches!(e, Error::NameConstraintViolation { .. }), "{e}");
}

#[test]
fn constraints_of_a_form_meshca_does_not_evaluate_refuse_only_names_of_that_form() {
    let Some(pki) = Pki::new("othername") else { return };
    let upn = "otherName:1.3.6.1.4.1.311.20.2.3;UTF8";
    pki.root("root", "/CN=Limbo UPN Root", &format!("nameConstraints=critical,excluded;{upn}:evil@example.com\n"));
    // A CA under it with no name of that form: accepted (RFC 5280 4.2.1.10 refuses only a
    // certificate that carries such a name).
    pki.issue("plain", "plain", "/CN=Limbo Plain", "root", 365, CA_EXT);
    pki.bundle("plain", "plain", "root", now()).unwrap();
    // One that carries an otherName: refused, naming why.
    pki.issue("upn", "upn", "/CN=Limbo UPN", "root", 365, &format!("{CA_EXT}subjectAltName={upn}:x@example.com\n"));
    let e = pki.bundle("upn", "upn", "root", now()).unwrap_err();
    assert!(e.to_string().contains("does not evaluate"), "{e}");
}

#[test]
fn a_dns_name_constraint_with_a_leading_period_is_malformed() {
    let Some(pki) = Pki::new("leading-dot") else { return };
    pki.root("root", "/CN=Limbo Dot Root", "nameConstraints=critical,permitted;DNS:.example.com\n");
    pki.issue("ca", "ca", "/CN=Limbo Dot CA", "root", 365, CA_EXT);
    let e = pki.bundle("ca", "ca", "root", now()).unwrap_err();
    assert!(matches!(e, Error::MalformedNameConstraints { .. }), "{e}");
    assert!(e.to_string().contains("no leading '.'"), "{e}");
}

#[test]
fn of_two_routes_to_a_trusted_root_the_valid_one_is_found() {
    let Some(pki) = Pki::new("two-routes") else { return };
    let root = pki.root("root", "/CN=Limbo Paths Root", "");
    // One intermediate key under one name, certified twice: once for a day, once for years.
    let short = pki.issue("inter-short", "inter", "/CN=Limbo Inter", "root", 1, CA_EXT);
    let long = pki.issue("inter-long", "inter", "/CN=Limbo Inter", "root", 3650, CA_EXT);
    let leaf = pki.issue("leaf", "leaf", "/O=Limbo", "inter-long", 1000, LEAF_EXT);
    // A month on, the short one has expired; the chain offers it first.
    let at = now() + Duration::days(30);
    let chain = vec![leaf.clone(), short.clone(), long.clone()];
    let roots = vec![root];
    let v = meshca::verify_workload(&chain, &roots, at).unwrap();
    assert_eq!(v.spiffe_id.to_string(), "spiffe://cluster.local/ns/default/sa/default");
    common::webpki_verify(&chain, &roots, at).unwrap();
    // Through the expired one alone there is no valid route.
    assert!(meshca::verify_workload(&[leaf, short], &roots, at).is_err());
}
