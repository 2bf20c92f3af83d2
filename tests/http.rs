//! `/debug/pprof/` as Go serves it, read by the real `go tool pprof`, on loopback.
#![cfg(all(feature = "http", target_os = "linux", target_arch = "x86_64"))]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use profiled::http::{Config, serve};

mod support;
use support::go;

// The service's allocator: `heap` and `allocs` read it.
#[global_allocator]
static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();

/// The endpoint profiles the whole process and allows one CPU profile at a time, so the
/// tests that take one take turns.
static ONE_PROFILE: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_PROFILE.lock().unwrap_or_else(|e| e.into_inner())
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request, the connection closed after the reply.
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete reply");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status: status.parse().unwrap(),
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, b"")
}

/// An error as net/http/pprof sends it, which `go tool pprof` prints.
fn assert_go_error(reply: &Reply, status: u16, text: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert!(reply.text().starts_with(text), "{:?}", reply.text());
    assert_eq!(reply.header("x-go-pprof"), Some("1"));
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(reply.header("content-disposition"), None);
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
}

/// `go tool pprof ARGS URL`, with its downloads kept out of $HOME.
fn pprof(args: &[&str], url: &str) -> std::process::Output {
    let tmp = tempfile::tempdir().unwrap();
    Command::new(go())
        .args(["tool", "pprof"])
        .args(args)
        .arg(url)
        .env("PPROF_TMPDIR", tmp.path())
        .env("HOME", tmp.path())
        .output()
        .unwrap()
}

/// Burns CPU on a thread of its own until dropped: the service's work.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[inline(never)]
fn service_hot_loop(stop: &AtomicBool) {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        std::hint::black_box(x);
    }
}

impl Load {
    fn start() -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || service_hot_loop(&flag));
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().map(|t| t.join());
    }
}

/// 64 KiB blocks, kept by the caller.
#[inline(never)]
fn service_keeps(blocks: usize) -> Vec<Vec<u8>> {
    (0..blocks).map(|_| vec![1u8; 64 * 1024]).collect()
}

/// 64 KiB blocks, freed at once.
#[inline(never)]
fn allocates_in_the_window(blocks: usize) {
    for _ in 0..blocks {
        std::hint::black_box(vec![2u8; 64 * 1024]);
    }
}

/// The first row of `go tool pprof ARGS -top URL` (flat flat% sum% cum cum% name).
fn top_row(args: &[&str], url: &str) -> String {
    let mut all = args.to_vec();
    all.push("-top");
    let out = pprof(&all, url);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?} {url}: {stderr}\n{stdout}");
    stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("{args:?} {url}: no rows\n{stdout}\n{stderr}"))
        .to_string()
}

#[test]
fn go_tool_pprof_reads_the_heap_and_allocs_profiles() {
    let server = serve("127.0.0.1:0", Config::default()).unwrap();
    let base = format!("http://{}/debug/pprof", server.local_addr());
    // 256 MiB kept, allocated on a thread the server never saw: the profile has every thread.
    let kept = std::thread::spawn(|| service_keeps(4096)).join().unwrap();
    let heap = format!("{base}/heap");
    let row = top_row(&["-sample_index=inuse_space"], &heap);
    assert!(row.ends_with("http::service_keeps::{{closure}}"), "{row}");
    // About 256 MiB: 4096 blocks sampled with probability 1 - e^-1/8 each (~480 samples).
    let mb: f64 = row
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches("MB")
        .parse()
        .unwrap();
    assert!((200.0..330.0).contains(&mb), "{row}");
    // allocs: the same data, by bytes allocated.
    let row = top_row(&[], &format!("{base}/allocs"));
    assert!(row.ends_with("http::service_keeps::{{closure}}"), "{row}");
    // Go's legacy text (debug=1), unbiased by go tool pprof with the rate in its header.
    let text = get(server.local_addr(), "/debug/pprof/heap?debug=1").text();
    assert!(text.starts_with("heap profile: "), "{text:.200}");
    assert!(text.contains("@ heap/1048576\n"), "{text:.200}");
    assert!(
        text.contains("http::service_keeps"),
        "frames named in the text"
    );
    let row = top_row(&["-sample_index=inuse_space"], &format!("{heap}?debug=1"));
    assert!(row.ends_with("http::service_keeps::{{closure}}"), "{row}");
    drop(kept);

    // A delta: only what was allocated during the 2 seconds.
    let window = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        allocates_in_the_window(2048);
    });
    let row = top_row(
        &["-sample_index=alloc_space"],
        &format!("{base}/allocs?seconds=2"),
    );
    window.join().unwrap();
    assert!(row.ends_with("http::allocates_in_the_window"), "{row}");
    let out = pprof(
        &["-sample_index=alloc_space", "-top"],
        &format!("{base}/allocs?seconds=1"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("service_keeps"),
        "before the window: {stdout}"
    );
}

