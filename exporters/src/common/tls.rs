//! Client TLS (rustls with the ring provider) and the TCP(+TLS) connector both OTLP exporters
//! dial through. Name resolution happens here, at connect time, never at build time: an
//! endpoint like `jaeger:4317` only has to resolve once the collector runs next to it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::config::{TlsClientConfig, TlsVersion};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} {path:?}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("tls: {what} holds no PEM {expected}")]
    Empty {
        what: String,
        expected: &'static str,
    },
    #[error(
        "tls: no trusted CA certificates: the system store is empty or unreadable; set tls.ca_file"
    )]
    NoRoots,
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls: {0}")]
    Other(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// PEM text from `*_pem` or `*_file`.
fn pem_source(
    inline: Option<&str>,
    file: Option<&str>,
    what: &'static str,
) -> Result<Option<(Vec<u8>, String)>, TlsError> {
    if let Some(p) = inline {
        return Ok(Some((p.as_bytes().to_vec(), format!("{what}_pem"))));
    }
    if let Some(path) = file {
        let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_string(),
            source,
        })?;
        return Ok(Some((bytes, format!("{what} file {path:?}"))));
    }
    Ok(None)
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Other(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: what.to_string(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

/// Builds the client config: roots from `ca_file`/`ca_pem` (else the system store), an optional
/// client certificate, the allowed versions, and the ALPN protocols the caller speaks.
pub fn client_config(cfg: &TlsClientConfig, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let (min, max) = cfg.versions().map_err(TlsError::Other)?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::V1_2, &rustls::version::TLS12),
        (TlsVersion::V1_3, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= min && *v <= max)
    .map(|(_, p)| p)
    .collect();
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;

    let builder = if cfg.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        let ca = pem_source(cfg.ca_pem(), cfg.ca_file(), "ca")?;
        if let Some((pem, what)) = &ca {
            for c in parse_certs(pem, what)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Other(format!("{what}: {e}")))?;
            }
        }
        if ca.is_none() || cfg.include_system_ca_certs_pool {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::debug!(error = %e, "skipping unreadable system CA certificate");
            }
            roots.add_parsable_certificates(native.certs);
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        builder.with_root_certificates(roots)
    };

    let cert = pem_source(cfg.cert_pem(), cfg.cert_file(), "cert")?;
    let key = pem_source(cfg.key_pem(), cfg.key_file(), "key")?;
    let mut config = match (cert, key) {
        (Some((cert_pem, cert_what)), Some((key_pem, key_what))) => {
            let chain = parse_certs(&cert_pem, &cert_what)?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
                .map_err(|e| TlsError::Other(format!("{key_what}: {e}")))?
                .ok_or(TlsError::Empty {
                    what: key_what,
                    expected: "private key",
                })?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `insecure_skip_verify`: the server's certificate is not checked, but the handshake signatures
/// still are, so the session keys are at least bound to the certificate the server presented.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS half of a [`Connector`]: the config plus the name to verify (the endpoint host unless
/// `server_name_override` is set).
#[derive(Clone)]
pub struct TlsSetup {
    pub config: Arc<ClientConfig>,
    pub server_name_override: Option<String>,
}

/// Dials TCP (resolving the host now, at connect time) and optionally wraps it in TLS.
/// Serves both tonic's channel and hyper-util's pooled client.
#[derive(Clone)]
pub struct Connector {
    tls: Option<TlsSetup>,
    connect_timeout: Duration,
}

impl Connector {
    pub fn new(tls: Option<TlsSetup>, connect_timeout: Duration) -> Connector {
        Connector {
            tls,
            connect_timeout,
        }
    }
}

/// Host and port of `uri`, IPv6 brackets removed; the port defaults by scheme.
fn host_port(uri: &Uri) -> io::Result<(String, u16)> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    Ok((host, port))
}

async fn connect(
    uri: Uri,
    tls: Option<TlsSetup>,
    connect_timeout: Duration,
) -> io::Result<TokioIo<MaybeTlsStream>> {
    let (host, port) = host_port(&uri)?;
    let dial = async {
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        // Export requests are written in one go and latency matters more than packet count.
        tcp.set_nodelay(true)?;
        let Some(tls) = tls else {
            return Ok(MaybeTlsStream::Plain(tcp));
        };
        let name = tls.server_name_override.as_deref().unwrap_or(&host);
        let server_name = ServerName::try_from(name.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid TLS server name {name:?}: {e}"),
            )
        })?;
        let stream = TlsConnector::from(tls.config)
            .connect(server_name, tcp)
            .await?;
        Ok(MaybeTlsStream::Tls(Box::new(stream)))
    };
    let io = match tokio::time::timeout(connect_timeout, dial).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {connect_timeout:?}"),
        )),
    }
    .map_err(|e| io::Error::new(e.kind(), format!("connecting to {host}:{port}: {e}")))?;
    Ok(TokioIo::new(io))
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<MaybeTlsStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(connect(uri, self.tls.clone(), self.connect_timeout))
    }
}

pub enum MaybeTlsStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for MaybeTlsStream {
    fn connected(&self) -> Connected {
        match self {
            MaybeTlsStream::Plain(_) => Connected::new(),
            MaybeTlsStream::Tls(s) => {
                let (_, session) = s.get_ref();
                if session.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(s) => s.is_write_vectored(),
            MaybeTlsStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_defaults() {
        let u: Uri = "https://collector.example".parse().unwrap();
        assert_eq!(host_port(&u).unwrap(), ("collector.example".into(), 443));
        let u: Uri = "http://[::1]:4318/v1/traces".parse().unwrap();
        assert_eq!(host_port(&u).unwrap(), ("::1".into(), 4318));
        let u: Uri = "http://jaeger".parse().unwrap();
        assert_eq!(host_port(&u).unwrap(), ("jaeger".into(), 80));
    }

    #[test]
    fn missing_ca_file_is_an_error_naming_the_file() {
        let cfg = TlsClientConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = client_config(&cfg, &[b"h2"]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn skip_verify_needs_no_roots() {
        let cfg = TlsClientConfig {
            insecure_skip_verify: true,
            ..Default::default()
        };
        let c = client_config(&cfg, &[b"h2"]).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
