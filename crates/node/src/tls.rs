//! The cluster's TLS configuration: loading the PEM files of a certs dir, the rustls
//! configurations of the node's two listeners, its peer dialer and of clients, the certificate
//! checks, and the words a refused connection is explained with.
//!
//! It must never let a listener accept a connection without a verified certificate unless the
//! node runs with `--insecure` ([`NodeSecurity::Insecure`]). What is verified:
//!
//! - peer port (node to node): the dialing node presents a certificate chained to the cluster
//!   CA that is a *node* certificate (valid for the name [`NODE_NAME`], which client
//!   certificates do not carry), and the dialer checks the listening node's certificate for the
//!   name `node-<id>` of the peer it meant to reach ([`node_name`]). The node id named in the
//!   dialer's certificate ([`node_id_of`]) travels with every frame of that connection, so the
//!   runtime drops peer messages claiming to come from another node;
//! - client port: the client presents a certificate chained to the cluster CA (any client or
//!   node certificate: `pactdb node --join` uses its node certificate), and the client checks
//!   the node's certificate for [`NODE_NAME`].
//!
//! Not done: revocation, and rotating certificates without restarting the node.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The DNS name every node certificate carries and clients verify nodes for; the peer listener
/// requires it of the dialing node, which is what keeps a client certificate from posing as a node.
pub const NODE_NAME: &str = "pactdb-node";

/// How long a TLS handshake may take before the connection is dropped, so a stalled or
/// malicious peer cannot pin a connection task.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// File names in a certs dir (`pactdb certs`).
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";
pub const CLIENT_CERT: &str = "client.crt";
pub const CLIENT_KEY: &str = "client.key";

/// The DNS name in node `id`'s certificate that its peers verify when they dial it.
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a node's listeners and dialer talk: TLS with the cluster's certificates, or plaintext
/// (only with an explicit `--insecure`).
#[derive(Clone, Debug)]
pub enum NodeSecurity {
    Insecure,
    Tls(NodeTls),
}

/// How a client connects to nodes.
#[derive(Clone, Debug, Default)]
pub enum ClientSecurity {
    /// Plaintext; a node that runs TLS refuses it.
    #[default]
    Insecure,
    Tls(ClientTls),
}

/// A node's TLS configuration: one acceptor per listener and the peer dialer.
#[derive(Clone)]
pub struct NodeTls {
    peer_acceptor: TlsAcceptor,
    client_acceptor: TlsAcceptor,
    dialer: TlsConnector,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeTls")
    }
}

impl NodeTls {
    /// Reads `dir/ca.crt`, `dir/node.crt` and `dir/node.key`.
    pub fn load(dir: &Path) -> anyhow::Result<NodeTls> {
        let ca = read_file(&dir.join(CA_CERT))?;
        let cert = read_file(&dir.join(NODE_CERT))?;
        let key = read_file(&dir.join(NODE_KEY))?;
        NodeTls::from_pem(&ca, &cert, &key)
            .with_context(|| format!("loading the node certificates in {}", dir.display()))
    }

    /// Builds the configuration from PEM text: the CA certificate(s), the node's certificate
    /// chain and its private key.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> anyhow::Result<NodeTls> {
        let roots = Arc::new(roots(ca)?);
        let chain = certs(cert, "node certificate")?;
        let key = private_key(key)?;
        let any_client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .context("building the client certificate verifier")?;
        let node_only: Arc<dyn ClientCertVerifier> = Arc::new(NodeCertVerifier { inner: any_client.clone() });
        let server = |verifier: Arc<dyn ClientCertVerifier>| -> anyhow::Result<Arc<ServerConfig>> {
            let cfg = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .context("the node certificate does not match its key")?;
            Ok(Arc::new(cfg))
        };
        let dialer = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .context("the node certificate does not match its key")?;
        Ok(NodeTls {
            peer_acceptor: TlsAcceptor::from(server(node_only)?),
            client_acceptor: TlsAcceptor::from(server(any_client)?),
            dialer: TlsConnector::from(Arc::new(dialer)),
        })
    }

    /// Accepts on the peer port: the dialer must present a node certificate of the cluster CA.
    pub fn peer_acceptor(&self) -> &TlsAcceptor {
        &self.peer_acceptor
    }

    /// Accepts on the client port: the client must present a certificate of the cluster CA.
    pub fn client_acceptor(&self) -> &TlsAcceptor {
        &self.client_acceptor
    }

    /// Dials peers with this node's certificate (it carries clientAuth); the peer's certificate
    /// is verified for [`node_name`] of the peer dialled.
    pub fn dialer(&self) -> &TlsConnector {
        &self.dialer
    }
}

