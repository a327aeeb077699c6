//! The test PKI: a trusted root, an untrusted "rogue" root, intermediates,
//! and one leaf per certificate fault the conformance matrix exercises.
//!
//! ```no_run
//! use bits_testkit::pki::{LeafKind, TestPki};
//! let pki = TestPki::shared();
//! let root_pem: &[u8] = pki.root_pem();          // the only root a backend should trust
//! let good = pki.leaf(LeafKind::Good);
//! let _ = (good.cert_pem(), good.key_pem(), good.chain_pem(), good.faults());
//! ```
//!
//! # Sharing across processes, and the CRL port
//!
//! [`TestPki::shared`] generates the PKI once per target directory and caches
//! it in `<target dir>/test-pki/pki-v1.json` (or in `$BITS_TEST_PKI_DIR`;
//! under an exclusive lock on
//! `<target dir>/test-pki/lock`, so parallel test processes never race), and
//! regenerates it when the file is missing or unreadable, or when a good
//! certificate or the fresh CRL would expire within 30 days.
//!
//! Every leaf names a CRL distribution point `http://127.0.0.1:PORT/…` where
//! PORT is fixed when the PKI is generated: a port in 20000..32000 chosen by
//! hashing the target directory (the first one free from there on; below the
//! kernel's ephemeral range, so servers bound to port 0 never take it). Every
//! process that calls [`TestPki::shared`] binds that port with `SO_REUSEPORT`
//! and serves the fresh root CRL (`/root.crl`) and intermediate CRL
//! (`/int.crl`) on it, for the life of the process; every other path is
//! 404. Any live test process can thus answer a CRL fetch. If the port is
//! held by something else, the PKI is regenerated on another port.
//!
//! The fixed-port server is shared, so it cannot be scripted and its
//! request counts mean nothing, and a process that exits while answering
//! may reset a fetch. Tests that count CRL fetches, swap CRLs, or must never
//! flake use [`TestPki::with_crl_base`] with their own
//! [`crate::crl::CrlServer`]: the same CAs, keys, serials and CRLs, with the
//! leaves and intermediates re-issued to name that server.
//!
//! # Layout
//!
//! | CA | issued by | CDP | notes |
//! |---|---|---|---|
//! | root ("bits test root CA") | itself | none | the only trusted root |
//! | rogue ("bits rogue CA") | itself | none | never trusted, never sent |
//! | intermediate | root | `/root.crl` | issues `viaint`; its CRL is `/int.crl` |
//! | unreachable-CRL CA | root | `/root.crl` | issues `crlunreachable`; no CRL of it exists anywhere |
//!
//! Leaves: see [`LeafKind`]. All use P-256 keys and SHA-256 signatures.
//!
//! Client certificates (a client root, intermediate and leaf, an unrelated
//! CA and its leaf) and the files [`TestPki::shared`] writes for them (PEM
//! with the key in the same file or apart, PKCS#8 or SEC1 keys, PKCS#12):
//! see [`client`] and [`TestPki::client_files`].

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bits_core::error::Hresult;
use bits_core::flags::SecurityFlags;
use bits_core::Thumbprint;
use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, CrlNumber, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{
    X509Builder, X509Crl, X509CrlBuilder, X509Extension, X509Name, X509Ref, X509RevokedBuilder, X509,
};
use serde::{Deserialize, Serialize};

use crate::crl::CrlServer;

pub mod client;

pub use client::{ClientCertPaths, CLIENT_CN, PKCS12_PASSWORD, UNRELATED_CN};

const DAY: i64 = 86_400;
/// Good leaves are valid from `epoch - 1 day` to `epoch + GOOD_DAYS`.
const GOOD_DAYS: i64 = 825;
/// Regenerate when a good certificate or the fresh CRL expires within this.
const MIN_REMAINING: i64 = 30 * DAY;
const CACHE_FILE: &str = "pki-v1.json";
/// The directory (next to the cache file) of the client certificate files.
const CLIENT_DIR: &str = "client-certs";
/// Overrides the cache directory of [`TestPki::shared`] (an absolute path).
pub const PKI_DIR_ENV: &str = "BITS_TEST_PKI_DIR";

