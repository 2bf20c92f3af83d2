//! Builds and runs the fixture crate's test binaries, and reads the profiles they write.
#![allow(dead_code)]

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use profiled::pprof::proto::Profile;

/// The real go tool: Debian's golang-1.19-go, or `go` on the PATH.
pub fn go() -> PathBuf {
    for go in ["/usr/lib/go-1.19/bin/go", "go"] {
        if Command::new(go)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return PathBuf::from(go);
        }
    }
    panic!("these tests run the real go tool pprof: apt-get install -y golang-1.19-go");
}

/// `go tool pprof ARGS FILE`: its stdout, after checking it exited 0 with nothing on stderr
/// (where it prints its warnings).
pub fn go_tool_pprof(args: &[&str], file: &Path) -> String {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(go())
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", home.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "go tool pprof {args:?} {}: {}\n{stderr}",
        file.display(),
        out.status
    );
    stdout
}

/// All fixture builds share one target dir beside ours, so each is compiled once per run.
pub fn fixture_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("fixtures")
}

pub fn fixture_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workloads/Cargo.toml")
}

/// `cargo test --test <target> -- <args>` in the fixture crate, with `env` (and without any
/// PROFILE inherited from the caller).
pub fn cargo_test(target: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    cargo("test", target, args, env)
}

/// `cargo bench --bench <target> -- <args>` in the fixture crate.
pub fn cargo_bench(target: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    cargo("bench", target, args, env)
}

/// `cargo test --test <target>` whose test run (not the build) must finish within `limit`;
/// a hang kills it and fails the caller.
pub fn cargo_test_within(
    limit: std::time::Duration,
    target: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let built = command("test", target, &["--no-run"], &[], false)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // Output goes to files (a pipe nobody reads while we wait could fill and stall the
    // run); the run gets its own process group, so a hang is killed with its test binary.
    let (out_file, err_file) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let mut child = command("test", target, args, env, true)
        .stdout(out_file.try_clone().unwrap())
        .stderr(err_file.try_clone().unwrap())
        .process_group(0)
        .spawn()
        .expect("cargo runs");
    let read_back = |mut f: &std::fs::File| {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut bytes).unwrap();
        bytes
    };
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: kill(2) on the process group we created for this run.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "cargo test --test {target} {args:?} {env:?} hung for {limit:?}\n{}\n{}",
                String::from_utf8_lossy(&read_back(&out_file)),
                String::from_utf8_lossy(&read_back(&err_file))
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: read_back(&out_file),
        stderr: read_back(&err_file),
    };
    log(
        &format!("cargo test --test {target} {args:?} {env:?}"),
        &out,
    );
    out
}