/// One contention on a `profiled::sync` lock: `hold` in the holder, waited for by `wait`.
fn contend(
    hold: fn(&profiled::sync::Mutex<u64>, &std::sync::Barrier),
    wait: fn(&profiled::sync::Mutex<u64>),
) {
    let m = Arc::new(profiled::sync::Mutex::new(0u64));
    let held = Arc::new(std::sync::Barrier::new(2));
    let holder = {
        let (m, held) = (m.clone(), held.clone());
        std::thread::spawn(move || hold(&m, &held))
    };
    held.wait();
    wait(&m);
    holder.join().unwrap();
}

#[inline(never)]
fn service_holds(m: &profiled::sync::Mutex<u64>, held: &std::sync::Barrier) {
    let mut g = m.lock().unwrap();
    held.wait();
    std::thread::sleep(Duration::from_millis(100));
    *g += 1;
}

#[inline(never)]
fn service_waits(m: &profiled::sync::Mutex<u64>) {
    *m.lock().unwrap() += 1;
}

#[inline(never)]
fn service_waits_unwatched(m: &profiled::sync::Mutex<u64>) {
    *m.lock().unwrap() += 1;
}

#[inline(never)]
fn service_waits_in_the_window(m: &profiled::sync::Mutex<u64>) {
    *m.lock().unwrap() += 1;
}

#[test]
fn go_tool_pprof_reads_the_block_and_mutex_profiles() {
    let server = serve("127.0.0.1:0", Config::default()).unwrap();
    let base = format!("http://{}/debug/pprof", server.local_addr());
    // Off until switched on, as Go's: this wait is not recorded.
    contend(service_holds, service_waits_unwatched);
    profiled::sync::set_block_profile_rate(1);
    assert_eq!(profiled::sync::set_mutex_profile_fraction(1), 0);
    assert_eq!(profiled::sync::set_mutex_profile_fraction(-1), 1);
    // On threads the server never saw: the profiles have every thread.
    std::thread::spawn(|| contend(service_holds, service_waits))
        .join()
        .unwrap();
    let row = top_row(&["-sample_index=delay"], &format!("{base}/block"));
    assert!(row.ends_with("http::service_waits"), "{row}");
    let row = top_row(&["-sample_index=delay"], &format!("{base}/mutex"));
    assert!(row.ends_with("http::service_holds"), "{row}");
    let out = pprof(&["-top"], &format!("{base}/block"));
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(!top.contains("unwatched"), "{top}");

    // Go's legacy text, read by go tool pprof.
    let text = get(server.local_addr(), "/debug/pprof/block?debug=1").text();
    assert!(
        text.starts_with("--- contention:\ncycles/second=1000000000\n"),
        "{text:.300}"
    );
    assert!(text.contains("http::service_waits"), "{text:.2000}");
    let row = top_row(&["-sample_index=delay"], &format!("{base}/block?debug=1"));
    assert!(row.ends_with("http::service_waits"), "{row}");
    let text = get(server.local_addr(), "/debug/pprof/mutex?debug=1").text();
    assert!(text.starts_with("--- mutex:\n"), "{text:.300}");
    let row = top_row(&["-sample_index=delay"], &format!("{base}/mutex?debug=1"));
    assert!(row.ends_with("http::service_holds"), "{row}");

    // A delta: only the waits of the 2 seconds.
    let window = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        contend(service_holds, service_waits_in_the_window);
    });
    let row = top_row(&["-sample_index=delay"], &format!("{base}/block?seconds=2"));
    window.join().unwrap();
    assert!(row.ends_with("http::service_waits_in_the_window"), "{row}");
    profiled::sync::set_block_profile_rate(0);
    assert_eq!(profiled::sync::set_mutex_profile_fraction(0), 1);
}