/// A client's TLS configuration: the cluster CA, and the certificate it authenticates with.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    has_identity: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("has_identity", &self.has_identity).finish()
    }
}

impl ClientTls {
    /// Reads `dir/ca.crt` and, when present, `dir/client.crt` and `dir/client.key`. A dir
    /// without a client certificate still yields a configuration (nodes refuse it, and the
    /// client says so), so that the missing credential is reported by the node's refusal.
    pub fn load(dir: &Path) -> anyhow::Result<ClientTls> {
        let ca = read_file(&dir.join(CA_CERT))
            .with_context(|| format!("{} is not a certs dir (see `pactdb certs`)", dir.display()))?;
        let cert_path = dir.join(CLIENT_CERT);
        let identity =
            if cert_path.exists() { Some((read_file(&cert_path)?, read_file(&dir.join(CLIENT_KEY))?)) } else { None };
        ClientTls::from_pem(&ca, identity.as_ref().map(|(c, k)| (&c[..], &k[..])))
            .with_context(|| format!("loading the client certificates in {}", dir.display()))
    }

    /// Reads `dir/ca.crt`, `dir/node.crt` and `dir/node.key`: a node's own certificate used as
    /// a client certificate (`pactdb node --join`).
    pub fn load_node_identity(dir: &Path) -> anyhow::Result<ClientTls> {
        let ca = read_file(&dir.join(CA_CERT))?;
        let cert = read_file(&dir.join(NODE_CERT))?;
        let key = read_file(&dir.join(NODE_KEY))?;
        ClientTls::from_pem(&ca, Some((&cert, &key)))
            .with_context(|| format!("loading the node certificates in {}", dir.display()))
    }

    /// From PEM text: the CA certificate(s) and, optionally, a certificate chain and its key.
    pub fn from_pem(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> anyhow::Result<ClientTls> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(ca)?);
        let cfg = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(certs(cert, "client certificate")?, private_key(key)?)
                .context("the client certificate does not match its key")?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls { connector: TlsConnector::from(Arc::new(cfg)), has_identity: identity.is_some() })
    }

    /// Connects to nodes, verifying their certificate for [`NODE_NAME`].
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// Whether a client certificate is presented (without one, every node refuses).
    pub fn has_identity(&self) -> bool {
        self.has_identity
    }
}

/// The node id a node certificate names (its one `node-<id>` DNS name), if it names exactly one.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<u64> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let ids: BTreeSet<u64> =
        ee.valid_dns_names().filter_map(|n| n.strip_prefix("node-").and_then(|id| id.parse().ok())).collect();
    match ids.len() {
        1 => ids.into_iter().next(),
        _ => None,
    }
}

/// The server name a client verifies nodes for.
pub fn node_server_name() -> ServerName<'static> {
    ServerName::try_from(NODE_NAME).expect("a valid DNS name")
}

/// The server name a node verifies peer `id` for.
pub fn peer_server_name(id: u64) -> ServerName<'static> {
    ServerName::try_from(node_name(id)).expect("a valid DNS name")
}

/// The peer listener's verifier: a client certificate of the cluster CA (checked by `inner`)
/// that is also valid for [`NODE_NAME`], which only node certificates are.
#[derive(Debug)]
struct NodeCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

/// Why a certificate chained to the CA was refused on the peer port.
#[derive(Debug)]
struct NotANodeCert;