/// What a run printed, on the test's own (captured) output, for when it fails.
fn log(what: &str, out: &Output) {
    eprintln!(
        "--- {what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn command(kind: &str, target: &str, args: &[&str], env: &[(&str, &str)], run: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([kind, "--quiet", "--manifest-path"])
        .arg(fixture_manifest())
        .arg(format!("--{kind}"))
        .arg(target);
    if run {
        cmd.arg("--");
    }
    cmd.args(args)
        .env("CARGO_TARGET_DIR", fixture_target())
        // As `cargo xtask validate` builds the fixture's release profile (benches): one
        // build serves both.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only")
        .env_remove("PROFILE")
        .env_remove("PROFILED")
        .env_remove("RUST_TEST_THREADS")
        .env_remove("RUST_BACKTRACE")
        .env_remove("FIXTURE_OUT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn cargo(kind: &str, target: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = command(kind, target, args, env, true)
        .output()
        .expect("cargo runs");
    log(
        &format!("cargo {kind} --{kind} {target} {args:?} {env:?}"),
        &out,
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A decoded profile with helpers that speak in CPU time.
pub struct Read {
    pub profile: Profile,
    pub path: PathBuf,
}

pub fn read(path: &Path) -> Read {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Read {
        profile: profiled::pprof::decode(&bytes).expect("valid pprof"),
        path: path.into(),
    }
}

impl Read {
    fn s(&self, i: i64) -> &str {
        &self.profile.string_table[i as usize]
    }

    /// Function names of a sample's stack, leaf first, inlined frames included.
    pub fn stack(&self, sample: &profiled::pprof::proto::Sample) -> Vec<&str> {
        let p = &self.profile;
        let mut names = Vec::new();
        for id in &sample.location_id {
            let loc = p
                .location
                .iter()
                .find(|l| l.id == *id)
                .expect("location exists");
            for line in &loc.line {
                let f = p
                    .function
                    .iter()
                    .find(|f| f.id == line.function_id)
                    .expect("function");
                names.push(self.s(f.name));
            }
        }
        names
    }

    /// Total CPU nanoseconds (the second sample value).
    pub fn cpu_ns(&self) -> i64 {
        self.profile.sample.iter().map(|s| s.value[1]).sum()
    }

    pub fn samples(&self) -> i64 {
        self.profile.sample.iter().map(|s| s.value[0]).sum()
    }

    /// Share of CPU in samples whose stack contains a function whose name ends with `name`.
    pub fn share(&self, name: &str) -> f64 {
        let total = self.cpu_ns();
        if total == 0 {
            return 0.0;
        }
        let with: i64 = self
            .profile
            .sample
            .iter()
            .filter(|s| self.stack(s).iter().any(|f| f.ends_with(name)))
            .map(|s| s.value[1])
            .sum();
        with as f64 / total as f64
    }

    /// `name`'s share, asserted to be at least `floor` less [`sampling_error`] over this
    /// profile's samples: a profile of code that truly spends `floor` there falls below that
    /// about once in 30,000 runs, however few samples a loaded machine let it take.
    #[track_caller]
    pub fn assert_share_at_least(&self, name: &str, floor: f64) -> f64 {
        let (share, n) = (self.share(name), self.samples());
        let error = sampling_error(floor, n);
        assert!(
            share >= floor - error,
            "{}: {name} holds {share:.3}, expected at least {floor} - {error:.3} over {n} \
             samples; leaves: {:?}",
            self.path.display(),
            self.leaves(6)
        );
        share
    }

    /// `name`'s share, asserted to be at most `ceiling` plus [`sampling_error`].
    #[track_caller]
    pub fn assert_share_at_most(&self, name: &str, ceiling: f64) -> f64 {
        let (share, n) = (self.share(name), self.samples());
        let error = sampling_error(ceiling, n);
        assert!(
            share <= ceiling + error,
            "{}: {name} holds {share:.3}, expected at most {ceiling} + {error:.3} over {n} \
             samples; leaves: {:?}",
            self.path.display(),
            self.leaves(6)
        );
        share
    }

    /// The `k` leaf functions with the most of the second value, with their shares: what an
    /// assertion's message shows of a profile that surprised it.
    pub fn leaves(&self, k: usize) -> Vec<(String, f64)> {
        let total = self.cpu_ns().max(1) as f64;
        let mut by: HashMap<String, i64> = HashMap::new();
        for s in &self.profile.sample {
            let leaf = self.stack(s).first().map_or("[none]", |f| f).to_string();
            *by.entry(leaf).or_default() += s.value[1];
        }
        let mut v: Vec<(String, f64)> = by
            .into_iter()
            .map(|(f, w)| (f, (w as f64 / total * 1000.0).round() / 1000.0))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(k);
        v
    }

    /// The string value of a sample's label `key`.
    pub fn label(&self, sample: &profiled::pprof::proto::Sample, key: &str) -> Option<&str> {
        sample
            .label
            .iter()
            .find(|l| self.s(l.key) == key && l.str != 0)
            .map(|l| self.s(l.str))
    }

    pub fn comments(&self) -> Vec<&str> {
        self.profile.comment.iter().map(|&i| self.s(i)).collect()
    }

    pub fn value_types(&self) -> Vec<(&str, &str)> {
        self.profile
            .sample_type
            .iter()
            .map(|t| (self.s(t.r#type), self.s(t.unit)))
            .collect()
    }
}

/// How far a share estimated from `n` samples may stray from its true value `p`: four
/// binomial standard errors (one-sided, about 1 in 30,000), plus 0.01 for the clock reads at
/// the edges of each sample's interval. Statistical assertions take their tolerance from here,
/// so that a loaded machine, which leaves a profile fewer samples, widens it instead of
/// failing the test.
pub fn sampling_error(p: f64, n: i64) -> f64 {
    4.0 * (p * (1.0 - p) / (n.max(1) as f64)).sqrt() + 0.01
}

/// `name value` lines that fixture tests append to `FIXTURE_OUT`.
pub fn reported(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The libtest summary line ("test result: ...") without its timing.
pub fn summary(out: &Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| l.starts_with("test result:"))
        .map(|l| l.split("; finished in").next().unwrap().to_string())
        .collect()
}

/// The `<title>` texts of an SVG flamegraph (one per frame box), read with an XML parser, so
/// a malformed file fails the test.
pub fn svg_titles(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut titles = Vec::new();
    let mut in_title = false;
    loop {
        match reader.read_event().expect("well-formed SVG") {
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"title" => in_title = true,
            quick_xml::events::Event::End(e) if e.name().as_ref() == b"title" => in_title = false,
            quick_xml::events::Event::Text(t) if in_title => {
                titles.push(t.decode().expect("utf-8").into_owned());
            }
            quick_xml::events::Event::GeneralRef(r) if in_title => {
                // &lt; &gt; &amp; inside names such as <T as Trait>::f
                let s = match &*r {
                    b"lt" => "<",
                    b"gt" => ">",
                    b"amp" => "&",
                    b"quot" => "\"",
                    _ => "?",
                };
                if let Some(last) = titles.last_mut() {
                    last.push_str(s);
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    titles
}

/// Runs an already-built fixture test binary directly, as nextest and `cargo test` do.
pub fn fixture_binary(target: &str) -> PathBuf {
    let deps = fixture_target().join("debug/deps");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&format!("{target}-")) && !name.contains('.')
        })
        .map(|p| (p.metadata().unwrap().modified().unwrap(), p))
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no {target} binary in {}", deps.display()))
        .1
}

/// Burns `cpu` of the calling thread's CPU time in a loop the optimiser keeps.
pub fn spin(cpu: std::time::Duration) {
    let start = thread_cpu();
    let mut x = 1u64;
    while thread_cpu() - start < cpu {
        for i in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
}

/// An allocator that aborts the process if anything allocates or frees while profiled's
/// signal handler runs on the calling thread: the handler must not touch the heap. Test
/// binaries install it with `#[global_allocator]` (it needs the `__test-hooks` feature).
#[cfg(feature = "__test-hooks")]
pub struct NoAllocInHandler;

#[cfg(feature = "__test-hooks")]
impl NoAllocInHandler {
    fn check() {
        if profiled::__private::in_signal_handler() {
            let msg = b"profiled's signal handler used the heap\n";
            // SAFETY: write(2) and abort(3) are async-signal-safe; nothing else is done.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::abort();
            }
        }
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged.
#[cfg(feature = "__test-hooks")]
unsafe impl std::alloc::GlobalAlloc for NoAllocInHandler {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        Self::check();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        Self::check();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        Self::check();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        Self::check();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}