/// A certificate fault, as the policy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Expired or not yet valid.
    Date,
    /// The host name (127.0.0.1) is not in the certificate.
    Cn,
    /// The chain does not end in a trusted root.
    Ca,
    /// No serverAuth extended key usage.
    Usage,
    /// Listed in its issuer's CRL (a fault only under `ENABLE_CRL_CHECK`).
    Revoked,
    /// Its CRL cannot be obtained (a fault only under `ENABLE_CRL_CHECK`).
    CrlUnreachable,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 6] = [
        Fault::Date,
        Fault::Cn,
        Fault::Ca,
        Fault::Usage,
        Fault::Revoked,
        Fault::CrlUnreachable,
    ];

    /// `DATE`, `CN`, `CA`, `USAGE`, `REVOKED`, `CRL_UNREACHABLE`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Fault::Date => "DATE",
            Fault::Cn => "CN",
            Fault::Ca => "CA",
            Fault::Usage => "USAGE",
            Fault::Revoked => "REVOKED",
            Fault::CrlUnreachable => "CRL_UNREACHABLE",
        }
    }

    /// The policy's HRESULT for a failure caused by this fault.
    pub const fn hresult(self) -> Hresult {
        match self {
            Fault::Date => Hresult::WINHTTP_SECURE_CERT_DATE_INVALID,
            Fault::Cn => Hresult::WINHTTP_SECURE_CERT_CN_INVALID,
            Fault::Ca => Hresult::WINHTTP_SECURE_INVALID_CA,
            Fault::Usage => Hresult::WINHTTP_SECURE_CERT_WRONG_USAGE,
            Fault::Revoked => Hresult::WINHTTP_SECURE_CERT_REVOKED,
            Fault::CrlUnreachable => Hresult::WINHTTP_SECURE_CERT_REV_FAILED,
        }
    }

    /// The `IGNORE_*` bit that covers this fault; 0 for the revocation
    /// faults, which nothing covers.
    pub const fn ignored_by(self) -> u32 {
        match self {
            Fault::Date => SecurityFlags::IGNORE_CERT_DATE_INVALID,
            Fault::Cn => SecurityFlags::IGNORE_CERT_CN_INVALID,
            Fault::Ca => SecurityFlags::IGNORE_UNKNOWN_CA,
            Fault::Usage => SecurityFlags::IGNORE_CERT_WRONG_USAGE,
            Fault::Revoked | Fault::CrlUnreachable => 0,
        }
    }

    /// Whether the fault exists only when `ENABLE_CRL_CHECK` is set.
    pub const fn needs_crl_check(self) -> bool {
        matches!(self, Fault::Revoked | Fault::CrlUnreachable)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which CA issues a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Issuer {
    Root,
    Rogue,
    Intermediate,
    Unreachable,
    SelfSigned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Validity {
    Current,
    Expired,
    NotYet,
}

/// The leaves of the test PKI. Unless noted: issued by the root, valid
/// now, SAN `IP:127.0.0.1` + `DNS:localhost`, EKU serverAuth, CDP
/// `/root.crl`, and the server sends the leaf alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeafKind {
    /// No fault.
    Good,
    /// Expired a month ago.
    Expired,
    /// Valid only in ten years.
    NotYet,
    /// SAN `DNS:other.example` only.
    WrongHost,
    /// Issued by the rogue CA, which is not sent.
    UnknownCa,
    /// A self-signed leaf.
    SelfSigned,
    /// EKU clientAuth only.
    ClientAuth,
    /// Listed in the root CRL.
    Revoked,
    /// Issued by the unreachable-CRL CA (sent in the chain), CDP
    /// `/unreachable.crl`, which is 404 everywhere.
    CrlUnreachable,
    /// Expired and SAN `other.example`.
    ExpWrongHost,
    /// Expired and issued by the rogue CA.
    ExpUnknownCa,
    /// SAN `other.example` and issued by the rogue CA.
    WrongHostUnknownCa,
    /// EKU clientAuth and SAN `other.example`.
    ClientWrongHost,
    /// Expired and listed in the root CRL.
    RevokedExpired,
    /// Issued by the intermediate (CDP `/int.crl`); the server sends the
    /// leaf and the intermediate.
    ViaInt,
}

struct LeafSpec {
    name: &'static str,
    issuer: Issuer,
    validity: Validity,
    right_host: bool,
    server_auth: bool,
    cdp_path: &'static str,
    faults: &'static [Fault],
}

impl LeafKind {
    /// Every leaf, in a stable order.
    pub const ALL: [LeafKind; 15] = [
        LeafKind::Good,
        LeafKind::Expired,
        LeafKind::NotYet,
        LeafKind::WrongHost,
        LeafKind::UnknownCa,
        LeafKind::SelfSigned,
        LeafKind::ClientAuth,
        LeafKind::Revoked,
        LeafKind::CrlUnreachable,
        LeafKind::ExpWrongHost,
        LeafKind::ExpUnknownCa,
        LeafKind::WrongHostUnknownCa,
        LeafKind::ClientWrongHost,
        LeafKind::RevokedExpired,
        LeafKind::ViaInt,
    ];

    const fn spec(self) -> LeafSpec {
        use Fault::*;
        use Issuer::*;
        use Validity::*;
        let (name, issuer, validity, right_host, server_auth, cdp_path, faults): (
            _,
            _,
            _,
            _,
            _,
            _,
            &'static [Fault],
        ) = match self {
            LeafKind::Good => ("good", Root, Current, true, true, "/root.crl", &[]),
            LeafKind::Expired => ("expired", Root, Expired, true, true, "/root.crl", &[Date]),
            LeafKind::NotYet => ("notyet", Root, NotYet, true, true, "/root.crl", &[Date]),
            LeafKind::WrongHost => ("wronghost", Root, Current, false, true, "/root.crl", &[Cn]),
            LeafKind::UnknownCa => ("unknownca", Rogue, Current, true, true, "/rogue.crl", &[Ca]),
            LeafKind::SelfSigned => (
                "selfsigned",
                SelfSigned,
                Current,
                true,
                true,
                "/selfsigned.crl",
                &[Ca],
            ),
            LeafKind::ClientAuth => ("clientauth", Root, Current, true, false, "/root.crl", &[Usage]),
            LeafKind::Revoked => ("revoked", Root, Current, true, true, "/root.crl", &[Revoked]),
            LeafKind::CrlUnreachable => (
                "crlunreachable",
                Unreachable,
                Current,
                true,
                true,
                "/unreachable.crl",
                &[CrlUnreachable],
            ),
            LeafKind::ExpWrongHost => (
                "exp_wronghost",
                Root,
                Expired,
                false,
                true,
                "/root.crl",
                &[Date, Cn],
            ),
            LeafKind::ExpUnknownCa => (
                "exp_unknownca",
                Rogue,
                Expired,
                true,
                true,
                "/rogue.crl",
                &[Date, Ca],
            ),
            LeafKind::WrongHostUnknownCa => (
                "wronghost_unknownca",
                Rogue,
                Current,
                false,
                true,
                "/rogue.crl",
                &[Cn, Ca],
            ),
            LeafKind::ClientWrongHost => (
                "client_wronghost",
                Root,
                Current,
                false,
                false,
                "/root.crl",
                &[Usage, Cn],
            ),
            LeafKind::RevokedExpired => (
                "revoked_expired",
                Root,
                Expired,
                true,
                true,
                "/root.crl",
                &[Revoked, Date],
            ),
            LeafKind::ViaInt => ("viaint", Intermediate, Current, true, true, "/int.crl", &[]),
        };
        LeafSpec {
            name,
            issuer,
            validity,
            right_host,
            server_auth,
            cdp_path,
            faults,
        }
    }

    /// The leaf's name (`good`, `exp_wronghost`, …), as the conformance
    /// report prints it.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// Parses a [`LeafKind::name`].
    pub fn from_name(name: &str) -> Option<LeafKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The leaf's faults. `REVOKED` and `CRL_UNREACHABLE` count only under
    /// `ENABLE_CRL_CHECK`; see [`LeafKind::effective_faults`].
    pub const fn faults(self) -> &'static [Fault] {
        self.spec().faults
    }

    /// The faults a verification under the certificate bits of `flags`
    /// meets: the revocation faults only with `ENABLE_CRL_CHECK`, and then a
    /// `CA` fault also makes the CRL impossible to check (no trusted issuer
    /// to verify it against), so it adds `CRL_UNREACHABLE`.
    pub fn effective_faults(self, flags: u32) -> Vec<Fault> {
        let crl = flags & SecurityFlags::ENABLE_CRL_CHECK != 0;
        let mut out: Vec<Fault> = self
            .faults()
            .iter()
            .copied()
            .filter(|f| crl || !f.needs_crl_check())
            .collect();
        if crl && out.contains(&Fault::Ca) && !out.contains(&Fault::CrlUnreachable) {
            out.push(Fault::CrlUnreachable);
        }
        out
    }

    /// The faults that `flags` does not cover (see
    /// [`LeafKind::effective_faults`]); empty means the request must succeed.
    pub fn uncovered_faults(self, flags: u32) -> Vec<Fault> {
        self.effective_faults(flags)
            .into_iter()
            .filter(|f| f.ignored_by() == 0 || flags & f.ignored_by() == 0)
            .collect()
    }

    fn serial(self) -> u32 {
        0x1000 + Self::ALL.iter().position(|k| *k == self).unwrap_or(0) as u32
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl fmt::Display for LeafKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A CA certificate and its key.
#[derive(Clone)]
struct Ca {
    cert: X509,
    key: PKey<Private>,
}

/// A leaf certificate, its key, and the chain its server sends.
#[derive(Clone)]
pub struct Leaf {
    kind: LeafKind,
    cert: X509,
    key: PKey<Private>,
    chain: Vec<X509>,
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("kind", &self.kind)
            .field("subject", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

impl Leaf {
    /// Which leaf this is.
    pub fn kind(&self) -> LeafKind {
        self.kind
    }

    /// The leaf's name (`good`, …).
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The leaf's faults ([`LeafKind::faults`]).
    pub fn faults(&self) -> &'static [Fault] {
        self.kind.faults()
    }

    /// The certificate.
    pub fn cert(&self) -> &X509 {
        &self.cert
    }

    /// The private key.
    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }

    /// The certificates the server sends after the leaf (an intermediate, or
    /// nothing).
    pub fn chain(&self) -> &[X509] {
        &self.chain
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert.to_pem().expect("encode certificate")
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.to_der().expect("encode certificate")
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> Vec<u8> {
        self.key.private_key_to_pem_pkcs8().expect("encode key")
    }

    /// The leaf followed by [`Leaf::chain`], PEM: what a server sends.
    pub fn chain_pem(&self) -> Vec<u8> {
        let mut out = self.cert_pem();
        for c in &self.chain {
            out.extend(c.to_pem().expect("encode certificate"));
        }
        out
    }
}

/// The whole test PKI. Cheap to clone (OpenSSL objects are reference-counted).
#[derive(Clone)]
pub struct TestPki {
    epoch: i64,
    crl_base: String,
    root: Ca,
    rogue: Ca,
    intermediate: Ca,
    unreachable: Ca,
    leaves: Vec<Leaf>,
    root_crl: Arc<X509Crl>,
    intermediate_crl: Arc<X509Crl>,
    stale_root_crl: Arc<X509Crl>,
    badsig_root_crl: Arc<X509Crl>,
    client: client::ClientPki,
    /// Where [`TestPki::shared`] wrote the client files (`None` elsewhere).
    client_paths: Option<ClientCertPaths>,
    pem: PemCache,
}

/// Encoded forms, computed once so accessors can return slices.
#[derive(Clone, Debug, Default)]
struct PemCache {
    root_pem: Vec<u8>,
    root_der: Vec<u8>,
    rogue_pem: Vec<u8>,
    intermediate_pem: Vec<u8>,
    root_crl_der: Vec<u8>,
    root_crl_pem: Vec<u8>,
    intermediate_crl_der: Vec<u8>,
    intermediate_crl_pem: Vec<u8>,
    stale_root_crl_der: Vec<u8>,
    badsig_root_crl_der: Vec<u8>,
}

impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPki")
            .field("crl_base", &self.crl_base)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// The PKI of this test run, shared by every test process and crate
    /// using the same target directory (see the module docs), with its
    /// fixed-port CRL server started in this process.
    ///
    /// # Panics
    /// If the PKI can neither be loaded nor generated.
    pub fn shared() -> &'static TestPki {
        static SHARED: OnceLock<TestPki> = OnceLock::new();
        SHARED.get_or_init(|| match load_or_generate_shared() {
            Ok(pki) => pki,
            Err(e) => panic!("bits-testkit: cannot set up the shared test PKI: {e}"),
        })
    }

    /// The directory [`TestPki::shared`] caches the PKI in (the file is
    /// `pki-v1.json` there).
    pub fn shared_cache_dir() -> PathBuf {
        cache_dir()
    }

    /// Generates a fresh PKI in memory (nothing cached, no server started)
    /// whose CDPs start with `crl_base` (`http://127.0.0.1:PORT`).
    pub fn generate(crl_base: &str) -> Result<TestPki, ErrorStack> {
        Self::generate_at(crl_base, now())
    }

    /// [`TestPki::generate`] as if it were `epoch` (unix seconds) now.
    fn generate_at(crl_base: &str, epoch: i64) -> Result<TestPki, ErrorStack> {
        Self::generate_with_client(crl_base, epoch, client::ClientPki::generate(epoch)?)
    }

    /// [`TestPki::generate_at`] with a given client part.
    fn generate_with_client(
        crl_base: &str,
        epoch: i64,
        client: client::ClientPki,
    ) -> Result<TestPki, ErrorStack> {
        let root_key = new_key()?;
        let rogue_key = new_key()?;
        let root = self_signed_ca(&root_key, "bits test root CA", 1, epoch)?;
        let rogue = self_signed_ca(&rogue_key, "bits rogue CA", 2, epoch)?;
        let keys = Keys {
            intermediate: new_key()?,
            unreachable: new_key()?,
            leaves: LeafKind::ALL
                .iter()
                .map(|_| new_key())
                .collect::<Result<_, _>>()?,
        };
        let (intermediate, unreachable, leaves) = issue_dependents(&root, &rogue, &keys, epoch, crl_base)?;
        let crls = Crls::generate(&root, &rogue, &intermediate, epoch)?;
        Ok(TestPki::assemble(
            epoch,
            crl_base.to_owned(),
            root,
            rogue,
            intermediate,
            unreachable,
            leaves,
            crls,
            client,
        ))
    }

    /// The same CAs, keys, serials, validity and CRLs, with the
    /// intermediates and leaves re-issued so their CDPs start with
    /// `crl_base` (for example [`CrlServer::base_url`]).
    pub fn with_crl_base(&self, crl_base: &str) -> TestPki {
        let keys = Keys {
            intermediate: self.intermediate.key.clone(),
            unreachable: self.unreachable.key.clone(),
            leaves: self.leaves.iter().map(|l| l.key.clone()).collect(),
        };
        let (intermediate, unreachable, leaves) =
            issue_dependents(&self.root, &self.rogue, &keys, self.epoch, crl_base)
                .expect("re-issue the test PKI");
        let mut pki = self.clone();
        pki.crl_base = crl_base.to_owned();
        pki.intermediate = intermediate;
        pki.unreachable = unreachable;
        pki.leaves = leaves;
        pki.pem.intermediate_pem = pki.intermediate.cert.to_pem().expect("encode");
        pki
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        epoch: i64,
        crl_base: String,
        root: Ca,
        rogue: Ca,
        intermediate: Ca,
        unreachable: Ca,
        leaves: Vec<Leaf>,
        crls: Crls,
        client: client::ClientPki,
    ) -> TestPki {
        let pem = PemCache {
            root_pem: root.cert.to_pem().expect("encode"),
            root_der: root.cert.to_der().expect("encode"),
            rogue_pem: rogue.cert.to_pem().expect("encode"),
            intermediate_pem: intermediate.cert.to_pem().expect("encode"),
            root_crl_der: crls.root.to_der().expect("encode"),
            root_crl_pem: crls.root.to_pem().expect("encode"),
            intermediate_crl_der: crls.intermediate.to_der().expect("encode"),
            intermediate_crl_pem: crls.intermediate.to_pem().expect("encode"),
            stale_root_crl_der: crls.stale_root.to_der().expect("encode"),
            badsig_root_crl_der: crls.badsig_root.to_der().expect("encode"),
        };
        TestPki {
            epoch,
            crl_base,
            root,
            rogue,
            intermediate,
            unreachable,
            leaves,
            root_crl: Arc::new(crls.root),
            intermediate_crl: Arc::new(crls.intermediate),
            stale_root_crl: Arc::new(crls.stale_root),
            badsig_root_crl: Arc::new(crls.badsig_root),
            client,
            client_paths: None,
            pem,
        }
    }

    /// The CDP prefix of this PKI's certificates (`http://127.0.0.1:PORT`).
    pub fn crl_base(&self) -> &str {
        &self.crl_base
    }

    /// The trusted root certificate.
    pub fn root_cert(&self) -> &X509 {
        &self.root.cert
    }

    /// The trusted root's key (to issue extra certificates in a test).
    pub fn root_key(&self) -> &PKey<Private> {
        &self.root.key
    }

    /// The trusted root, PEM: what a backend's `add_root_pem` takes.
    pub fn root_pem(&self) -> &[u8] {
        &self.pem.root_pem
    }

    /// The trusted root, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.pem.root_der
    }

    /// The untrusted rogue root certificate.
    pub fn rogue_cert(&self) -> &X509 {
        &self.rogue.cert
    }

    /// The untrusted rogue root, PEM.
    pub fn rogue_pem(&self) -> &[u8] {
        &self.pem.rogue_pem
    }

    /// The intermediate CA (issuer of `viaint`).
    pub fn intermediate_cert(&self) -> &X509 {
        &self.intermediate.cert
    }

    /// The intermediate CA, PEM.
    pub fn intermediate_pem(&self) -> &[u8] {
        &self.pem.intermediate_pem
    }

    /// The CA that issues `crlunreachable` (no CRL of it is ever served).
    pub fn unreachable_ca_cert(&self) -> &X509 {
        &self.unreachable.cert
    }

    /// One leaf.
    pub fn leaf(&self, kind: LeafKind) -> &Leaf {
        &self.leaves[kind.index()]
    }

    /// Every leaf, in [`LeafKind::ALL`] order.
    pub fn leaves(&self) -> &[Leaf] {
        &self.leaves
    }

    /// The fresh root CRL (lists `revoked` and `revoked_expired`).
    pub fn root_crl(&self) -> &X509Crl {
        &self.root_crl
    }

    /// The fresh root CRL, DER (what `/root.crl` serves).
    pub fn root_crl_der(&self) -> &[u8] {
        &self.pem.root_crl_der
    }

    /// The fresh root CRL, PEM.
    pub fn root_crl_pem(&self) -> &[u8] {
        &self.pem.root_crl_pem
    }

    /// The fresh, empty intermediate CRL.
    pub fn intermediate_crl(&self) -> &X509Crl {
        &self.intermediate_crl
    }

    /// The intermediate CRL, DER (what `/int.crl` serves).
    pub fn intermediate_crl_der(&self) -> &[u8] {
        &self.pem.intermediate_crl_der
    }

    /// The intermediate CRL, PEM.
    pub fn intermediate_crl_pem(&self) -> &[u8] {
        &self.pem.intermediate_crl_pem
    }

    /// A root CRL whose nextUpdate is 30 days past (same entries).
    pub fn stale_root_crl(&self) -> &X509Crl {
        &self.stale_root_crl
    }

    /// The stale root CRL, DER.
    pub fn stale_root_crl_der(&self) -> &[u8] {
        &self.pem.stale_root_crl_der
    }

    /// A fresh-looking root CRL (root's issuer name and key id, same
    /// entries) signed by the rogue key: its signature does not verify.
    pub fn badsig_root_crl(&self) -> &X509Crl {
        &self.badsig_root_crl
    }

    /// The badly signed root CRL, DER.
    pub fn badsig_root_crl_der(&self) -> &[u8] {
        &self.pem.badsig_root_crl_der
    }

    /// The client root CA: what [`crate::tls::MtlsServer`] trusts for
    /// client certificates.
    pub fn client_root_cert(&self) -> &X509 {
        &self.client.root.cert
    }

    /// The client intermediate CA (issuer of the client leaf; the server
    /// does not have it, the client must send it).
    pub fn client_intermediate_cert(&self) -> &X509 {
        &self.client.intermediate.cert
    }

    /// The client leaf ([`CLIENT_CN`], EKU clientAuth).
    pub fn client_leaf_cert(&self) -> &X509 {
        &self.client.leaf
    }

    /// The client leaf's key.
    pub fn client_leaf_key(&self) -> &PKey<Private> {
        &self.client.leaf_key
    }

    /// The SHA-1 thumbprint of the client leaf (what a job stores).
    pub fn client_leaf_sha1(&self) -> Thumbprint {
        thumbprint(&self.client.leaf)
    }

    /// The leaf of the unrelated client CA ([`UNRELATED_CN`]), which no
    /// server trusts.
    pub fn unrelated_client_cert(&self) -> &X509 {
        &self.client.unrelated_leaf
    }

    /// The SHA-1 thumbprint of [`TestPki::unrelated_client_cert`].
    pub fn unrelated_client_sha1(&self) -> Thumbprint {
        thumbprint(&self.client.unrelated_leaf)
    }

    /// The unrelated client CA.
    pub fn unrelated_client_ca_cert(&self) -> &X509 {
        &self.client.unrelated.cert
    }

    /// The client certificate files of [`TestPki::shared`] (in
    /// `<cache dir>/client-certs/`).
    ///
    /// # Panics
    /// On a PKI other than [`TestPki::shared`] (only it writes files).
    pub fn client_files(&self) -> &ClientCertPaths {
        self.client_paths
            .as_ref()
            .expect("only TestPki::shared() writes the client certificate files")
    }

    /// When the good certificates expire (unix seconds).
    pub fn good_not_after_unix(&self) -> i64 {
        self.epoch + GOOD_DAYS * DAY
    }
}

