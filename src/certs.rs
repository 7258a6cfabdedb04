//! `pactdb certs`: a certificate authority and node and client certificates
//! for a test cluster (rcgen). `certs init` creates the CA; `certs issue
//! node|client` signs a certificate with it into a certs dir that `pactdb
//! node --certs-dir` and the client commands' `--certs-dir` read (the file
//! names are in `pactdb_node::tls`). What the nodes check of these
//! certificates is described in `crates/node/src/tls.rs`.

use anyhow::{bail, Context};
use pactdb_node::tls::{self, CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY, NODE_CERT, NODE_KEY, NODE_NAME};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a cluster CA: DIR/ca.crt and DIR/ca.key (never overwritten).
    Init {
        /// Where the CA goes.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Sign a node or client certificate with the CA in --dir.
    #[command(subcommand)]
    Issue(IssueCommand),
}

#[derive(clap::Subcommand, Debug)]
pub enum IssueCommand {
    /// OUT/ca.crt, OUT/node.crt, OUT/node.key: a node certificate for
    /// `pactdb node --certs-dir OUT`, valid for node-ID, pactdb-node,
    /// localhost, 127.0.0.1 and every --host, for serving and dialing.
    Node {
        /// The CA's dir (`certs init`).
        #[arg(long)]
        dir: PathBuf,
        /// The node's id.
        #[arg(long)]
        id: u64,
        /// Another name or IP address the node is reached at (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Where the certificate goes.
        #[arg(long)]
        out: PathBuf,
    },
    /// OUT/ca.crt, OUT/client.crt, OUT/client.key: a client certificate for
    /// the client commands' `--certs-dir OUT`.
    Client {
        /// The CA's dir (`certs init`).
        #[arg(long)]
        dir: PathBuf,
        /// The certificate's common name.
        #[arg(long, default_value = "client")]
        name: String,
        /// Where the certificate goes.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: CertsArgs) -> anyhow::Result<i32> {
    match args.command {
        CertsCommand::Init { dir } => {
            init_ca(&dir)?;
            println!("created the cluster CA in {}", dir.display());
        }
        CertsCommand::Issue(IssueCommand::Node { dir, id, hosts, out }) => {
            issue_node(&dir, id, &hosts, &out)?;
            println!("issued the certificate of node {id} into {}", out.display());
        }
        CertsCommand::Issue(IssueCommand::Client { dir, name, out }) => {
            issue_client(&dir, &name, &out)?;
            println!("issued client certificate `{name}` into {}", out.display());
        }
    }
    Ok(0)
}

/// Creates DIR/ca.crt and DIR/ca.key; refuses if either exists.
pub fn init_ca(dir: &Path) -> anyhow::Result<()> {
    for name in [CA_CERT, CA_KEY] {
        let path = dir.join(name);
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite a CA (remove it first, or use another --dir)",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // A name of its own per CA, so that certificates of two test clusters are told apart by
    // issuer name before their signatures are.
    dn.push(DnType::CommonName, format!("pactdb cluster CA {:016x}", serial()));
    dn.push(DnType::OrganizationName, "pactdb");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(serial().into());
    let cert = params.self_signed(&key).context("signing the CA certificate")?;
    write_new(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), true)?;
    write_new(&dir.join(CA_CERT), cert.pem().as_bytes(), false)?;
    Ok(())
}

/// Issues node `id`'s certificate into `out`.
pub fn issue_node(dir: &Path, id: u64, hosts: &[String], out: &Path) -> anyhow::Result<()> {
    let mut names: Vec<String> = vec![tls::node_name(id), NODE_NAME.into(), "localhost".into(), "127.0.0.1".into()];
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(
                n.clone().try_into().with_context(|| format!("`{n}` is neither an IP address nor a DNS name"))?,
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    params.distinguished_name.push(DnType::CommonName, tls::node_name(id));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    issue(dir, params, out, NODE_CERT, NODE_KEY)
}

/// Issues a client certificate named `name` into `out`.
pub fn issue_client(dir: &Path, name: &str, out: &Path) -> anyhow::Result<()> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(dir, params, out, CLIENT_CERT, CLIENT_KEY)
}

fn issue(dir: &Path, mut params: CertificateParams, out: &Path, cert_name: &str, key_name: &str) -> anyhow::Result<()> {
    let (ca_pem, ca, ca_key) = load_ca(dir)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial().into());
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params.signed_by(&key, &ca, &ca_key).context("signing the certificate")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    replace(&out.join(CA_CERT), ca_pem.as_bytes(), false)?;
    replace(&out.join(key_name), key.serialize_pem().as_bytes(), true)?;
    replace(&out.join(cert_name), cert.pem().as_bytes(), false)?;
    Ok(())
}

/// The CA of `dir`: its certificate's PEM, the certificate to sign with, and its key.
fn load_ca(dir: &Path) -> anyhow::Result<(String, Certificate, KeyPair)> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let ca_pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("reading {} (create a CA with `pactdb certs init --dir DIR`)", cert_path.display()))?;
    let key_pem = std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem).with_context(|| format!("{} is not a private key", key_path.display()))?;
    let params = CertificateParams::from_ca_cert_pem(&ca_pem)
        .with_context(|| format!("{} is not a CA certificate", cert_path.display()))?;
    // The same subject and key as the CA certificate on disk, which is all that signing uses.
    let ca = params
        .self_signed(&key)
        .with_context(|| format!("{} does not match {}", key_path.display(), cert_path.display()))?;
    Ok((ca_pem, ca, key))
}

fn serial() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // Positive and non-zero, as X.509 wants.
    ((nanos as u64) ^ (u64::from(std::process::id()) << 40)) >> 1 | 1
}

/// Writes a file that must not exist yet (a key: readable by its owner only).
fn write_new(path: &Path, contents: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes a file, replacing what was there (through a temporary file, so a key is never
/// readable by others, not even briefly).
fn replace(path: &Path, contents: &[u8], secret: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, contents, secret)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
