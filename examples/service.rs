//! A small axum service with profiled's `/debug/pprof/` merged into its router.
//!
//! ```sh
//! cargo run --release --example service --features http
//! ```
//!
//! It prints the `go tool pprof` line to paste; the profile shows where the service spends
//! its CPU (`count_primes`, under the `/primes/{n}` handler). The service sends itself a
//! steady stream of requests, so there is something to see without a load generator.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;

/// The service's real work: counting primes below `n` by trial division.
#[inline(never)]
fn count_primes(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

async fn primes(Path(n): Path<u64>) -> String {
    let n = n.min(2_000_000);
    let count = tokio::task::spawn_blocking(move || count_primes(n))
        .await
        .unwrap_or_default();
    format!("{count} primes below {n}\n")
}

/// A client on its own thread, calling the service over and over.
fn traffic(addr: SocketAddr) {
    loop {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let request =
            format!("GET /primes/200000 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut reply = Vec::new();
        let _ = stream.write_all(request.as_bytes());
        let _ = stream.read_to_end(&mut reply);
    }
}

#[tokio::main]
async fn main() {
    let app = Router::new()
        .route("/primes/{n}", get(primes))
        .merge(profiled::http::router(&profiled::http::Config::default()));
    // Loopback only: the endpoints show the program's code to whoever can reach them.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:6060").await {
        Ok(listener) => listener,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let addr = listener.local_addr().unwrap();
    println!("serving http://{addr}/primes/{{n}} and http://{addr}/debug/pprof/");
    println!("profile it with:");
    println!("  go tool pprof -top 'http://{addr}/debug/pprof/profile?seconds=5'");
    std::thread::spawn(move || traffic(addr));
    axum::serve(listener, app).await.unwrap();
}