// ---------------------------------------------------------------------------
// Generation

struct Keys {
    intermediate: PKey<Private>,
    unreachable: PKey<Private>,
    leaves: Vec<PKey<Private>>,
}

struct Crls {
    root: X509Crl,
    intermediate: X509Crl,
    stale_root: X509Crl,
    badsig_root: X509Crl,
}

impl Crls {
    fn generate(root: &Ca, rogue: &Ca, intermediate: &Ca, epoch: i64) -> Result<Crls, ErrorStack> {
        let revoked = [LeafKind::Revoked.serial(), LeafKind::RevokedExpired.serial()];
        let fresh = (epoch - 3600, epoch + GOOD_DAYS * DAY);
        Ok(Crls {
            root: build_crl(&root.cert, &root.key, &revoked, fresh, 1)?,
            intermediate: build_crl(&intermediate.cert, &intermediate.key, &[], fresh, 1)?,
            stale_root: build_crl(
                &root.cert,
                &root.key,
                &revoked,
                (epoch - 60 * DAY, epoch - 30 * DAY),
                0,
            )?,
            badsig_root: build_crl(&root.cert, &rogue.key, &revoked, fresh, 2)?,
        })
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn new_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn name(cn: &str) -> Result<X509Name, ErrorStack> {
    let mut n = X509Name::builder()?;
    n.append_entry_by_nid(Nid::ORGANIZATIONNAME, "bits-testkit")?;
    n.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(n.build())
}

fn time(unix: i64) -> Result<Asn1Time, ErrorStack> {
    Asn1Time::from_unix(unix as _)
}

fn serial(n: u32) -> Result<Asn1Integer, ErrorStack> {
    BigNum::from_u32(n)?.to_asn1_integer()
}

/// A DER TLV with a definite length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// `cRLDistributionPoints` with one distribution point holding one URI.
fn cdp_extension(uri: &str) -> Result<X509Extension, ErrorStack> {
    // CRLDistributionPoints ::= SEQUENCE OF DistributionPoint
    // DistributionPoint ::= SEQUENCE { distributionPoint [0] { fullName [0] { URI [6] } } }
    let value = der(
        0x30,
        &der(0x30, &der(0xA0, &der(0xA0, &der(0x86, uri.as_bytes())))),
    );
    X509Extension::new_from_der(
        &*Asn1Object::from_str("2.5.29.31")?,
        false,
        &*Asn1OctetString::new_from_bytes(&value)?,
    )
}

/// `authorityKeyIdentifier` holding `issuer`'s subject key id (for CRLs).
fn aki_extension(issuer: &X509Ref) -> Result<X509Extension, ErrorStack> {
    let keyid = issuer
        .subject_key_id()
        .map(|k| k.as_slice().to_vec())
        .unwrap_or_default();
    X509Extension::new_from_der(
        &*Asn1Object::from_str("2.5.29.35")?,
        false,
        &*Asn1OctetString::new_from_bytes(&der(0x30, &der(0x80, &keyid)))?,
    )
}

fn self_signed_ca(key: &PKey<Private>, cn: &str, serial_no: u32, epoch: i64) -> Result<Ca, ErrorStack> {
    let subject = name(cn)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    b.set_serial_number(&*serial(serial_no)?)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(&subject)?;
    b.set_pubkey(key)?;
    b.set_not_before(&*time(epoch - 3 * 365 * DAY)?)?;
    b.set_not_after(&*time(epoch + 20 * 365 * DAY)?)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(Ca {
        cert: b.build(),
        key: key.clone(),
    })
}

fn intermediate_ca(
    root: &Ca,
    key: &PKey<Private>,
    cn: &str,
    serial_no: u32,
    epoch: i64,
    crl_base: &str,
) -> Result<Ca, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    b.set_serial_number(&*serial(serial_no)?)?;
    b.set_subject_name(&*name(cn)?)?;
    b.set_issuer_name(root.cert.subject_name())?;
    b.set_pubkey(key)?;
    b.set_not_before(&*time(epoch - 2 * 365 * DAY)?)?;
    b.set_not_after(&*time(epoch + 15 * 365 * DAY)?)?;
    b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&root.cert), None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&root.cert), None))?;
    b.append_extension(aki)?;
    b.append_extension(cdp_extension(&format!("{crl_base}/root.crl"))?)?;
    b.sign(&root.key, MessageDigest::sha256())?;
    Ok(Ca {
        cert: b.build(),
        key: key.clone(),
    })
}

