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
        None if during_handshake
            && matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ) =>
        {
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

/// Certificates made on the spot for tests, as `pactdb certs` makes them.
#[cfg(test)]
pub(crate) mod test_certs {
    use rcgen::{
        BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    };

    /// A CA that signs node and client certificates (PEM text).
    pub struct Ca {
        cert: Certificate,
        key: KeyPair,
    }

    /// A certificate and its key, PEM.
    pub struct Issued {
        pub cert: String,
        pub key: String,
    }

    impl Ca {
        pub fn new(name: &str) -> Ca {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            Ca { cert: params.self_signed(&key).unwrap(), key }
        }

        pub fn pem(&self) -> String {
            self.cert.pem()
        }

        fn issue(&self, params: CertificateParams) -> Issued {
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
            Issued { cert: cert.pem(), key: key.serialize_pem() }
        }

        /// A node certificate as `certs issue node` makes it.
        pub fn node(&self, id: u64) -> Issued {
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![
                SanType::DnsName(super::node_name(id).try_into().unwrap()),
                SanType::DnsName(super::NODE_NAME.try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            self.issue(params)
        }

        /// A client certificate as `certs issue client` makes it.
        pub fn client(&self) -> Issued {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, "client");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            self.issue(params)
        }

        pub fn node_tls(&self, id: u64) -> super::NodeTls {
            let n = self.node(id);
            super::NodeTls::from_pem(self.pem().as_bytes(), n.cert.as_bytes(), n.key.as_bytes()).unwrap()
        }

        pub fn client_tls(&self) -> super::ClientTls {
            let c = self.client();
            super::ClientTls::from_pem(self.pem().as_bytes(), Some((c.cert.as_bytes(), c.key.as_bytes()))).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_certs::Ca;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Runs one handshake over an in-memory pipe, then one byte from client
    /// to server (a TLS 1.3 client learns of a refused certificate only on
    /// its next read). Returns the server's and the client's outcome.
    async fn handshake(
        acceptor: &TlsAcceptor,
        connector: &TlsConnector,
        name: ServerName<'static>,
    ) -> (Result<Option<u64>, io::Error>, Result<(), io::Error>) {
        let (c, s) = tokio::io::duplex(64 << 10);
        let server = async {
            let mut stream = acceptor.accept(s).await?;
            let node = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(node_id_of);
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await?;
            stream.write_all(&b).await?;
            stream.flush().await?;
            Ok(node)
        };
        let client = async {
            let mut stream = connector.connect(name, c).await?;
            stream.write_all(b"x").await?;
            stream.flush().await?;
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await?;
            Ok(())
        };
        tokio::join!(server, client)
    }

    fn tls_error(e: &io::Error) -> String {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(t) => format!("{t:?}"),
            None => format!("{e:?}"),
        }
    }

    #[tokio::test]
    async fn the_peer_port_takes_a_node_certificate_of_the_ca_and_learns_its_node_id() {
        let ca = Ca::new("ca");
        let (a, b) = (ca.node_tls(1), ca.node_tls(2));
        let (server, client) = handshake(a.peer_acceptor(), b.dialer(), peer_server_name(1)).await;
        assert_eq!(server.unwrap(), Some(2));
        client.unwrap();
    }

    #[tokio::test]
    async fn the_peer_port_refuses_a_client_certificate_of_the_same_ca() {
        let ca = Ca::new("ca");
        let node = ca.node_tls(1);
        let client = ca.client_tls();
        let (server, client) = handshake(node.peer_acceptor(), client.connector(), node_server_name()).await;
        let err = server.unwrap_err();
        assert!(handshake_failure(&err).contains("not a node certificate"), "{}", handshake_failure(&err));
        let explained = explain_client_error(client.unwrap_err(), false);
        assert!(refusal(&explained).is_some_and(|r| r.0.contains("requires a client certificate")), "{explained}");
    }

    #[tokio::test]
    async fn a_node_of_another_ca_is_refused_both_ways() {
        let (ca, other) = (Ca::new("ca"), Ca::new("other"));
        let (ours, theirs) = (ca.node_tls(1), other.node_tls(2));
        // They dial us: they do not trust our certificate (and say so).
        let (server, client) = handshake(ours.peer_acceptor(), theirs.dialer(), peer_server_name(1)).await;
        assert!(tls_error(&client.unwrap_err()).contains("UnknownIssuer"));
        assert!(server.is_err());
        // We dial them: we do not trust theirs.
        let (_, client) = handshake(theirs.peer_acceptor(), ours.dialer(), peer_server_name(2)).await;
        assert!(tls_error(&client.unwrap_err()).contains("UnknownIssuer"));
        // Their node certificate, presented to a node that trusts both CAs'
        // servers but only ours for clients, is refused by the node.
        let mixed_roots = format!("{}{}", ca.pem(), other.pem());
        let n = other.node(2);
        let mixed = NodeTls::from_pem(mixed_roots.as_bytes(), n.cert.as_bytes(), n.key.as_bytes()).unwrap();
        let (server, _) = handshake(ours.peer_acceptor(), mixed.dialer(), peer_server_name(1)).await;
        assert!(tls_error(&server.unwrap_err()).contains("UnknownIssuer"));
    }

    #[tokio::test]
    async fn a_dialer_refuses_a_peer_whose_certificate_names_another_node() {
        let ca = Ca::new("ca");
        let (a, b) = (ca.node_tls(1), ca.node_tls(2));
        // B dials what it believes is node 3, but node 1 answers.
        let (_, client) = handshake(a.peer_acceptor(), b.dialer(), peer_server_name(3)).await;
        assert!(tls_error(&client.unwrap_err()).contains("NotValidForName"));
    }

    #[tokio::test]
    async fn the_client_port_takes_any_certificate_of_the_ca_and_no_anonymous_client() {
        let (ca, other) = (Ca::new("ca"), Ca::new("other"));
        let node = ca.node_tls(1);
        let (server, client) = handshake(node.client_acceptor(), ca.client_tls().connector(), node_server_name()).await;
        assert_eq!(server.unwrap(), None);
        client.unwrap();
        // A node certificate is a client certificate too (`node --join`).
        let (server, _) = handshake(node.client_acceptor(), node.dialer(), node_server_name()).await;
        assert_eq!(server.unwrap(), Some(1));

        // No certificate.
        let anonymous = ClientTls::from_pem(ca.pem().as_bytes(), None).unwrap();
        assert!(!anonymous.has_identity());
        let (server, client) = handshake(node.client_acceptor(), anonymous.connector(), node_server_name()).await;
        assert!(handshake_failure(&server.unwrap_err()).contains("no client certificate presented"));
        let explained = explain_client_error(client.unwrap_err(), false);
        assert_eq!(explained.kind(), io::ErrorKind::ConnectionRefused);
        assert!(
            explained
                .to_string()
                .contains("the node requires a client certificate from the cluster CA; pass --certs-dir"),
            "{explained}"
        );

        // Another CA's client certificate, from a client that trusts our CA.
        let c = other.client();
        let foreign = ClientTls::from_pem(ca.pem().as_bytes(), Some((c.cert.as_bytes(), c.key.as_bytes()))).unwrap();
        let (server, _) = handshake(node.client_acceptor(), foreign.connector(), node_server_name()).await;
        assert!(tls_error(&server.unwrap_err()).contains("UnknownIssuer"));

        // A client of another CA altogether does not trust the node.
        let (_, client) = handshake(node.client_acceptor(), other.client_tls().connector(), node_server_name()).await;
        let explained = explain_client_error(client.unwrap_err(), true);
        assert!(
            explained.to_string().contains("the node's certificate is not accepted (UnknownIssuer)"),
            "{explained}"
        );
    }

    #[test]
    fn node_ids_come_from_node_certificates_only() {
        let ca = Ca::new("ca");
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(node_id_of(&der(&ca.node(7).cert)), Some(7));
        assert_eq!(node_id_of(&der(&ca.client().cert)), None);
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let ca = Ca::new("ca");
        let n = ca.node(1);
        let err = NodeTls::from_pem(b"not a certificate", n.cert.as_bytes(), n.key.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("no certificate in the CA certificate file"), "{err:#}");
        let err = NodeTls::from_pem(ca.pem().as_bytes(), n.cert.as_bytes(), b"junk").unwrap_err();
        assert!(format!("{err:#}").contains("no usable private key"), "{err:#}");
        let other = ca.node(2);
        let err = NodeTls::from_pem(ca.pem().as_bytes(), n.cert.as_bytes(), other.key.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("does not match its key"), "{err:#}");
    }

    #[test]
    fn the_first_bytes_tell_tls_from_frames() {
        assert!(looks_like_tls_alert(&[0x15, 0x03, 0x03]));
        assert!(looks_like_tls_hello(&[0x16, 0x03, 0x01]));
        // A frame's length prefix: far below the 0x15000000 an alert would claim.
        assert!(!looks_like_tls_alert(&[0x00, 0x00, 0x01]));
        assert!(refusal(&plaintext_refused()).is_some_and(|r| r.0.contains("the node speaks TLS")));
    }
}