/// The cum% `go tool pprof -top` shows for the first row naming `function`.
fn cum_share(top: &str, function: &str) -> Option<f64> {
    let row = top.lines().find(|l| l.contains(function))?;
    let cum = row.split_whitespace().nth(4)?;
    cum.trim_end_matches('%').parse().ok()
}

#[test]
fn go_tool_pprof_reads_a_cpu_profile_of_the_running_process() {
    let _turn = turn();
    let server = serve("127.0.0.1:0", Config::default()).unwrap();
    let _load = Load::start();
    let url = format!("http://{}/debug/pprof/profile", server.local_addr());
    let out = pprof(&["-top", "-seconds", "2"], &url);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}\n{stdout}");
    // The load runs on a thread the request never saw: the profile samples every thread.
    let share = cum_share(&stdout, "service_hot_loop");
    assert!(
        share.is_some_and(|s| s >= 50.0),
        "service_hot_loop should hold most of the CPU:\n{stdout}\n{stderr}"
    );
    // 2 s of one busy thread: the total is about 2 s of CPU.
    assert!(stdout.contains("Duration: 2"), "{stdout}");
}

#[test]
fn go_tool_pprof_prints_the_servers_errors() {
    let server = serve("127.0.0.1:0", Config::default()).unwrap();
    let url = format!("http://{}/debug/pprof/goroutine", server.local_addr());
    let out = pprof(&["-raw"], &url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("server response: 404 Not Found - Unknown profile"),
        "{stderr}"
    );
}

#[test]
fn errors_follow_gos_protocol() {
    let config = Config::default().with_max_seconds(5);
    let server = serve("127.0.0.1:0", config).unwrap();
    let addr = server.local_addr();
    assert_go_error(&get(addr, "/debug/pprof/nope"), 404, "Unknown profile");
    assert_go_error(&get(addr, "/debug/pprof/goroutine"), 404, "Unknown profile");
    for bad in ["abc", "-1", "0", "1.5"] {
        assert_go_error(
            &get(addr, &format!("/debug/pprof/heap?seconds={bad}")),
            400,
            "invalid value for \"seconds\" - must be a positive integer",
        );
    }
    assert_go_error(
        &get(addr, "/debug/pprof/allocs?seconds=1&debug=1"),
        400,
        "seconds and debug params are incompatible",
    );
    let too_long = "profile duration exceeds server's WriteTimeout";
    assert_go_error(&get(addr, "/debug/pprof/allocs?seconds=6"), 400, too_long);
    assert_go_error(
        &get(addr, "/debug/pprof/profile?seconds=100000"),
        400,
        too_long,
    );
    // As Go does, a `seconds` that is no positive integer means the default 30 s, which is
    // over this server's maximum of 5.
    for bad in ["abc", "-1", "0", "1.5"] {
        let reply = get(addr, &format!("/debug/pprof/profile?seconds={bad}"));
        assert_go_error(&reply, 400, too_long);
        assert!(
            reply.text().contains("maximum is 5 seconds"),
            "{}",
            reply.text()
        );
    }
}