fn issue_leaf(
    kind: LeafKind,
    key: &PKey<Private>,
    issuer: Option<&Ca>,
    epoch: i64,
    crl_base: &str,
) -> Result<X509, ErrorStack> {
    let spec = kind.spec();
    let cn = if spec.right_host {
        "localhost"
    } else {
        "other.example"
    };
    let subject = name(cn)?;
    let (not_before, not_after) = match spec.validity {
        Validity::Current => (epoch - DAY, epoch + GOOD_DAYS * DAY),
        Validity::Expired => (epoch - 400 * DAY, epoch - 35 * DAY),
        Validity::NotYet => (epoch + 3650 * DAY, epoch + 3700 * DAY),
    };
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    b.set_serial_number(&*serial(kind.serial())?)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(issuer.map_or(&*subject, |ca| ca.cert.subject_name()))?;
    b.set_pubkey(key)?;
    b.set_not_before(&*time(not_before)?)?;
    b.set_not_after(&*time(not_after)?)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    let mut eku = ExtendedKeyUsage::new();
    if spec.server_auth {
        eku.server_auth();
    } else {
        eku.client_auth();
    }
    b.append_extension(eku.build()?)?;
    let issuer_cert = issuer.map(|ca| &*ca.cert);
    let mut san = SubjectAlternativeName::new();
    if spec.right_host {
        san.ip("127.0.0.1").dns("localhost");
    } else {
        san.dns("other.example");
    }
    let san = san.build(&b.x509v3_context(issuer_cert, None))?;
    b.append_extension(san)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer_cert, None))?;
    b.append_extension(ski)?;
    if issuer.is_some() {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(issuer_cert, None))?;
        b.append_extension(aki)?;
    }
    b.append_extension(cdp_extension(&format!("{crl_base}{}", spec.cdp_path))?)?;
    b.sign(issuer.map_or(key, |ca| &ca.key), MessageDigest::sha256())?;
    Ok(b.build())
}

