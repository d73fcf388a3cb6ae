//! HTTPS for the portal: a listener that hands axum connections already through the TLS
//! handshake.
//!
//! Takes: a PEM certificate chain and its PEM private key, and a bound TCP listener. Gives: a
//! [`TlsListener`] for `axum::serve`. Handshakes run in their own tasks, ten seconds at most,
//! so a client that connects and says nothing never holds up the others; a failed handshake
//! drops that connection only.

use crate::error::{Error, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The certificate and key files of `gengbao serve --tls-cert --tls-key`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

const HANDSHAKE_SECONDS: u64 = 10;

fn unusable(path: &Path, problem: String) -> Error {
    Error::input(
        path,
        problem,
        "give the PEM certificate chain (--tls-cert) and its PEM private key (--tls-key) your CA issued; for a test, `openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 365 -subj /CN=gengbao`",
    )
}

impl TlsFiles {
    /// The server configuration of these files; refused, naming the file, when one cannot
    /// be read, holds no certificate or key, or the key does not match the certificate.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect())
            .map_err(|e| {
                unusable(
                    &self.cert,
                    format!("cannot be read as PEM certificates ({e})"),
                )
            })?;
        if certs.is_empty() {
            return Err(unusable(&self.cert, "holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| unusable(&self.key, format!("holds no PEM private key ({e})")))?;
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(&self.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            unusable(
                &self.key,
                format!(
                    "does not serve with certificate {} ({e})",
                    self.cert.display()
                ),
            )
        })?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Connections through their TLS handshake, for `axum::serve`.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (inside the runtime that serves).
    pub(crate) fn new(
        tcp: tokio::net::TcpListener,
        acceptor: TlsAcceptor,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (send, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    // Out of file handles and the like: wait instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let (acceptor, send) = (acceptor.clone(), send.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(HANDSHAKE_SECONDS),
                        acceptor.accept(stream),
                    );
                    if let Ok(Ok(tls)) = handshake.await {
                        let _ = send.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ends only with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