#[test]
fn one_cpu_profile_at_a_time_and_a_client_that_leaves_ends_its_own() {
    let _turn = turn();
    let server = serve("127.0.0.1:0", Config::default()).unwrap();
    let addr = server.local_addr();
    // A long profile whose client goes away after half a second.
    let mut leaving = TcpStream::connect(addr).unwrap();
    write!(
        leaving,
        "GET /debug/pprof/profile?seconds=60 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    // Until the server has started it, a short profile of ours runs and answers 200; once
    // it has, ours is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let reply = get(addr, "/debug/pprof/profile?seconds=1");
        if reply.status != 200 || Instant::now() > deadline {
            break reply;
        }
    };
    assert_go_error(
        &refused,
        500,
        "Could not enable CPU profiling: cpu profiling already in use",
    );
    drop(leaving);
    // The server notices, drops that profile, and the next one may start.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(addr, "/debug/pprof/profile?seconds=1");
        if reply.status == 200 {
            assert_eq!(
                reply.header("content-type"),
                Some("application/octet-stream")
            );
            assert_eq!(
                reply.header("content-disposition"),
                Some("attachment; filename=\"profile\"")
            );
            assert_eq!(&reply.body[..2], &[0x1f, 0x8b], "gzipped");
            profiled::pprof::decode(&reply.body).expect("a pprof profile");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned profile still holds the endpoint: {}",
            reply.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Names of the functions on the stacks of a profile's samples.
fn functions(gz: &[u8]) -> Vec<String> {
    let p = profiled::pprof::decode(gz).unwrap();
    let mut names: Vec<String> = p
        .sample
        .iter()
        .flat_map(|s| &s.location_id)
        .flat_map(|&id| &p.location[id as usize - 1].line)
        .map(|l| p.string_table[p.function[l.function_id as usize - 1].name as usize].clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[inline(never)]
fn test_thread_work(cpu: Duration) {
    let start = thread_cpu();
    let mut x = 0u64;
    while thread_cpu() - start < cpu {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

#[test]
fn a_test_profile_and_the_endpoint_profile_run_side_by_side() {
    let _turn = turn();
    let server = serve("127.0.0.1:0", Config::default()).unwrap();
    let addr = server.local_addr();
    let _load = Load::start();
    let endpoint = std::thread::spawn(move || get(addr, "/debug/pprof/profile?seconds=3"));
    std::thread::sleep(Duration::from_millis(300));
    // This thread's own profile, while the whole-process one runs.
    let mine = profiled::Profile::start("mine", &profiled::Config::default()).unwrap();
    let before = thread_cpu();
    test_thread_work(Duration::from_millis(300));
    let spent = thread_cpu() - before;
    let report = mine.finish().unwrap().remove(0);
    let reply = endpoint.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The test's profile holds its own thread, all of its CPU, and not the load's.
    let own = functions(report.pprof_gz());
    assert!(
        own.iter().any(|f| f.ends_with("test_thread_work")),
        "{own:?}"
    );
    assert!(
        !own.iter().any(|f| f.contains("service_hot_loop")),
        "{own:?}"
    );
    let (got, want) = (
        report.cpu_time().unwrap().as_secs_f64(),
        spent.as_secs_f64(),
    );
    assert!(
        (got - want).abs() <= 0.1 * want + 0.01,
        "test profile: {got:.3} s of CPU, the thread used {want:.3} s"
    );
    // The endpoint's profile holds every thread: the load's and this one's.
    let whole = functions(&reply.body);
    assert!(
        whole.iter().any(|f| f.contains("service_hot_loop")),
        "{whole:?}"
    );
    assert!(
        whole.iter().any(|f| f.ends_with("test_thread_work")),
        "{whole:?}"
    );
}

#[test]
fn symbol_cmdline_and_index() {
    let server = serve("127.0.0.1:0", Config::default()).unwrap();
    let addr = server.local_addr();
    // go tool pprof probes with a bare GET.
    let probe = get(addr, "/debug/pprof/symbol");
    assert_eq!(probe.status, 200);
    assert_eq!(probe.text(), "num_symbols: 1\n");
    let here = symbol_cmdline_and_index as *const () as usize;
    for reply in [
        get(addr, &format!("/debug/pprof/symbol?{here:#x}+0x1")),
        request(
            addr,
            "POST",
            "/debug/pprof/symbol",
            format!("{here:#x}+0x1").as_bytes(),
        ),
    ] {
        assert_eq!(reply.status, 200);
        let text = reply.text();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{here:#x} ")))
            .unwrap_or_else(|| panic!("no name for {here:#x}:\n{text}"));
        assert!(line.ends_with("symbol_cmdline_and_index"), "{line}");
        // 0x1 is in no object: left out, as Go leaves out what it cannot name.
        assert!(!text.contains("0x1 "), "{text}");
    }
    let cmdline = get(addr, "/debug/pprof/cmdline");
    assert_eq!(cmdline.status, 200);
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(cmdline.text(), args.join("\0"));
    let index = get(addr, "/debug/pprof/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));
    for link in [
        "href='profile'",
        "href='symbol'",
        "href='cmdline'",
        "href='threads?debug=1'",
        "href='heap'",
        "href='allocs'",
    ] {
        assert!(index.text().contains(link), "{}", index.text());
    }
    assert!(!index.text().contains("not served"), "{}", index.text());
    // The thread count, as Go counts goroutines: this process has several threads.
    let count: usize = index
        .text()
        .split("<tr><td>")
        .find(|row| row.contains(">threads<"))
        .and_then(|row| row.split("</td>").next()?.parse().ok())
        .expect("a count for threads");
    assert!(count >= 2, "{count}");
    let bare = get(addr, "/debug/pprof");
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), Some("/debug/pprof/"));
}

#[test]
fn the_router_merges_into_an_app_and_caps_symbol_bodies() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "the service" }))
            .merge(profiled::http::router(&Config::default()));
        let call = |request: Request<Body>| app.clone().oneshot(request);
        let own = call(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(own.status(), 200);
        let cmdline = call(
            Request::get("/debug/pprof/cmdline")
                .body(Body::empty())
                .unwrap(),
        );
        assert_eq!(cmdline.await.unwrap().status(), 200);
        let big = Request::post("/debug/pprof/symbol")
            .body(Body::from(vec![b'1'; 2 << 20]))
            .unwrap();
        assert_eq!(call(big).await.unwrap().status(), 413);
    });
}

/// `go tool pprof ARGS URL` with Go's `SSL_CERT_FILE` pointing at `ca` (or at nothing).
fn pprof_trusting(ca: Option<&std::path::Path>, args: &[&str], url: &str) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(go());
    cmd.args(["tool", "pprof"])
        .args(args)
        .arg(url)
        .env("PPROF_TMPDIR", tmp.path())
        .env("HOME", tmp.path());
    match ca {
        Some(ca) => cmd.env("SSL_CERT_FILE", ca),
        // A file with no certificate: nothing is trusted, not even the system's CAs.
        None => cmd.env("SSL_CERT_FILE", tmp.path().join("none.pem")),
    };
    let out = cmd.output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[cfg(feature = "http-tls")]
mod tls {
    use super::*;
    use profiled::http::Credentials;

    fn tls_server(ca_dir: &std::path::Path, credentials: Credentials) -> profiled::http::Server {
        let config = Config::default()
            .with_generated_tls(ca_dir, ["127.0.0.1"])
            .with_credentials(credentials);
        serve("127.0.0.1:0", config).unwrap()
    }

    /// The line the server prints, pasted into a shell: the CA through `SSL_CERT_FILE`, the
    /// token read from its owner-only file beside the CA (never in the line, so never in
    /// the service's logs), the host one that resolves here (not the first name given).
    /// Then the same over `https+insecure://`, and with wrong or no credentials; a restart
    /// keeps the token.
    #[test]
    fn go_tool_pprof_reads_it_over_tls_with_the_printed_line() {
        use std::os::unix::fs::PermissionsExt;
        let _turn = turn();
        let dir = tempfile::tempdir().unwrap();
        let config =
            || Config::default().with_generated_tls(dir.path(), ["pprof.invalid", "127.0.0.1"]);
        let server = serve("127.0.0.1:0", config()).unwrap();
        let token_file = server
            .token_file()
            .expect("generated credentials")
            .to_owned();
        assert_eq!(token_file, dir.path().join("token"));
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}: readable by its owner only");
        let token = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(token.len(), 64);
        let command = server.pprof_command().to_string();
        let ca = dir.path().join("ca.pem");
        assert_eq!(
            command,
            format!(
                "SSL_CERT_FILE={} go tool pprof \"https://pprof:$(cat '{}')@127.0.0.1:{}/debug/pprof/profile?seconds=30\"",
                ca.display(),
                token_file.display(),
                server.local_addr().port()
            )
        );
        assert!(!command.contains(&token));

        // Pasted, with a 2 s profile instead of 30 and -top to print it.
        let pasted = command
            .replace(
                "go tool pprof",
                &format!("{} tool pprof -top", go().display()),
            )
            .replace("seconds=30", "seconds=2");
        let tmp = tempfile::tempdir().unwrap();
        let _load = Load::start();
        let out = Command::new("sh")
            .args(["-c", &pasted])
            .env("PPROF_TMPDIR", tmp.path())
            .env("HOME", tmp.path())
            .output()
            .unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{pasted}: {text}");
        assert!(
            cum_share(&text, "service_hot_loop").is_some_and(|s| s >= 50.0),
            "{text}"
        );
        let addr = server.local_addr();
        let insecure =
            format!("https+insecure://pprof:{token}@{addr}/debug/pprof/profile?seconds=1");
        let (ok, out) = pprof_trusting(None, &["-top"], &insecure);
        assert!(ok, "{out}");
        assert!(out.contains("service_hot_loop"), "{out}");

        let wrong = format!("https://pprof:{token}x@{addr}/debug/pprof/profile?seconds=1");
        let (ok, out) = pprof_trusting(Some(&ca), &["-raw"], &wrong);
        assert!(!ok);
        assert!(
            out.contains("server response: 401 Unauthorized - Unauthorized"),
            "{out}"
        );
        let none = format!("https://{addr}/debug/pprof/profile?seconds=1");
        let (ok, out) = pprof_trusting(Some(&ca), &["-raw"], &none);
        assert!(!ok);
        assert!(out.contains("401 Unauthorized"), "{out}");

        // A restart reads the token back: scrapers given the file keep working.
        drop(server);
        let again = serve("127.0.0.1:0", config()).unwrap();
        let kept = std::fs::read_to_string(again.token_file().unwrap()).unwrap();
        assert_eq!(kept.trim(), token);
        let url = format!(
            "https://pprof:{token}@{}/debug/pprof/threads",
            again.local_addr()
        );
        let (ok, out) = pprof_trusting(Some(&ca), &["-raw"], &url);
        assert!(ok, "{out}");
    }

    /// Credentials of the user's own are read from `$PPROF_TOKEN` in the printed line.
    #[test]
    fn own_credentials_are_not_printed() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = Credentials::generate();
        let server = tls_server(dir.path(), credentials.clone());
        assert!(server.token_file().is_none());
        let command = server.pprof_command();
        assert!(
            command.contains("https://pprof:$PPROF_TOKEN@127.0.0.1:"),
            "{command}"
        );
        assert!(!command.contains(credentials.token()), "{command}");
    }

    /// A client that trusts another CA refuses the server: the certificate is checked.
    #[test]
    fn a_client_trusting_another_ca_refuses_the_server() {
        let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let credentials = Credentials::generate();
        let server = tls_server(ours.path(), credentials.clone());
        drop(tls_server(theirs.path(), Credentials::generate()));
        let url = format!(
            "https://pprof:{}@{}/debug/pprof/cmdline",
            credentials.token(),
            server.local_addr()
        );
        let (ok, out) = pprof_trusting(Some(&theirs.path().join("ca.pem")), &["-raw"], &url);
        assert!(!ok);
        assert!(
            out.contains("x509: certificate signed by unknown authority"),
            "{out}"
        );
        let (ok, out) = pprof_trusting(None, &["-raw"], &url);
        assert!(!ok);
        assert!(
            out.contains("x509: certificate signed by unknown authority"),
            "{out}"
        );
    }

    #[test]
    fn the_ca_key_is_private_and_kept_across_starts() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(tls_server(dir.path(), Credentials::generate()));
        let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        drop(tls_server(dir.path(), Credentials::generate()));
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
    }

    /// `curl --cacert ca.pem --cert C --key K -u pprof:TOKEN URL`: exit status and body.
    fn curl(
        ca: &std::path::Path,
        client: Option<(&std::path::Path, &std::path::Path)>,
        user: &str,
        url: &str,
    ) -> (bool, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "20",
            "--cacert",
        ])
        .arg(ca)
        .args(["-u", user, url]);
        if let Some((cert, key)) = client {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let out = cmd.output().expect("curl, for the mutual TLS test");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Mutual TLS: a client certificate from the server's CA is let in; none, or one from
    /// another CA, is refused in the handshake.
    #[test]
    fn client_certificates_from_the_ca_and_no_other() {
        let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let credentials = Credentials::generate();
        let config = Config::default()
            .with_generated_tls(ours.path(), ["127.0.0.1"])
            .with_client_certificates(true)
            .with_credentials(credentials.clone());
        let server = serve("127.0.0.1:0", config).unwrap();
        let (cert, key) = profiled::http::client_certificate(ours.path(), "scraper").unwrap();
        let (other_cert, other_key) =
            profiled::http::client_certificate(theirs.path(), "intruder").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let url = format!(
            "https://127.0.0.1:{}/debug/pprof/cmdline",
            server.local_addr().port()
        );
        let user = format!("pprof:{}", credentials.token());
        let ca = ours.path().join("ca.pem");
        let (ok, out) = curl(&ca, Some((&cert, &key)), &user, &url);
        assert!(ok, "{out}");
        assert!(out.contains("http-"), "the command line: {out}");
        let (ok, out) = curl(&ca, None, &user, &url);
        assert!(!ok, "no client certificate: {out}");
        let (ok, out) = curl(&ca, Some((&other_cert, &other_key)), &user, &url);
        assert!(!ok, "a client certificate from another CA: {out}");
        // The certificate alone is not enough: the credentials are still asked for.
        let (ok, out) = curl(&ca, Some((&cert, &key)), "pprof:wrong", &url);
        assert!(!ok && out.contains("401"), "{out}");
        // Client certificates need the generated CA.
        let err = serve(
            "127.0.0.1:0",
            Config::default().with_client_certificates(true),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("with_generated_tls"), "{err}");
    }

    /// Off loopback, TLS with generated credentials is accepted; the line printed reads
    /// their token from its file.
    #[test]
    fn tls_without_credentials_gets_generated_ones() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default().with_generated_tls(dir.path(), ["127.0.0.1"]);
        let server = serve("0.0.0.0:0", config).unwrap();
        assert!(
            server.pprof_command().contains("https://pprof:$(cat '")
                && server.pprof_command().contains("@localhost:"),
            "{}",
            server.pprof_command()
        );
        let token = std::fs::read_to_string(server.token_file().unwrap()).unwrap();
        let token = token.trim();
        assert!(
            token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
            "{token}"
        );
        // Plain HTTP to the TLS port gets no HTTP answer.
        let mut plain = TcpStream::connect(("127.0.0.1", server.local_addr().port())).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(plain, "GET /debug/pprof/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// Off loopback without TLS and credentials: refused, naming every way out; the loudly
/// named opt-out starts it.
#[test]
fn off_loopback_needs_tls_and_credentials_or_the_loud_opt_out() {
    let err = serve("0.0.0.0:0", Config::default())
        .unwrap_err()
        .to_string();
    for option in [
        "without TLS and credentials",
        "with_generated_tls",
        "with_tls_files",
        "with_credentials",
        "insecure_plaintext_on_non_loopback(true)",
        "a loopback address",
    ] {
        assert!(err.contains(option), "{option}: {err}");
    }
    let server = serve(
        "0.0.0.0:0",
        Config::default().insecure_plaintext_on_non_loopback(true),
    )
    .unwrap();
    let local = format!("127.0.0.1:{}", server.local_addr().port());
    assert_eq!(get(local.parse().unwrap(), "/debug/pprof/").status, 200);
}

/// The auth layer on its own, around a router merged into an app.
#[test]
fn credentials_are_required_before_anything_runs() {
    use profiled::http::{Credentials, RequireAuth};
    let credentials = Credentials::new("ops", "a-long-enough-token").unwrap();
    let config = Config::default().with_credentials(credentials.clone());
    let server = serve("127.0.0.1:0", config).unwrap();
    let addr = server.local_addr();
    let denied = get(addr, "/debug/pprof/profile?seconds=1");
    assert_go_error(&denied, 401, "Unauthorized");
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Basic realm=\"pprof\"")
    );
    let (ok, out) = pprof_trusting(
        None,
        &["-raw"],
        &format!("http://ops:wrong@{addr}/debug/pprof/profile?seconds=1"),
    );
    assert!(!ok);
    assert!(
        out.contains("server response: 401 Unauthorized - Unauthorized"),
        "{out}"
    );
    let _turn = turn();
    let (ok, out) = pprof_trusting(
        None,
        &["-raw"],
        &format!("http://ops:a-long-enough-token@{addr}/debug/pprof/profile?seconds=1"),
    );
    assert!(ok, "{out}");
    // The same layer on a router of one's own.
    let app = profiled::http::router(&Config::default()).layer(RequireAuth::new(&credentials));
    drop(app);
}

