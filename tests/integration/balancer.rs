//! A TCP round-robin balancer on 127.0.0.1 for replica tests: each
//! accepted connection goes to the next backend in turn, skipping a
//! backend that refuses the connection (a killed replica), as a load
//! balancer's passive health check would. It forwards bytes only, so it
//! carries HTTP, keep-alive and event streams alike.
//!
//! Self-contained (tokio) so other test binaries can include it with
//! `#[path = "../integration/balancer.rs"] mod balancer;`.

// Each test binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long one backend may take to accept before the next is tried.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// The balancer's accept loop; dropping it closes every connection through it.
#[derive(Debug)]
pub struct Balancer {
    addr: SocketAddr,
    /// Connections forwarded to each backend, in the order given.
    forwarded: Arc<Vec<AtomicUsize>>,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Listens on a free port of 127.0.0.1 and forwards to `backends`.
    /// Must be called inside a tokio runtime.
    pub fn start(backends: Vec<SocketAddr>) -> Balancer {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std)
            .expect("bind the balancer on 127.0.0.1");
        let addr = listener.local_addr().expect("the balancer's address");
        let forwarded: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let counts = Arc::clone(&forwarded);
        let task = tokio::spawn(async move {
            // Dropped with the task: aborts every forwarding connection.
            let mut connections = JoinSet::new();
            let mut next = 0usize;
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    // Out of file descriptors, say: let some close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let first = next;
                next = (next + 1) % backends.len();
                let backends = backends.clone();
                let counts = Arc::clone(&counts);
                connections.spawn(forward(inbound, backends, first, counts));
            }
        });
        Balancer {
            addr,
            forwarded,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections went to each backend so far, in the order given.
    pub fn forwarded(&self) -> Vec<usize> {
        self.forwarded
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to the backends from `first` on, in turn, and copies bytes both
/// ways with the first that accepts; closes `inbound` when none does.
async fn forward(
    mut inbound: TcpStream,
    backends: Vec<SocketAddr>,
    first: usize,
    counts: Arc<Vec<AtomicUsize>>,
) {
    for i in 0..backends.len() {
        let index = (first + i) % backends.len();
        let connect = tokio::time::timeout(CONNECT_WITHIN, TcpStream::connect(backends[index]));
        if let Ok(Ok(mut outbound)) = connect.await {
            counts[index].fetch_add(1, Ordering::SeqCst);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::Balancer;

    /// A server that answers each line with `name: line`; stops (and
    /// refuses connections) when the handle is aborted.
    async fn echo(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let reply = format!("{name}: {}", String::from_utf8_lossy(&buf[..n]));
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    /// Sends `text` through a new connection; the reply, or "" when the
    /// connection is closed without one.
    async fn ask(balancer: &Balancer, text: &str) -> String {
        let mut stream = TcpStream::connect(balancer.addr()).await.unwrap();
        stream.write_all(text.as_bytes()).await.unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn connections_alternate_and_skip_a_dead_backend() {
        let (a, a_task) = echo("a").await;
        let (b, b_task) = echo("b").await;
        let balancer = Balancer::start(vec![a, b]);
        assert_eq!(balancer.addr().ip().to_string(), "127.0.0.1");
        assert_eq!(
            balancer.url(),
            format!("http://127.0.0.1:{}", balancer.port())
        );

        let mut replies = Vec::new();
        for i in 0..4 {
            replies.push(ask(&balancer, &format!("hello {i}")).await);
        }
        assert_eq!(
            replies,
            ["a: hello 0", "b: hello 1", "a: hello 2", "b: hello 3"]
        );
        assert_eq!(balancer.forwarded(), [2, 2]);

        // One connection carries many exchanges to the same backend.
        let mut stream = TcpStream::connect(balancer.addr()).await.unwrap();
        for text in ["one", "two"] {
            stream.write_all(text.as_bytes()).await.unwrap();
            let mut buf = [0u8; 64];
            let n = stream.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], format!("a: {text}").as_bytes());
        }
        drop(stream);

        b_task.abort();
        let _ = b_task.await;
        for i in 0..3 {
            assert_eq!(ask(&balancer, &format!("x{i}")).await, format!("a: x{i}"));
        }
        assert_eq!(balancer.forwarded(), [6, 2]);

        a_task.abort();
        let _ = a_task.await;
        assert_eq!(ask(&balancer, "anyone?").await, "", "no backend: closed");
    }
}
