//! The balancer configuration shipped for docker-compose
//! (`deploy/nginx.conf`), run by Debian's nginx on loopback in front of two
//! stand-in replicas whose availability the test switches: idempotent
//! requests move on from a replica answering 503, mutations are never sent
//! twice, a 503 from every replica stays a 503 with its `Retry-After`
//! (not nginx's 502), and a status-stream event reaches the client while
//! its stream stays open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::gate::harness::{Child, free_port};
use crate::gate::proxies::{require, wait_listening};

/// A stand-in replica: answers with its name, or 503 while `unavailable`.
struct Backend {
    name: &'static str,
    unavailable: AtomicBool,
    posts: AtomicUsize,
}

async fn answer(State(backend): State<Arc<Backend>>, method: Method) -> Response {
    if method == Method::POST {
        backend.posts.fetch_add(1, Ordering::SeqCst);
    }
    if backend.unavailable.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            backend.name,
        )
            .into_response();
    }
    backend.name.into_response()
}

/// One event at once, then nothing (the stream stays open).
async fn stream(State(backend): State<Arc<Backend>>) -> Response {
    let first = format!("data: {}\n\n", backend.name);
    let events = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures_util::stream::pending());
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(events),
    )
        .into_response()
}

async fn backend(name: &'static str) -> (Arc<Backend>, u16, JoinHandle<()>) {
    let state = Arc::new(Backend {
        name,
        unavailable: AtomicBool::new(false),
        posts: AtomicUsize::new(0),
    });
    let router = Router::new()
        .route("/v1/status/stream", get(stream))
        .fallback(answer)
        .with_state(Arc::clone(&state));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (state, port, task)
}

/// `deploy/nginx.conf` aimed at loopback ports, inside the minimal main
/// configuration of a non-system nginx under `dir`.
fn configuration(dir: &std::path::Path, port: u16, a: u16, b: u16) -> String {
    let shipped = include_str!("../../deploy/nginx.conf");
    let mut site = shipped.to_owned();
    for (from, to) in [
        ("issuer-a:8080", format!("127.0.0.1:{a}")),
        ("issuer-b:8080", format!("127.0.0.1:{b}")),
        ("listen 8080;", format!("listen 127.0.0.1:{port};")),
    ] {
        assert_eq!(
            site.matches(from).count(),
            1,
            "deploy/nginx.conf names {from} once"
        );
        site = site.replace(from, &to);
    }
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let dir = dir.display();
    format!(
        "daemon off;\n\
         master_process off;\n\
         worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
             access_log off;\n\
             client_body_temp_path {dir}/client_body;\n\
             proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fastcgi;\n\
             uwsgi_temp_path {dir}/uwsgi;\n\
             scgi_temp_path {dir}/scgi;\n\
             include {dir}/site.conf;\n\
         }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_balancer_routes_around_unavailable_replicas() {
    let nginx = require("nginx", &[], &["nginx"]);
    let (a, a_port, _a_task) = backend("a").await;
    let (b, b_port, _b_task) = backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, configuration(dir.path(), port, a_port, b_port)).unwrap();
    let log = dir.path().join("error.log");
    let child = std::process::Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    wait_listening(&mut child, port, &log, "nginx").await;

    latchkey::cli::client::install_tls_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let send = |method: Method| {
        let request = http.request(method, format!("{base}/v1/keys"));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_owned());
            (status, retry_after, response.text().await.unwrap())
        }
    };

    // Both replicas up: requests are spread over both.
    let mut served = Vec::new();
    for _ in 0..4 {
        let (status, _, body) = send(Method::GET).await;
        assert_eq!(status, 200);
        served.push(body);
    }
    assert!(
        served.contains(&"a".to_owned()) && served.contains(&"b".to_owned()),
        "{served:?}"
    );

    // Replica a cannot write: reads move on to b, mutations are not replayed.
    a.unavailable.store(true, Ordering::SeqCst);
    for _ in 0..6 {
        assert_eq!(send(Method::GET).await, (200, None, "b".to_owned()));
    }
    let mut refused = 0;
    for _ in 0..6 {
        match send(Method::POST).await {
            (200, None, body) => assert_eq!(body, "b"),
            (503, Some(retry_after), body) => {
                assert_eq!((retry_after.as_str(), body.as_str()), ("1", "a"));
                refused += 1;
            }
            other => panic!("a POST through the balancer: {other:?}"),
        }
    }
    assert!(refused > 0, "no POST reached the unavailable replica");
    assert_eq!(
        a.posts.load(Ordering::SeqCst) + b.posts.load(Ordering::SeqCst),
        6,
        "a POST was sent to more than one replica"
    );

    // Every replica unavailable: the client sees their 503 and Retry-After,
    // request after request, never a 502 from nginx.
    b.unavailable.store(true, Ordering::SeqCst);
    for _ in 0..4 {
        let (status, retry_after, _) = send(Method::GET).await;
        assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    }

    // Back up: the first status-stream event arrives while the stream stays open.
    a.unavailable.store(false, Ordering::SeqCst);
    b.unavailable.store(false, Ordering::SeqCst);
    let mut stream = http
        .get(format!("{base}/v1/status/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(3), stream.chunk())
        .await
        .expect("the first event was held back by the balancer")
        .unwrap()
        .expect("the stream ended");
    let text = String::from_utf8_lossy(&first);
    assert!(text == "data: a\n\n" || text == "data: b\n\n", "{text:?}");
    drop(stream);
    assert!(child.terminate(), "nginx stops cleanly");
}
