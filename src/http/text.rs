//! Go's legacy text formats (`debug=1`): threads as goroutines, the block and mutex
//! profiles, the heap profile, each frame named as `go tool pprof` reads them.

/// Each thread as Go prints a goroutine: a header line, then each frame's function and, on
/// the next line after a tab, its file and line, innermost first.
pub(super) fn threads_text(stacks: &[crate::sampler::ThreadStack]) -> String {
    let mut out = String::new();
    crate::symbolize::with(|sym| {
        for (thread, stack) in stacks {
            let name = thread.name();
            match stack {
                None => out.push_str(&format!(
                    "thread {} \"{name}\" [no answer: it blocks SIGPROF or did not run within \
                     a second]:\n\n",
                    thread.tid
                )),
                Some(stack) => {
                    out.push_str(&format!("thread {} \"{name}\":\n", thread.tid));
                    for (depth, &addr) in stack.iter().enumerate() {
                        if addr == crate::stack::TRUNCATED {
                            out.push_str("...\n\t(frames left out)\n");
                            continue;
                        }
                        for line in sym.resolve(addr, depth > 0).lines.iter() {
                            out.push_str(&format!("{}\n", line.function));
                            match (line.file.is_empty(), line.line) {
                                (true, _) => out.push_str(&format!("\t{addr:#x}\n")),
                                (false, 0) => out.push_str(&format!("\t{}\n", line.file)),
                                (false, n) => out.push_str(&format!("\t{}:{n}\n", line.file)),
                            }
                        }
                    }
                    out.push('\n');
                }
            }
        }
    });
    out
}

/// Go's legacy text block and mutex profiles (`debug=1`): `--- contention:` (or
/// `--- mutex:`), the clock rate (nanoseconds here, so a cycle is a nanosecond), then each
/// stack's delay and count, its addresses, and one `#` line per frame.
pub(super) fn contention_text(recorded: &crate::contention::Recorded, kind: crate::Kind) -> String {
    let mutex = kind == crate::Kind::Mutex;
    let format = if mutex {
        &crate::contention::MUTEX
    } else {
        &crate::contention::BLOCK
    };
    let (buckets, header) = if mutex {
        // The values are already scaled up: a period of 1 leaves them as they are.
        (
            &recorded.mutex,
            "--- mutex:\ncycles/second=1000000000\nsampling period=1\n",
        )
    } else {
        (
            &recorded.block,
            "--- contention:\ncycles/second=1000000000\n",
        )
    };
    let mut out = header.to_string();
    crate::symbolize::with(|sym| {
        for b in buckets {
            let head = format!("{} {}", b.delay, b.count.round() as i64);
            stack_text(&mut out, sym, &head, &b.stack, format);
        }
    });
    out
}

/// One record of Go's legacy text formats: `head @ addresses`, then a `#` line per frame
/// (the kind's own leading frames left out, as in its protobuf profile), then a blank line.
fn stack_text(
    out: &mut String,
    sym: &mut crate::symbolize::Symbolizer,
    head: &str,
    stack: &[u64],
    format: &crate::kind::Format,
) {
    let mut frames = Vec::new();
    let mut trimming = true;
    for (depth, &addr) in stack.iter().enumerate() {
        let resolved = sym.resolve(addr, depth > 0);
        if trimming
            && resolved
                .lines
                .iter()
                .all(|l| format.trims(&l.function, &l.file))
        {
            continue;
        }
        trimming = false;
        frames.push((addr, resolved));
    }
    out.push_str(head);
    out.push_str(" @");
    for (addr, _) in &frames {
        out.push_str(&format!(" {addr:#x}"));
    }
    out.push('\n');
    for (addr, resolved) in &frames {
        for line in resolved.lines.iter() {
            out.push_str(&format!(
                "#\t{addr:#x}\t{}+0x0\t{}:{}\n",
                line.function, line.file, line.line
            ));
        }
    }
    out.push('\n');
}

/// Go's legacy text heap profile (`debug=1`): a header with the totals and the sampling
/// rate, then each (stack, size) with its raw sampled counts (`in use: bytes [allocated:
/// bytes]`), its addresses, and one `#` line per frame. `go tool pprof` reads it, unbiasing
/// with the header's rate, and names the addresses through `/debug/pprof/symbol`.
pub(super) fn heap_text(recorded: &crate::heap::Recorded) -> String {
    let size = |b: &crate::heap::Bucket, n: i64| n.saturating_mul(b.size as i64);
    let live = |b: &crate::heap::Bucket| b.allocs.saturating_sub(b.frees);
    let (mut inuse, mut inuse_bytes, mut allocs, mut alloc_bytes) = (0i64, 0i64, 0i64, 0i64);
    for b in &recorded.buckets {
        inuse += live(b);
        inuse_bytes += size(b, live(b));
        allocs += b.allocs;
        alloc_bytes += size(b, b.allocs);
    }
    let mut out = format!(
        "heap profile: {inuse}: {inuse_bytes} [{allocs}: {alloc_bytes}] @ heap/{}\n",
        recorded.rate.saturating_mul(2)
    );
    crate::symbolize::with(|sym| {
        for b in &recorded.buckets {
            let head = format!(
                "{}: {} [{}: {}]",
                live(b),
                size(b, live(b)),
                b.allocs,
                size(b, b.allocs)
            );
            stack_text(&mut out, sym, &head, &b.stack, &crate::heap::HEAP);
        }
    });
    out
}
