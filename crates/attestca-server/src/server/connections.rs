//! Serving connections on a listener: the TLS handshake under a deadline, HTTP/1.1 (header
//! names spelled as field clients expect, see [`super::header_case`]) and HTTP/2, a deadline
//! for a silent client, and a graceful drain when the process stops.
//!
//! Why a first-read deadline of our own: hyper's header-read timeout covers HTTP/1.1 request
//! heads, but a client that completes the handshake and then sends nothing at all (not even
//! the HTTP/2 preface) would otherwise hold its connection and task forever. Each connection's
//! IO is wrapped so that its first read must complete within `header_read_timeout`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::header_case::ConventionalCase;
use crate::access::RigAuthenticator;
use crate::http::ConnectionInfo;

/// What a listener needs besides its socket and its routes.
#[derive(Clone)]
pub struct ListenerSettings {
    /// `est` or `http`, for logs.
    pub name: &'static str,
    /// TLS: the acceptor and who identifies client certificates. `None`: plain HTTP.
    pub tls: Option<(tokio_rustls::TlsAcceptor, Arc<RigAuthenticator>)>,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
}

/// Accepts connections until `stop` resolves, then stops accepting and waits for the open
/// connections to finish their requests (they are told to close after the current one).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ListenerSettings,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let case = super::header_case::learn().await;
    tokio::pin!(stop);
    loop {
        let (tcp, peer_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = settings.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        let (app, settings, case) = (app.clone(), settings.clone(), case.clone());
        tokio::spawn(async move {
            let deadline = settings.header_read_timeout;
            match &settings.tls {
                None => {
                    let info = ConnectionInfo {
                        peer_addr: Some(peer_addr),
                        ..ConnectionInfo::default()
                    };
                    let io = FirstReadDeadline::new(tcp, deadline);
                    serve_http(io, info, (app, case), &settings, watcher).await;
                }
                Some((acceptor, rigs)) => {
                    let Some(stream) = handshake(acceptor, tcp, peer_addr, &settings).await else {
                        return;
                    };
                    let peer_certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|chain| rigs.identify_certificate(chain))
                        .unwrap_or_default();
                    let info = ConnectionInfo {
                        peer_addr: Some(peer_addr),
                        peer_certificate,
                    };
                    let io = FirstReadDeadline::new(stream, deadline);
                    serve_http(io, info, (app, case), &settings, watcher).await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!(
        listener = settings.name,
        open = graceful.count(),
        "listener closed; draining connections"
    );
    graceful.shutdown().await;
}

async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer_addr: SocketAddr,
    settings: &ListenerSettings,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let handshakes = &crate::metrics::METRICS.tls_handshakes;
    match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            handshakes.with_label_values(&["ok"]).inc();
            Some(stream)
        }
        Ok(Err(e)) => {
            handshakes.with_label_values(&["failed"]).inc();
            tracing::debug!(peer = %peer_addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            handshakes.with_label_values(&["timeout"]).inc();
            tracing::debug!(peer = %peer_addr, "TLS handshake timed out");
            None
        }
    }
}

async fn serve_http<I>(
    io: I,
    info: ConnectionInfo,
    (app, case): (Router, ConventionalCase),
    settings: &ListenerSettings,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer_addr;
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(info.clone());
            let (app, case) = (app.clone(), case.clone());
            async move {
                let mut response = app.oneshot(request.map(axum::body::Body::new)).await?;
                case.apply(&mut response);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .title_case_headers(true);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(listener = settings.name, peer = ?peer, error = %e, "connection ended with an error");
    }
}

/// An IO whose first read must complete before a deadline; after that it is the inner IO.
struct FirstReadDeadline<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FirstReadDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstReadDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > filled => {
                self.deadline = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = self
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing in time",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstReadDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
