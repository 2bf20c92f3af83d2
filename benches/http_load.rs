//! A service under load, with and without a `/debug/pprof/profile` running: does profiling
//! slow the service's answers? `cargo bench --bench http_load --features http`.
//!
//! The service (this process) serves its own `/work` route and the merged `/debug/pprof/`
//! router on a multi-threaded runtime. A client process (this binary, `client` argument)
//! sends 5000 requests from 64 concurrent connections, round-robin over `/work`, the index,
//! `symbol` and `cmdline`, and reports each request's latency. Rounds alternate between no
//! profile and a whole-process CPU profile running the whole time; each is run three times.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const REQUESTS: usize = 5000;
const CONCURRENCY: usize = 64;
const ROUNDS: usize = 3;

/// The service's own work: a few tens of microseconds of arithmetic.
#[inline(never)]
fn work() -> u64 {
    let mut x = 1u64;
    for i in 0..20_000u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
    }
    x
}

fn request(addr: SocketAddr, path: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if reply.starts_with(b"HTTP/1.1 200") {
        Ok(elapsed)
    } else {
        Err(String::from_utf8_lossy(&reply[..reply.len().min(80)]).into_owned())
    }
}

/// The client: latencies in microseconds on stdout, one per line; errors counted.
fn client(addr: SocketAddr, symbol: &str) {
    let paths = Arc::new([
        "/work".to_string(),
        "/debug/pprof/".to_string(),
        format!("/debug/pprof/symbol?{symbol}"),
        "/debug/pprof/cmdline".to_string(),
    ]);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (paths, next) = (paths.clone(), next.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= REQUESTS {
                        return out;
                    }
                    out.push(request(addr, &paths[i % paths.len()]));
                }
            })
        })
        .collect();
    let mut errors = 0;
    for worker in workers {
        for result in worker.join().unwrap() {
            match result {
                Ok(latency) => println!("{}", latency.as_micros()),
                Err(e) => {
                    errors += 1;
                    eprintln!("error: {e}");
                }
            }
        }
    }
    println!("errors={errors}");
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("client") {
        return client(args[1].parse().unwrap(), &args[2]);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/work", axum::routing::get(|| async { work().to_string() }))
        .merge(profiled::http::router(&profiled::http::Config::default()));
    runtime.spawn(async move { axum::serve(listener, app).await });
    let symbol = format!("{:#x}", work as *const () as usize);
    let exe = std::env::current_exe().unwrap();

    let mut results: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut errors = [0usize; 2];
    for round in 0..ROUNDS * 2 {
        let profiled = round % 2 == 1;
        let profile = profiled.then(|| {
            let mut stream = TcpStream::connect(addr).unwrap();
            write!(
                stream,
                "GET /debug/pprof/profile?seconds=60 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(200));
            // The profile is running: a second one is refused.
            let second = request(addr, "/debug/pprof/profile?seconds=1").unwrap_err();
            assert!(second.contains("500"), "{second}");
            stream
        });
        let out = Command::new(&exe)
            .args(["client", &addr.to_string(), &symbol])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            match line.strip_prefix("errors=") {
                Some(n) => errors[usize::from(profiled)] += n.parse::<usize>().unwrap(),
                None => results[usize::from(profiled)].push(line.parse().unwrap()),
            }
        }
        if let Some(stream) = profile {
            // Ends the profile early: the endpoint drops it when its client goes away.
            let _ = stream.shutdown(std::net::Shutdown::Both);
            drop(stream);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let row = |name: &str, v: &mut Vec<u64>, e: usize| {
        v.sort_unstable();
        let (p50, p99) = (percentile(v, 0.50), percentile(v, 0.99));
        println!(
            "| {name:<36} | {:>8} | {:>8.2} | {:>8.2} | {:>6} |",
            v.len(),
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            e
        );
        (p50, p99)
    };
    println!(
        "| {:<36} | requests |  p50 ms  |  p99 ms  | errors |",
        "run"
    );
    println!(
        "|{}|----------|----------|----------|--------|",
        "-".repeat(38)
    );
    let (off50, off99) = row("no profile", &mut results[0], errors[0]);
    let (on50, on99) = row(
        "CPU profile of every thread running",
        &mut results[1],
        errors[1],
    );
    println!(
        "\nwith a profile / without: p50 {:.3}x, p99 {:.3}x ({ROUNDS} rounds of {REQUESTS} requests \
         each, {CONCURRENCY} concurrent, interleaved)",
        on50 as f64 / off50 as f64,
        on99 as f64 / off99 as f64
    );
}