fn issue_dependents(
    root: &Ca,
    rogue: &Ca,
    keys: &Keys,
    epoch: i64,
    crl_base: &str,
) -> Result<(Ca, Ca, Vec<Leaf>), ErrorStack> {
    let intermediate = intermediate_ca(
        root,
        &keys.intermediate,
        "bits test intermediate CA",
        3,
        epoch,
        crl_base,
    )?;
    let unreachable = intermediate_ca(
        root,
        &keys.unreachable,
        "bits test unreachable-CRL CA",
        4,
        epoch,
        crl_base,
    )?;
    let mut leaves = Vec::with_capacity(LeafKind::ALL.len());
    for (kind, key) in LeafKind::ALL.into_iter().zip(&keys.leaves) {
        let (issuer, chain) = match kind.spec().issuer {
            Issuer::Root => (Some(root), vec![]),
            Issuer::Rogue => (Some(rogue), vec![]),
            Issuer::Intermediate => (Some(&intermediate), vec![intermediate.cert.clone()]),
            Issuer::Unreachable => (Some(&unreachable), vec![unreachable.cert.clone()]),
            Issuer::SelfSigned => (None, vec![]),
        };
        let cert = issue_leaf(kind, key, issuer, epoch, crl_base)?;
        leaves.push(Leaf {
            kind,
            cert,
            key: key.clone(),
            chain,
        });
    }
    Ok((intermediate, unreachable, leaves))
}

