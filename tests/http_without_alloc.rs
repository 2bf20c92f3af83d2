//! A service whose global allocator is not profiled's wrapper: `/debug/pprof/` does not
//! list heap and allocs (they could only answer with an error), says why, and the two
//! answer Go's error with the lines to add.
#![cfg(all(feature = "http", target_os = "linux", target_arch = "x86_64"))]

use std::io::{Read, Write};

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    (status, body)
}

#[test]
fn the_index_leaves_out_heap_and_allocs_and_says_why() {
    let server = profiled::http::serve("127.0.0.1:0", profiled::http::Config::default()).unwrap();
    let (status, index) = get(server.local_addr(), "/debug/pprof/");
    assert_eq!(status, 200);
    for served in ["profile", "threads", "block", "mutex"] {
        assert!(
            index.contains(&format!("href='{served}'"))
                || index.contains(&format!("href='{served}?")),
            "{served}: {index}"
        );
    }
    assert!(!index.contains("href='heap'"), "{index}");
    assert!(!index.contains("href='allocs'"), "{index}");
    assert!(
        index.contains("heap, allocs: </div> not served: heap and allocation profiles need profiled&#39;s allocator wrapper"),
        "{index}"
    );
    let (status, heap) = get(server.local_addr(), "/debug/pprof/heap");
    assert_eq!(status, 500);
    assert!(
        heap.contains("static ALLOC: profiled::Alloc<std::alloc::System>"),
        "{heap}"
    );
}