/// Whatever a client sends in a query or a `symbol` body, the endpoints answer as Go's do,
/// and nothing panics. (Profiles are capped at 0 s here, so none starts.)
mod fuzz {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use proptest::prelude::*;
    use tower::ServiceExt;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn any_query_and_symbol_body_get_go_s_answers(
            query in "[A-Za-z0-9=&%+._~-]{0,200}",
            body in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let app = profiled::http::router(&Config::default().with_max_seconds(0));
            let statuses = runtime.block_on(async {
                let mut statuses = Vec::new();
                for path in ["profile", "symbol", "", "cmdline", "goroutine"] {
                    let request = Request::get(format!("/debug/pprof/{path}?{query}"))
                        .body(Body::empty())
                        .unwrap();
                    let response = app.clone().oneshot(request).await.unwrap();
                    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
                    statuses.push(response.status().as_u16());
                }
                let post = Request::post("/debug/pprof/symbol").body(Body::from(body)).unwrap();
                statuses.push(app.clone().oneshot(post).await.unwrap().status().as_u16());
                statuses
            });
            prop_assert_eq!(statuses, vec![400, 200, 200, 200, 404, 200]);
        }
    }
}

#[inline(never)]
fn parked_for_the_dump(ready: std::sync::mpsc::Sender<()>, stop: std::sync::mpsc::Receiver<()>) {
    ready.send(()).unwrap();
    let _ = stop.recv();
}