fn build_crl(
    issuer: &X509,
    signing_key: &PKey<Private>,
    revoked: &[u32],
    (last, next): (i64, i64),
    number: u32,
) -> Result<X509Crl, ErrorStack> {
    let mut b = X509CrlBuilder::new()?;
    b.set_issuer_name(issuer.subject_name())?;
    b.set_last_update(&*time(last)?)?;
    b.set_next_update(&*time(next)?)?;
    for &s in revoked {
        let mut r = X509RevokedBuilder::new()?;
        r.set_serial_number(&*serial(s)?)?;
        r.set_revocation_date(&*time(last - DAY)?)?;
        b.add_revoked(r.build())?;
    }
    b.append_extension(aki_extension(issuer)?)?;
    b.append_extension(CrlNumber::new(BigNum::from_u32(number)?)?.build()?)?;
    b.sort()?;
    b.sign(signing_key, MessageDigest::sha256())?;
    b.build()
}

// ---------------------------------------------------------------------------
// The on-disk cache

#[derive(Serialize, Deserialize)]
struct CacheFile {
    epoch: i64,
    crl_port: u16,
    root_cert: String,
    root_key: String,
    rogue_cert: String,
    rogue_key: String,
    intermediate_cert: String,
    intermediate_key: String,
    unreachable_cert: String,
    unreachable_key: String,
    /// `(name, cert, key)` in [`LeafKind::ALL`] order.
    leaves: Vec<(String, String, String)>,
    root_crl: String,
    intermediate_crl: String,
    stale_root_crl: String,
    badsig_root_crl: String,
}

