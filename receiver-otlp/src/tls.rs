//! Server certificates, loaded when the receiver starts (never while the config is checked, so
//! `validate` works on a machine without the key files).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::config::TlsServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} {path:?}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("tls: {what} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        expected: &'static str,
    },
    #[error("tls: {what}: {msg}")]
    Invalid { what: &'static str, msg: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(
    file: Option<&String>,
    inline: Option<&String>,
    what: &'static str,
) -> Result<Vec<u8>, TlsError> {
    if let Some(pem) = inline {
        return Ok(pem.as_bytes().to_vec());
    }
    let path = file.ok_or(TlsError::Empty {
        what,
        expected: "data (no file given)",
    })?;
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.clone(),
        source,
    })
}

struct Material {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
}

fn material(cfg: &TlsServerConfig) -> Result<Material, TlsError> {
    let cert_pem = read(cfg.cert_file.as_ref(), cfg.cert_pem.as_ref(), "certificate")?;
    let key_pem = read(cfg.key_file.as_ref(), cfg.key_pem.as_ref(), "key")?;
    let client_ca_pem = match &cfg.client_ca_file {
        Some(p) => Some(read(Some(p), None, "client CA file")?),
        None => None,
    };
    Ok(Material {
        cert_pem,
        key_pem,
        client_ca_pem,
    })
}

fn certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            what,
            msg: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            expected: "certificate",
        });
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| TlsError::Invalid {
            what: "key",
            msg: e.to_string(),
        })?
        .ok_or(TlsError::Empty {
            what: "key",
            expected: "private key",
        })
}

/// A rustls server config for the HTTP side (ALPN offers h2 and HTTP/1.1).
pub(crate) fn rustls_config(cfg: &TlsServerConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let m = material(cfg)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &m.client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca, "client CA file")? {
                roots.add(c)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Invalid {
                    what: "client CA file",
                    msg: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(certs(&m.cert_pem, "certificate")?, key(&m.key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// tonic's TLS settings for the gRPC side. The PEM data is checked here too, so a bad file is
/// reported at start with its name rather than on the first handshake.
pub(crate) fn tonic_config(
    cfg: &TlsServerConfig,
) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
    let m = material(cfg)?;
    certs(&m.cert_pem, "certificate")?;
    key(&m.key_pem)?;
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(&m.cert_pem, &m.key_pem),
    );
    if let Some(ca) = &m.client_ca_pem {
        certs(ca, "client CA file")?;
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
    }
    Ok(tls)
}
