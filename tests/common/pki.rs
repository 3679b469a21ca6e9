//! Test certificates, made fresh with rcgen and written as PEM files: a CA,
//! a server certificate for `localhost` and 127.0.0.1, two client
//! certificates (A, B) from that CA, and a rogue CA with a client
//! certificate of its own.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The PEM files of one test PKI, in a temporary folder.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(names: &[&str], cn: &str, issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();
        let (ca_pem, issuer) = ca("resi test CA");
        write("ca.pem", &ca_pem);
        for (name, sans, cn) in [
            ("server", &["localhost", "127.0.0.1"][..], "server"),
            ("client-a", &["client-a"][..], "client a"),
            ("client-b", &["client-b"][..], "client b"),
        ] {
            let (cert, key) = leaf(sans, cn, &issuer);
            write(&format!("{name}.pem"), &cert);
            write(&format!("{name}.key"), &key);
        }
        let (rogue_pem, rogue) = ca("rogue CA");
        write("rogue-ca.pem", &rogue_pem);
        let (cert, key) = leaf(&["client-a"], "client a", &rogue);
        write("rogue.pem", &cert);
        write("rogue.key", &key);
        Pki { dir }
    }

    /// The path of one of the files (`ca.pem`, `server.pem`, `server.key`,
    /// `client-a.pem`, ..., `rogue-ca.pem`, `rogue.pem`, `rogue.key`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}