fn pem_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_default()
}

impl CacheFile {
    fn from_pki(pki: &TestPki, crl_port: u16) -> Result<CacheFile, ErrorStack> {
        let cert = |c: &X509| c.to_pem().map(pem_string);
        let key = |k: &PKey<Private>| k.private_key_to_pem_pkcs8().map(pem_string);
        Ok(CacheFile {
            epoch: pki.epoch,
            crl_port,
            root_cert: cert(&pki.root.cert)?,
            root_key: key(&pki.root.key)?,
            rogue_cert: cert(&pki.rogue.cert)?,
            rogue_key: key(&pki.rogue.key)?,
            intermediate_cert: cert(&pki.intermediate.cert)?,
            intermediate_key: key(&pki.intermediate.key)?,
            unreachable_cert: cert(&pki.unreachable.cert)?,
            unreachable_key: key(&pki.unreachable.key)?,
            leaves: pki
                .leaves
                .iter()
                .map(|l| Ok((l.name().to_owned(), cert(&l.cert)?, key(&l.key)?)))
                .collect::<Result<_, ErrorStack>>()?,
            root_crl: pem_string(pki.root_crl.to_pem()?),
            intermediate_crl: pem_string(pki.intermediate_crl.to_pem()?),
            stale_root_crl: pem_string(pki.stale_root_crl.to_pem()?),
            badsig_root_crl: pem_string(pki.badsig_root_crl.to_pem()?),
        })
    }

    fn into_pki(self, client: client::ClientPki) -> Result<TestPki, String> {
        let e = |e: ErrorStack| e.to_string();
        let ca = |cert: &str, key: &str| -> Result<Ca, String> {
            Ok(Ca {
                cert: X509::from_pem(cert.as_bytes()).map_err(e)?,
                key: PKey::private_key_from_pem(key.as_bytes()).map_err(e)?,
            })
        };
        let crl = |pem: &str| X509Crl::from_pem(pem.as_bytes()).map_err(e);
        let root = ca(&self.root_cert, &self.root_key)?;
        let rogue = ca(&self.rogue_cert, &self.rogue_key)?;
        let intermediate = ca(&self.intermediate_cert, &self.intermediate_key)?;
        let unreachable = ca(&self.unreachable_cert, &self.unreachable_key)?;
        if self.leaves.len() != LeafKind::ALL.len() {
            return Err("the cache has the wrong number of leaves".into());
        }
        let mut leaves = Vec::new();
        for (kind, (leaf_name, cert, key)) in LeafKind::ALL.into_iter().zip(&self.leaves) {
            if kind.name() != leaf_name {
                return Err(format!("the cache has leaf {leaf_name} where {kind} belongs"));
            }
            let chain = match kind.spec().issuer {
                Issuer::Intermediate => vec![intermediate.cert.clone()],
                Issuer::Unreachable => vec![unreachable.cert.clone()],
                _ => vec![],
            };
            leaves.push(Leaf {
                kind,
                cert: X509::from_pem(cert.as_bytes()).map_err(e)?,
                key: PKey::private_key_from_pem(key.as_bytes()).map_err(e)?,
                chain,
            });
        }
        let crls = Crls {
            root: crl(&self.root_crl)?,
            intermediate: crl(&self.intermediate_crl)?,
            stale_root: crl(&self.stale_root_crl)?,
            badsig_root: crl(&self.badsig_root_crl)?,
        };
        Ok(TestPki::assemble(
            self.epoch,
            crl_base_for(self.crl_port),
            root,
            rogue,
            intermediate,
            unreachable,
            leaves,
            crls,
            client,
        ))
    }
}

fn thumbprint(cert: &X509Ref) -> Thumbprint {
    let digest = cert
        .digest(MessageDigest::sha1())
        .expect("SHA-1 of a certificate");
    let mut out = [0u8; 20];
    out.copy_from_slice(&digest);
    Thumbprint(out)
}

fn crl_base_for(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// `$BITS_TEST_PKI_DIR` when set (absolute), else `<target dir>/test-pki`:
/// the target dir is the nearest ancestor of the running executable holding
/// cargo's `CACHEDIR.TAG`, else an absolute `CARGO_TARGET_DIR`, else the
/// system temp dir.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PKI_DIR_ENV).map(PathBuf::from) {
        if dir.is_absolute() {
            return dir;
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()) {
            return dir.join("test-pki");
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        if dir.is_absolute() {
            return dir.join("test-pki");
        }
    }
    std::env::temp_dir().join("bits-testkit-test-pki")
}

/// The first port tried for `dir`: FNV-1a of the path into 20000..32000.
fn preferred_port(dir: &Path) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.to_string_lossy().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    20_000 + (h % 12_000) as u16
}

/// The process-wide fixed-port CRL server; it lives as long as the process.
static SHARED_CRL_SERVER: OnceLock<CrlServer> = OnceLock::new();

fn still_fresh(pki: &TestPki) -> bool {
    let horizon = now() + MIN_REMAINING;
    let Ok(horizon) = time(horizon) else {
        return false;
    };
    let good = pki.leaf(LeafKind::Good).cert.not_after() > horizon;
    let notyet = pki.leaf(LeafKind::NotYet).cert.not_before() > horizon;
    let crl = pki.root_crl.next_update().is_some_and(|t| *t > horizon);
    good && notyet && crl
}