impl fmt::Display for NotANodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a node certificate (it is not valid for {NODE_NAME})")
    }
}

impl std::error::Error for NotANodeCert {}

impl ClientCertVerifier for NodeCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        ee.verify_is_valid_for_subject_name(&node_server_name()).map_err(|_| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(NotANodeCert))))
        })?;
        if node_id_of(end_entity).is_none() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(NotANodeCert)))));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn read_file(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn certs(pem: &[u8], what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the {what} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        bail!("no certificate in the {what} file");
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| anyhow!("no usable private key in the key file: {e}"))
}

fn roots(pem: &[u8]) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs(pem, "CA certificate")? {
        roots.add(cert).context("the CA certificate is not usable as a trust anchor")?;
    }
    Ok(roots)
}

/// A connection a node refused, or one this client cannot use, explained for people. Carried
/// inside the `io::Error`s of [`crate::net::FramedConn`]; see [`refusal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The explanation inside `e`, if it is a refusal.
pub fn refusal(e: &io::Error) -> Option<&Refused> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Refused>())
}

/// What a plaintext client reads first from a node that speaks TLS: an alert record (content
/// type 21, version 3.x), which no frame starts with (its length would exceed the frame limit).
pub fn looks_like_tls_alert(first: &[u8]) -> bool {
    first.len() >= 2 && first[0] == 0x15 && first[1] == 0x03
}

/// What a plaintext node reads first from a TLS client: a handshake record (type 22, version 3.x).
pub fn looks_like_tls_hello(first: &[u8]) -> bool {
    first.len() >= 2 && first[0] == 0x16 && first[1] == 0x03
}

/// The refusal a plaintext client reports when the node answered with TLS.
pub fn plaintext_refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        Refused("the node speaks TLS and requires a client certificate from the cluster CA; pass --certs-dir".into()),
    )
}

/// Turns an error of a TLS client connection (handshake or I/O) into a refusal people can act
/// on when TLS is the reason; other errors are returned as they are.
pub fn explain_client_error(e: io::Error, during_handshake: bool) -> io::Error {
    if refusal(&e).is_some() {
        return e;
    }
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).cloned();
    let msg = match tls {
        Some(rustls::Error::AlertReceived(alert)) if is_auth_alert(alert) => format!(
            "TLS handshake failed (the node requires a client certificate from the cluster CA; pass --certs-dir): \
             the node sent {alert:?}"
        ),
        Some(rustls::Error::InvalidCertificate(reason)) => format!(
            "TLS handshake failed: the node's certificate is not accepted ({reason:?}); is --certs-dir the \
             certs dir of this cluster?"
        ),
        Some(other) => format!("TLS failed: {other}"),
        None if during_handshake && e.kind() == io::ErrorKind::UnexpectedEof => {
            "the node closed the connection during the TLS handshake (a node started with --insecure speaks \
             plaintext; pass --insecure)"
                .to_string()
        }
        None if during_handshake && e.kind() == io::ErrorKind::TimedOut => {
            format!("TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}")
        }
        None => return e,
    };
    io::Error::new(io::ErrorKind::ConnectionRefused, Refused(msg))
}

fn is_auth_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied
            | AlertDescription::HandshakeFailure
            | AlertDescription::DecryptError
    )
}

/// Why a server-side handshake failed, for the warning a refused connection is logged with.
pub fn handshake_failure(e: &io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => {
            "no client certificate presented (a client needs --certs-dir with a certificate of the cluster CA)"
                .to_string()
        }
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(reason))) => {
            format!("invalid peer certificate: {reason}")
        }
        Some(rustls::Error::InvalidMessage(_)) => {
            "not a TLS client hello (a plaintext client? clients need --certs-dir)".to_string()
        }
        Some(tls) => tls.to_string(),
        None if e.kind() == io::ErrorKind::UnexpectedEof => "connection closed during the TLS handshake".to_string(),
        None => e.to_string(),
    }
}
