//! The listening side: accepting connections under a cap, TLS (with optional client
//! certificates), HTTP/1.1 and HTTP/2 through hyper-util's auto builder, with a
//! timer so that the header read timeout works, an idle timeout on every
//! connection, and a graceful drain on shutdown.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;

use crate::{
    config::{Config, Limits},
    error::{Error, Result},
    service::{Activity, Conn, Service},
    tls,
};

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    limits: Limits,
    url: String,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `config.listen` (with TLS when `tls_cert` is set).
    pub async fn bind(config: &Config, service: Arc<Service>) -> Result<Self> {
        let addr = config.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.to_owned(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Listen {
            addr: addr.to_owned(),
            source,
        })?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::server_config(
                cert,
                key,
                config.client_ca.as_deref(),
            )?)),
            (None, None) if config.client_ca.is_none() => None,
            (None, None) => {
                return Err(crate::error::ConfigError::Missing {
                    mode: "--client-ca",
                    setting: "--tls-cert and --tls-key",
                }
                .into())
            }
            (Some(_), None) => {
                return Err(crate::error::ConfigError::Missing {
                    mode: "--tls-cert",
                    setting: "--tls-key",
                }
                .into())
            }
            (None, Some(_)) => {
                return Err(crate::error::ConfigError::Missing {
                    mode: "--tls-key",
                    setting: "--tls-cert",
                }
                .into())
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            listener,
            tls,
            service,
            limits: config.limits.clone(),
            url: format!("{scheme}://{local}"),
        })
    }

    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves until `shutdown` completes, then stops accepting and gives open
    /// responses `drain_timeout` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_buf_size(self.limits.max_header_bytes.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(128)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let builder = Arc::new(builder);
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of descriptors and the like: wait rather than spin.
                            tracing::warn!("accepting: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        self.service.metrics().refused_connections.inc();
                        tracing::debug!("{peer}: connection cap reached, closing");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let task = Accepted {
                        tcp,
                        peer,
                        tls: self.tls.clone(),
                        service: self.service.clone(),
                        builder: builder.clone(),
                        watcher: graceful.watcher(),
                        limits: self.limits.clone(),
                    };
                    tokio::spawn(async move {
                        let _permit = permit;
                        task.serve().await;
                    });
                }
                _ = prune.tick() => self.service.prune(),
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tracing::info!(
            "draining open connections for up to {:?}",
            self.limits.drain_timeout
        );
        if tokio::time::timeout(self.limits.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish in time");
        }
        Ok(())
    }
}

struct Accepted {
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: Limits,
}

impl Accepted {
    async fn serve(self) {
        let metrics = self.service.metrics().clone();
        metrics.open_connections.inc();
        let activity = Arc::new(Activity::default());
        activity.touch();
        match self.tls.clone() {
            None => {
                let conn = Conn {
                    peer: self.peer,
                    user: None,
                    activity: activity.clone(),
                };
                let io = Watched {
                    inner: self.tcp,
                    activity,
                };
                serve_io(
                    io,
                    conn,
                    self.service,
                    self.builder,
                    self.watcher,
                    &self.limits,
                )
                .await;
            }
            Some(acceptor) => {
                let handshake = tokio::time::timeout(
                    self.limits.header_read_timeout,
                    acceptor.accept(self.tcp),
                )
                .await;
                match handshake {
                    Ok(Ok(stream)) => {
                        let user = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| {
                                format!(
                                    "cert:{}",
                                    &deltaward_engine::Digest::of(c).to_string()[..16]
                                )
                            });
                        let conn = Conn {
                            peer: self.peer,
                            user,
                            activity: activity.clone(),
                        };
                        let io = Watched {
                            inner: stream,
                            activity,
                        };
                        serve_io(
                            io,
                            conn,
                            self.service,
                            self.builder,
                            self.watcher,
                            &self.limits,
                        )
                        .await;
                    }
                    Ok(Err(e)) => tracing::debug!("{}: TLS handshake failed: {e}", self.peer),
                    Err(_) => tracing::debug!("{}: TLS handshake timed out", self.peer),
                }
            }
        }
        metrics.open_connections.dec();
    }
}

async fn serve_io<I>(
    io: Watched<I>,
    conn: Conn,
    service: Arc<Service>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: &Limits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let activity = conn.activity.clone();
    let conn = Arc::new(conn);
    // The auto builder reads the first bytes (HTTP/1 or the HTTP/2 preface?) with no
    // timer of its own: a client that sends nothing would hold its slot until the
    // idle timeout. The first request must arrive within the header read timeout.
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = started.clone();
    let svc = hyper::service::service_fn(move |req| {
        first.store(true, std::sync::atomic::Ordering::Relaxed);
        let service = service.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(service.handle(req, &conn).await) }
    });
    let connection = watcher.watch(builder.serve_connection(TokioIo::new(io), svc).into_owned());
    tokio::pin!(connection);
    let first_deadline = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(first_deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = &mut connection => {
                if let Err(e) = r {
                    tracing::debug!("{peer}: {e}");
                }
                break;
            }
            () = &mut first_deadline, if !started.load(std::sync::atomic::Ordering::Relaxed) => {
                if !started.load(std::sync::atomic::Ordering::Relaxed) {
                    tracing::debug!("{peer}: no request within {:?}, closing", limits.header_read_timeout);
                    break;
                }
            }
            _ = tick.tick() => {
                if activity.idle() > limits.idle_timeout {
                    tracing::debug!("{peer}: idle for {:?}, closing", limits.idle_timeout);
                    break;
                }
            }
        }
    }
}

/// An I/O stream that records when bytes last moved, for the idle timeout.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