fn load_or_generate_shared() -> Result<TestPki, String> {
    let (pki, server) = load_or_generate_in(&cache_dir())?;
    let _ = SHARED_CRL_SERVER.set(server);
    Ok(pki)
}

/// Loads the PKI cached in `dir`, or generates and caches one, under the
/// directory's lock, and starts the fixed-port CRL server for it.
fn load_or_generate_in(dir: &Path) -> Result<(TestPki, CrlServer), String> {
    let dir = dir.to_owned();
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let result = load_or_generate_locked(&dir);
    let _ = lock.unlock();
    result
}

fn load_or_generate_locked(dir: &Path) -> Result<(TestPki, CrlServer), String> {
    let client = client::load_or_generate(dir)?;
    let file = dir.join(CACHE_FILE);
    let mut first_port = preferred_port(dir);
    if let Some(cache) = read_cache(&file) {
        let port = cache.crl_port;
        if let Ok(pki) = cache.into_pki(client.clone()) {
            if still_fresh(&pki) {
                if let Ok(server) = CrlServer::start_on(port, true) {
                    server.serve_pki(&pki);
                    return Ok((with_client_files(pki, dir)?, server));
                }
                first_port = port.wrapping_add(1).max(20_000);
            }
        }
    }
    // Generate, on the first port from `first_port` on that we can bind.
    let mut last_err = String::new();
    for i in 0..200u16 {
        let port = 20_000 + (first_port - 20_000 + i) % 12_000;
        let server = match CrlServer::start_on(port, true) {
            Ok(s) => s,
            Err(e) => {
                last_err = e.to_string();
                continue;
            }
        };
        let pki = TestPki::generate_with_client(&crl_base_for(port), now(), client.clone())
            .map_err(|e| e.to_string())?;
        server.serve_pki(&pki);
        let cache = CacheFile::from_pki(&pki, port).map_err(|e| e.to_string())?;
        write_cache(&file, &cache)?;
        return Ok((with_client_files(pki, dir)?, server));
    }
    Err(format!("no free CRL port on 127.0.0.1: {last_err}"))
}

/// `pki` with its client certificate files written in `dir`/client-certs.
fn with_client_files(mut pki: TestPki, dir: &Path) -> Result<TestPki, String> {
    pki.client_paths = Some(pki.client.write_files(&dir.join(CLIENT_DIR))?);
    Ok(pki)
}

fn read_cache(file: &Path) -> Option<CacheFile> {
    let text = fs::read_to_string(file).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_cache<C: Serialize>(file: &Path, cache: &C) -> Result<(), String> {
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    let text = serde_json::to_string(cache).map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, file)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("write {}: {e}", file.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_and_uncovered_faults() {
        use Fault::*;
        assert_eq!(LeafKind::Revoked.effective_faults(0), vec![]);
        assert_eq!(LeafKind::Revoked.uncovered_faults(0x1F), vec![Revoked]);
        assert_eq!(LeafKind::UnknownCa.uncovered_faults(0x08), vec![]);
        assert_eq!(LeafKind::UnknownCa.uncovered_faults(0x1F), vec![CrlUnreachable]);
        assert_eq!(
            LeafKind::UnknownCa.uncovered_faults(0x01),
            vec![Ca, CrlUnreachable]
        );
        assert_eq!(LeafKind::ExpWrongHost.uncovered_faults(0x02), vec![Date]);
        assert_eq!(LeafKind::ExpWrongHost.uncovered_faults(0x06), vec![]);
        assert_eq!(LeafKind::CrlUnreachable.uncovered_faults(0x1E), vec![]);
        assert_eq!(
            LeafKind::CrlUnreachable.uncovered_faults(0x1F),
            vec![CrlUnreachable]
        );
        assert_eq!(LeafKind::Good.uncovered_faults(0x1F), vec![]);
    }

    #[test]
    fn names_round_trip_and_serials_differ() {
        let mut serials = std::collections::HashSet::new();
        for k in LeafKind::ALL {
            assert_eq!(LeafKind::from_name(k.name()), Some(k));
            assert!(serials.insert(k.serial()));
        }
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        assert_eq!(der(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(der(0x04, &[0; 300])[..4], [0x04, 0x82, 1, 44]);
    }

    fn root_der(loaded: &(TestPki, CrlServer)) -> Vec<u8> {
        loaded.0.root_pem().to_vec()
    }

    #[test]
    fn parallel_callers_share_one_generated_pki() {
        let dir = std::env::temp_dir().join(format!("bits-testkit-pki-par-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let roots: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| root_der(&load_or_generate_in(&dir).unwrap())))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(roots.windows(2).all(|w| w[0] == w[1]));
        // A later caller loads the same one from disk.
        assert_eq!(root_der(&load_or_generate_in(&dir).unwrap()), roots[0]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_or_corrupt_caches_are_regenerated() {
        let dir = std::env::temp_dir().join(format!("bits-testkit-pki-old-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // Generated 800 days ago: its good certificates expire within 30 days.
        let port = preferred_port(&dir);
        let old = TestPki::generate_at(&crl_base_for(port), now() - 800 * DAY).unwrap();
        assert!(!still_fresh(&old));
        write_cache(&dir.join(CACHE_FILE), &CacheFile::from_pki(&old, port).unwrap()).unwrap();
        let new = load_or_generate_in(&dir).unwrap();
        assert!(still_fresh(&new.0));
        assert_ne!(new.0.root_pem(), old.root_pem());
        // Garbage is replaced too.
        fs::write(dir.join(CACHE_FILE), "not json").unwrap();
        let newer = load_or_generate_in(&dir).unwrap();
        assert!(still_fresh(&newer.0));
        assert_ne!(root_der(&newer), root_der(&new));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn preferred_port_is_in_range() {
        let p = preferred_port(Path::new("/some/target"));
        assert!((20_000..32_000).contains(&p));
    }
}
