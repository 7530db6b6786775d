//! `flwr keygen`: the TLS certificates and SuperNode keys of a deployment in one command,
//! replacing the seed's `generate.sh` + `certificate.conf` (no openssl needed), in the same
//! layout:
//!
//! ```text
//! certificates/ca.crt  ca.key  server.pem  server.key
//! keys/client_credentials_N  client_credentials_N.pub  client_public_keys.csv
//!      server_credentials  server_credentials.pub
//! ```
//!
//! Node keys are ECDSA P-384 (Flower's node key type); private key files are unencrypted
//! OpenSSH, as `ssh-keygen` (and so `generate.sh`) writes them, so they also work with
//! Flower. Private files are created with mode 0600. Existing files are never overwritten
//! without `--force`: overwriting a CA or a node key silently would lock out every
//! SuperNode configured with the old one.

use crate::UserError;
use anyhow::{Context as _, Result};
use clap::Args;
use floret_transport::auth::NodeKeyPair;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Flags of `flwr keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// How many SuperNode key pairs to make.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub clients: u32,
    /// Directory in which `certificates/` and `keys/` are written.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// A name or IP address the SuperLink's certificate is valid for (repeatable; default
    /// `localhost` and `127.0.0.1`).
    #[arg(long = "san", value_name = "NAME")]
    pub san: Vec<String>,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// One file to write.
struct Output {
    path: PathBuf,
    contents: String,
    private: bool,
}

/// Makes every file and writes them, refusing to overwrite any without `--force`;
/// returns the exit code.
pub async fn execute(args: KeygenArgs) -> Result<i32> {
    let outputs = generate(&args)?;
    let existing: Vec<String> = outputs
        .iter()
        .filter(|o| o.path.exists())
        .map(|o| o.path.display().to_string())
        .collect();
    if !existing.is_empty() && !args.force {
        return Err(UserError::new(format!(
            "refusing to overwrite existing files ({}): pass --force to overwrite them, or --out another directory",
            existing.join(", ")
        ))
        .into());
    }
    for o in &outputs {
        write(o)?;
    }
    crate::outln!(
        "Wrote TLS certificates to {} and {} SuperNode key pair{} to {}",
        args.out.join("certificates").display(),
        args.clients,
        if args.clients == 1 { "" } else { "s" },
        args.out.join("keys").display()
    );
    Ok(crate::exit_code::OK)
}

fn generate(args: &KeygenArgs) -> Result<Vec<Output>> {
    let sans = if args.san.is_empty() {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        args.san.clone()
    };
    for san in &sans {
        check_san(san)?;
    }
    let certs = args.out.join("certificates");
    let keys = args.out.join("keys");
    let mut out = tls(&certs, sans, args.days)?;

    let mut public_lines = Vec::new();
    for i in 1..=args.clients {
        let name = format!("client_credentials_{i}");
        let pair = NodeKeyPair::generate().context("generating a SuperNode key")?;
        let public = pair.public_key().to_openssh(&name);
        public_lines.push(public.clone());
        out.push(private(keys.join(&name), pair.to_openssh_private(&name)));
        out.push(public_file(keys.join(format!("{name}.pub")), public + "\n"));
    }
    out.push(public_file(
        keys.join("client_public_keys.csv"),
        public_lines.join(",") + "\n",
    ));
    let server = NodeKeyPair::generate().context("generating the SuperLink key")?;
    out.push(private(
        keys.join("server_credentials"),
        server.to_openssh_private("server_credentials"),
    ));
    out.push(public_file(
        keys.join("server_credentials.pub"),
        server.public_key().to_openssh("server_credentials") + "\n",
    ));
    Ok(out)
}

/// A SAN must be an IP address or a DNS name (letters, digits, hyphens, dots; `*.` first
/// for a wildcard): rcgen would accept any ASCII and make a certificate no client matches.
fn check_san(san: &str) -> Result<(), UserError> {
    if san.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let name = san.strip_prefix("*.").unwrap_or(san);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(UserError::new(format!(
            "--san {san:?} is not a DNS name or an IP address (e.g. --san superlink.example.com --san 10.0.0.7)"
        )))
    }
}

/// A CA and a server certificate it signs, valid from an hour ago (for clocks slightly
/// behind) for `days`.
// A certificate is valid in wall-clock time, which peers check against their own clocks.
#[allow(clippy::disallowed_methods)]
fn tls(dir: &Path, sans: Vec<String>, days: u32) -> Result<Vec<Output>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let not_before = time::OffsetDateTime::from_unix_timestamp(now as i64 - 3600)
        .context("the system clock is out of range")?;
    let not_after = not_before + time::Duration::days(i64::from(days));

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Floret deployment CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;

    let server_key = KeyPair::generate().context("generating the server key")?;
    let mut server = CertificateParams::new(sans.clone()).map_err(|e| {
        UserError::new(format!(
            "--san {}: not a DNS name or IP address ({e})",
            sans.join(" --san ")
        ))
    })?;
    server
        .distinguished_name
        .push(DnType::CommonName, "Floret SuperLink");
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = not_before;
    server.not_after = not_after;
    let issuer = Issuer::new(ca, &ca_key);
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("signing the server certificate")?;

    Ok(vec![
        public_file(dir.join("ca.crt"), ca_cert.pem()),
        private(dir.join("ca.key"), ca_key.serialize_pem()),
        public_file(dir.join("server.pem"), server_cert.pem()),
        private(dir.join("server.key"), server_key.serialize_pem()),
    ])
}

fn private(path: PathBuf, contents: String) -> Output {
    Output {
        path,
        contents,
        private: true,
    }
}

fn public_file(path: PathBuf, contents: String) -> Output {
    Output {
        path,
        contents,
        private: false,
    }
}

/// Writes one file; private ones are created 0600 (and set to 0600 when overwritten), so
/// that a key is never readable by others, not even for a moment.
fn write(o: &Output) -> Result<()> {
    if let Some(dir) = o.path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| UserError::new(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if o.private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let fail =
        |e: std::io::Error| UserError::new(format!("cannot write {}: {e}", o.path.display()));
    let mut file = options.open(&o.path).map_err(fail)?;
    #[cfg(unix)]
    if o.private {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
    }
    file.write_all(o.contents.as_bytes()).map_err(fail)?;
    Ok(())
}