/// Every thread's stack, running or waiting, as text and as a profile go tool pprof reads.
#[test]
fn threads_shows_every_threads_stack() {
    let server = serve("127.0.0.1:0", Config::default()).unwrap();
    let addr = server.local_addr();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    let parked = std::thread::Builder::new()
        .name("parked-for-dump".into())
        .spawn(move || parked_for_the_dump(ready_tx, stop_rx))
        .unwrap();
    ready_rx.recv().unwrap();

    let text = get(addr, "/debug/pprof/threads?debug=1");
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let body = text.text();
    let block = body
        .split("\n\n")
        .find(|b| b.contains("\"parked-for-dump\":"))
        .unwrap_or_else(|| panic!("no block for the parked thread:\n{body}"));
    assert!(block.contains("parked_for_the_dump\n\t"), "{block}");
    assert!(block.contains("tests/http.rs:"), "{block}");

    let profile = get(addr, "/debug/pprof/threads");
    assert_eq!(profile.status, 200);
    assert_eq!(
        profile.header("content-disposition"),
        Some("attachment; filename=\"threads\"")
    );
    let p = profiled::pprof::decode(&profile.body).unwrap();
    let s = |i: i64| p.string_table[i as usize].as_str();
    assert_eq!(
        (s(p.sample_type[0].r#type), s(p.sample_type[0].unit)),
        ("threads", "count")
    );
    let parked_sample = p.sample.iter().find(|sample| {
        sample
            .label
            .iter()
            .any(|l| s(l.key) == "thread" && s(l.str) == "parked-for-dump")
    });
    assert!(parked_sample.is_some(), "one sample per thread, labelled");
    assert!(p.sample.len() >= 3, "{} threads", p.sample.len());

    let (ok, out) = pprof_trusting(
        None,
        &["-top"],
        &format!("http://{addr}/debug/pprof/threads"),
    );
    assert!(ok, "{out}");
    assert!(out.contains("Type: threads"), "{out}");
    assert!(out.contains("parked_for_the_dump"), "{out}");

    assert_go_error(
        &get(addr, "/debug/pprof/threads?seconds=5"),
        400,
        "\"seconds\" parameter is not supported for this profile type",
    );
    stop_tx.send(()).unwrap();
    parked.join().unwrap();
}

/// Stopping the server abandons a profile in progress instead of waiting for it, and
/// leaves the endpoint free for the next server.
#[test]
fn stopping_abandons_a_profile_in_progress() {
    let _turn = turn();
    let server = serve("127.0.0.1:0", Config::default()).unwrap();
    let mut long = TcpStream::connect(server.local_addr()).unwrap();
    write!(
        long,
        "GET /debug/pprof/profile?seconds=60 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    server.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stop waited {:?} for the profile",
        stopping.elapsed()
    );
    let next = serve("127.0.0.1:0", Config::default()).unwrap();
    let reply = get(next.local_addr(), "/debug/pprof/profile?seconds=1");
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(long);
}
