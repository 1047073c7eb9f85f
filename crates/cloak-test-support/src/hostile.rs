//! The attacker's side of a connection, for the tests that hold a server to its limits: connect
//! from a chosen loopback address (Linux routes all of 127.0.0.0/8 to loopback, so one test can
//! be many clients), complete a TLS handshake without appraising anything (an attacker does not
//! care whom it talks to), send bytes slowly, and time how long the server takes to close.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// A TCP connection to `server` from `source` (any port).
pub async fn connect_from(source: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(server).await
}

/// A TLS session over `stream` that accepts whatever certificate the server shows.
pub async fn tls(stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}

/// Writes all of `bytes`.
pub async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await
}

/// Reads and discards until the server closes the connection (end of stream or an error),
/// for at most `limit`; how long that took, or `None` if it stayed open.
pub async fn closed_within<S: AsyncRead + Unpin>(io: &mut S, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let drained = async {
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, &mut buf)).await {
                Ok(()) if buf.filled().is_empty() => return,
                Ok(()) => {}
                Err(_) => return,
            }
        }
    };
    tokio::time::timeout(limit, drained)
        .await
        .ok()
        .map(|()| started.elapsed())
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) on `io` and reads the answer to its end:
/// the status and the raw bytes after the header. For requests no well-behaved client would
/// send, such as a captured request sent again.
pub async fn raw_http<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<(u16, Vec<u8>)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         content-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    write_all(io, head.as_bytes()).await?;
    write_all(io, body).await?;
    let mut answer = Vec::new();
    let mut scratch = [0u8; 16 * 1024];
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        match poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, &mut buf)).await {
            Ok(()) if buf.filled().is_empty() => break,
            Ok(()) => answer.extend_from_slice(buf.filled()),
            // A TLS peer that closes without close_notify: the answer is what arrived.
            Err(_) if !answer.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other("not an HTTP response"))?;
    let body_at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |at| at + 4);
    Ok((status, answer.split_off(body_at)))
}
