//! A test harness for `harness = false` targets, with Go-style profiling flags.
//!
//! `#[profiled::test]` registers a test (through inventory); `profiled::main!()` runs the
//! registered tests with libtest-mimic, which speaks libtest's command line, so `cargo test`
//! and `cargo nextest run` work unchanged. On top of it:
//!
//! - `--cpuprofile FILE`: one CPU profile of the whole run (Go's `-cpuprofile`);
//! - `--memprofile FILE`: one heap profile of the whole run (Go's `-memprofile`; needs
//!   `profiled::Alloc`), sampled every `--memprofilerate N` bytes (Go's flag; 1 = all);
//! - `--blockprofile FILE`, `--mutexprofile FILE`: one block or mutex profile of the whole
//!   run (Go's flags; they see [`crate::sync`] locks), with `--blockprofilerate N`
//!   (nanoseconds, default 1: every wait) and `--mutexprofilefraction N` (default 1: every
//!   event);
//! - `--profile DIR`: one profile per test, under `DIR/<package>/<test binary>/`;
//! - `--profile-freq HZ`: the CPU sampling rate for both.
//!
//! `PROFILE` keeps working (one profile per test); the flags win over it. Profiled tests run
//! one at a time; a table at the end lists each profile's total, samples, top function and
//! file. Each test runs in a child process of the binary (unless `--nocapture`,
//! a whole-run profile is asked for), which is how what it prints is captured on stable Rust.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Mutex;

use libtest_mimic::{Arguments, Failed, Trial};

use crate::{Config, Kind, Profile, output};

/// One registered test; built by `#[profiled::test]`.
#[doc(hidden)]
pub struct Test {
    /// `module_path!()` where the test is defined.
    pub module: &'static str,
    /// The fn's name.
    pub name: &'static str,
    /// Runs the test body.
    pub run: fn() -> Result<(), String>,
    /// `#[ignore]`.
    pub ignored: bool,
    /// `#[should_panic]`: `Some(expected substring)` (empty for any panic).
    pub should_panic: Option<&'static str>,
}

inventory::collect!(Test);

/// What a test fn may return.
#[doc(hidden)]
pub trait Outcome {
    fn into_result(self) -> Result<(), String>;
}

impl Outcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Debug> Outcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| format!("Error: {e:?}"))
    }
}

/// Converts a test's return value; used by the generated code.
#[doc(hidden)]
pub fn outcome<T: Outcome>(value: T) -> Result<(), String> {
    value.into_result()
}

const USAGE: &str = "\
Profiling options (profiled):
    --cpuprofile FILE      write one CPU profile of the whole run to FILE
    --memprofile FILE      write one heap profile of the whole run to FILE (needs profiled::Alloc)
    --memprofilerate N     heap profiles sample one allocation per N bytes (default 524288; 1 = all)
    --blockprofile FILE    write one block profile (waits for profiled::sync locks) of the whole run
    --blockprofilerate N   block profiles keep waits of N ns and more, shorter ones in proportion (default 1 = all)
    --mutexprofile FILE    write one mutex profile (unlocks that kept others waiting) of the whole run
    --mutexprofilefraction N  mutex profiles keep one contention event in N (default 1 = all)
    --profile DIR          write one profile per test under DIR/<package>/<test binary>/
    --profile-freq HZ      CPU sampling rate, 1..=10000 (default 1000)

PROFILE=cpu[,heap][,block][,mutex][,freq=HZ][,dir=DIR] also profiles each test; the flags
win over it.
";

/// The options with a value that are ours, not libtest's.
const OURS: [&str; 9] = [
    "--cpuprofile",
    "--memprofile",
    "--memprofilerate",
    "--blockprofile",
    "--blockprofilerate",
    "--mutexprofile",
    "--mutexprofilefraction",
    "--profile",
    "--profile-freq",
];

/// Our flags, taken out of the command line before libtest-mimic parses the rest.
#[derive(Default, Debug)]
struct Flags {
    cpuprofile: Option<PathBuf>,
    memprofile: Option<PathBuf>,
    memprofilerate: Option<u64>,
    blockprofile: Option<PathBuf>,
    blockprofilerate: Option<u64>,
    mutexprofile: Option<PathBuf>,
    mutexprofilefraction: Option<u64>,
    profile_dir: Option<PathBuf>,
    frequency: Option<u32>,
}

fn split(argv: Vec<OsString>) -> Result<(Flags, Vec<OsString>), String> {
    let mut flags = Flags::default();
    let mut rest = Vec::with_capacity(argv.len());
    let mut it = argv.into_iter();
    if let Some(program) = it.next() {
        rest.push(program);
    }
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy().into_owned();
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (text.clone(), None),
        };
        if !OURS.contains(&name.as_str()) {
            rest.push(arg);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .map(|v| v.to_string_lossy().into_owned())
                .ok_or_else(|| format!("option '{name}' needs a value"))?,
        };
        if value.is_empty() {
            return Err(format!("option '{name}' needs a value"));
        }
        match name.as_str() {
            "--cpuprofile" => flags.cpuprofile = Some(PathBuf::from(value)),
            "--memprofile" => flags.memprofile = Some(PathBuf::from(value)),
            "--profile" => flags.profile_dir = Some(PathBuf::from(value)),
            "--blockprofile" => flags.blockprofile = Some(PathBuf::from(value)),
            "--mutexprofile" => flags.mutexprofile = Some(PathBuf::from(value)),
            "--memprofilerate" => {
                flags.memprofilerate = Some(positive(&name, &value, "bytes", "allocation")?);
            }
            "--blockprofilerate" => {
                flags.blockprofilerate = Some(positive(&name, &value, "nanoseconds", "wait")?);
            }
            "--mutexprofilefraction" => {
                flags.mutexprofilefraction = Some(positive(&name, &value, "events", "event")?);
            }
            _ => {
                let hz: u32 = value.parse().map_err(|_| {
                    format!(
                        "invalid value '{value}' for '--profile-freq': not a whole number of Hz"
                    )
                })?;
                if !(1..=crate::Config::MAX_FREQUENCY).contains(&hz) {
                    return Err(format!(
                        "invalid value '{value}' for '--profile-freq': accepted 1..={}",
                        crate::Config::MAX_FREQUENCY
                    ));
                }
                flags.frequency = Some(hz);
            }
        }
    }
    Ok((flags, rest))
}

/// A rate flag's value: a whole number, 1 (every `one`) and up.
fn positive(name: &str, value: &str, unit: &str, one: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(0) => Err(format!(
            "invalid value '{value}' for '{name}': accepted 1 (every {one}) and up"
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "invalid value '{value}' for '{name}': not a whole number of {unit}"
        )),
    }
}

/// libtest's way out of a bad command line: the message, the usage, exit code 101, nothing
/// written.
fn usage_error(message: &str) -> ! {
    eprintln!("error: {message}\n\n{USAGE}\nRun with --help for libtest's options.");
    std::process::exit(101)
}

/// The way out of a command line that was right but cannot be carried out (`PROFILE`'s
/// items, a missing allocator wrapper): the message alone, which the usage would drown.
fn setup_error(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(101)
}

struct Row {
    test: String,
    kind: String,
    /// The profile's headline amount: `1.82s`, `12.3 MiB`.
    total: String,
    samples: u64,
    top: String,
    file: String,
}

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());
/// Profiled tests run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn record(report: &crate::Report, path: &std::path::Path) {
    let row = Row {
        test: report.name().to_string(),
        kind: report.kind().to_string(),
        total: report.main_total(),
        samples: report.samples(),
        top: report
            .top_function()
            .map(|(f, share)| format!("{} ({:.0}%)", shorten(f, 60), share * 100.0))
            .unwrap_or_else(|| "-".into()),
        file: output::display_path(path),
    };
    ROWS.lock().unwrap_or_else(|p| p.into_inner()).push(row);
}

/// Runs the registered tests; `profiled::main!()` calls this.
#[doc(hidden)]
pub fn main(package: Option<&'static str>) -> ! {
    let (flags, rest) = split(std::env::args_os().collect()).unwrap_or_else(|e| usage_error(&e));
    if let Some(message) = unknown_option(&rest) {
        usage_error(&message);
    }
    let args = match <Arguments as clap::Parser>::try_parse_from(&rest) {
        Ok(args) => args,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            let _ = e.print();
            println!("\n{USAGE}");
            std::process::exit(0)
        }
        Err(e) => usage_error(e.to_string().trim_start_matches("error: ").trim_end()),
    };
    let env = match crate::__private::settings() {
        Ok(settings) => settings.config.clone(),
        Err(e) => setup_error(e),
    };
    let frequency = flags.frequency.or(env.as_ref().map(|c| c.frequency));
    let heap_rate = flags.memprofilerate.or(env.as_ref().map(|c| c.heap_rate));
    let block_rate = flags
        .blockprofilerate
        .or(env.as_ref().map(|c| c.block_rate));
    let mutex_fraction = flags
        .mutexprofilefraction
        .or(env.as_ref().map(|c| c.mutex_fraction));
    let with_frequency = |mut c: Config| {
        if let Some(hz) = frequency {
            c.frequency = hz;
        }
        if let Some(bytes) = heap_rate {
            c.heap_rate = bytes;
        }
        if let Some(ns) = block_rate {
            c.block_rate = ns;
        }
        if let Some(n) = mutex_fraction {
            c.mutex_fraction = n;
        }
        c
    };
    let per_test: Option<Config> = match (&flags.profile_dir, env) {
        (Some(dir), env) => Some(with_frequency(env.unwrap_or_default().with_dir(dir))),
        (None, Some(env)) => Some(with_frequency(env)),
        (None, None) => None,
    };
    let per_test = per_test.filter(|_| !args.list);

    let mut tests: Vec<&'static Test> = inventory::iter::<Test>.into_iter().collect();
    tests.sort_by_key(|t| (t.module, t.name));
    if let Some(name) = std::env::var_os(CHILD_VAR) {
        // The panic's message and place become the failure text the parent shows.
        capture_panics(false);
        output::mark_notices();
        run_as_child(&tests, &name.to_string_lossy(), package, per_test);
    }
    // Each test in a child process of its own, so that what it prints is kept for the
    // failures section: stable Rust has no in-process output capture. Not with
    // --nocapture (nextest passes it: it runs a process per test itself) nor with
    // --cpuprofile, whose one profile must see the tests run in this process.
    let whole_run = flags.cpuprofile.is_some()
        || flags.memprofile.is_some()
        || flags.blockprofile.is_some()
        || flags.mutexprofile.is_some();
    let isolate = !args.nocapture && !whole_run && !args.list;
    let child_args = flags.to_args();
    if !isolate {
        capture_panics(args.nocapture);
    }

    // The whole run's files, one per kind asked for, in the order the profile gives them.
    let whole_paths: Vec<PathBuf> = flags
        .cpuprofile
        .iter()
        .chain(&flags.memprofile)
        .chain(&flags.blockprofile)
        .chain(&flags.mutexprofile)
        .cloned()
        .collect();
    let whole = match (whole_run, args.list) {
        (true, false) => {
            let kinds = [
                flags.cpuprofile.as_ref().map(|_| Kind::Cpu),
                flags.memprofile.as_ref().map(|_| Kind::Heap),
                flags.blockprofile.as_ref().map(|_| Kind::Block),
                flags.mutexprofile.as_ref().map(|_| Kind::Mutex),
            ];
            let config = Config::default()
                .with_kinds(kinds.into_iter().flatten())
                .map(with_frequency);
            match config.and_then(|c| Profile::start_detached("all tests", &c)) {
                Ok(p) => Some(p),
                Err(e) => setup_error(&format!("cannot profile the run: {e}")),
            }
        }
        _ => None,
    };

    let trials = tests
        .into_iter()
        .map(|t| {
            let name = output::test_name(t.module, t.name);
            let config = per_test.clone();
            let child_args = child_args.clone();
            Trial::test(name.clone(), move || {
                if isolate {
                    run_in_child(&name, &child_args, config.is_some())
                } else {
                    run_one(t, name, package, config)
                }
            })
            .with_ignored_flag(t.ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);

    if let Some(profile) = whole {
        match profile.finish().and_then(|reports| {
            for (r, path) in reports.iter().zip(&whole_paths) {
                r.publish(path, None, false)?;
                record(r, path);
            }
            Ok(())
        }) {
            Ok(()) => {}
            Err(e) => {
                output::notice(&e.to_string());
                std::process::exit(101);
            }
        }
    }
    print_table();
    conclusion.exit()
}

/// Set in a child the harness runs one test in: the test's name.
const CHILD_VAR: &str = "PROFILED_HARNESS_CHILD";
/// Starts the line a child writes for the parent's summary table.
const ROW_MARK: &str = "\u{1e}profiled-row\t";

impl Flags {
    /// The profiling flags again, for a child.
    fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some(dir) = &self.profile_dir {
            args.push("--profile".into());
            args.push(dir.clone().into_os_string());
        }
        if let Some(hz) = self.frequency {
            args.push(format!("--profile-freq={hz}").into());
        }
        if let Some(bytes) = self.memprofilerate {
            args.push(format!("--memprofilerate={bytes}").into());
        }
        if let Some(ns) = self.blockprofilerate {
            args.push(format!("--blockprofilerate={ns}").into());
        }
        if let Some(n) = self.mutexprofilefraction {
            args.push(format!("--mutexprofilefraction={n}").into());
        }
        args
    }
}

/// In a child: runs the one test `name`, hands its table row to the parent on stdout, and
/// exits with its outcome (the reason on stderr).
fn run_as_child(
    tests: &[&'static Test],
    name: &str,
    package: Option<&'static str>,
    config: Option<Config>,
) -> ! {
    let Some(test) = tests
        .iter()
        .find(|t| output::test_name(t.module, t.name) == name)
    else {
        eprintln!("profiled: no test named {name} in this binary");
        std::process::exit(101)
    };
    let result = run_one(test, name.to_string(), package, config);
    for r in ROWS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!(
            "{ROW_MARK}{}\t{}\t{}\t{}\t{}\t{}",
            r.test, r.kind, r.total, r.samples, r.top, r.file
        );
    }
    match result {
        Ok(()) => std::process::exit(0),
        Err(failed) => {
            if let Some(message) = failed.message() {
                eprintln!("{message}");
            }
            std::process::exit(101)
        }
    }
}

/// In the parent: runs test `name` in a child of this binary and keeps its output, shown
/// only if it fails. The child's profiled lines (summary, notes, warnings) are printed here,
/// each warning once; its table row joins ours. Profiled tests run one at a time.
fn run_in_child(name: &str, args: &[OsString], profiled: bool) -> Result<(), Failed> {
    let _serial = profiled.then(|| SERIAL.lock().unwrap_or_else(|p| p.into_inner()));
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this test binary: {e}"))?;
    let out = std::process::Command::new(exe)
        .args(args)
        .env(CHILD_VAR, name)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the test in a child process: {e}"))?;
    let mut kept = String::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.strip_prefix(ROW_MARK).map(parse_row) {
            Some(Some(row)) => ROWS.lock().unwrap_or_else(|p| p.into_inner()).push(row),
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if let Some(notice) = line.strip_prefix(output::NOTICE_MARK) {
            say_once(notice);
        } else if line.starts_with("profiled: ") {
            // A summary line (and its note): the test's own, printed as it is.
            output::line(line);
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(kept.trim_end().to_string().into())
    }
}

/// Prints a child's notice the first time only: every child would repeat it (numbers
/// aside, it is the same notice).
fn say_once(line: &str) {
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let key: String = line.chars().filter(|c| !c.is_ascii_digit()).collect();
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.contains(&key) {
        return;
    }
    seen.push(key);
    output::line(line);
}

fn parse_row(text: &str) -> Option<Row> {
    let mut f = text.split('\t');
    Some(Row {
        test: f.next()?.to_string(),
        kind: f.next()?.to_string(),
        total: f.next()?.to_string(),
        samples: f.next()?.parse().ok()?,
        top: f.next()?.to_string(),
        file: f.next()?.to_string(),
    })
}

/// The first option neither libtest's command line nor ours knows, with the closest one
/// that exists: clap's own message suggests quoting it as a value, which misleads here.
fn unknown_option(args: &[OsString]) -> Option<String> {
    let command = <Arguments as clap::CommandFactory>::command();
    let mut known: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    known.extend(OURS.map(String::from));
    known.push("--help".into());
    for arg in args.iter().skip(1) {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        let Some(name) = text.split('=').next().filter(|n| n.starts_with("--")) else {
            continue;
        };
        if known.iter().any(|k| k == name) {
            continue;
        }
        let hint = crate::config::closest(name, known.iter().map(String::as_str))
            .map(|k| format!(" (did you mean '{k}'?)"))
            .unwrap_or_default();
        return Some(format!("unknown option '{name}'{hint}"));
    }
    None
}

thread_local! {
    /// Set on a harness test's own thread; its panic message is kept here instead of printed.
    static PANIC: std::cell::RefCell<Option<Option<String>>> = const { std::cell::RefCell::new(None) };
}

/// Panics of tests are reported under `failures:`, as libtest does, not printed where they
/// happen (unless `--nocapture`): a hook keeps the message of a panic on a test's thread.
fn capture_panics(nocapture: bool) {
    if nocapture {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let kept = PANIC.with(|p| {
            let mut p = p.borrow_mut();
            let slot = p.as_mut()?;
            let thread = std::thread::current();
            let location = info
                .location()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            let message = payload_text(info.payload());
            *slot = Some(format!(
                "thread '{}' panicked{location}:\n{message}",
                thread.name().unwrap_or("<unnamed>")
            ));
            Some(())
        });
        if kept.is_none() {
            previous(info);
        }
    }));
}

/// Runs one test on a thread named after it (as libtest does: panic messages and profiles
/// name the test), with its profile started on that thread.
fn run_one(
    test: &'static Test,
    name: String,
    package: Option<&'static str>,
    config: Option<Config>,
) -> Result<(), Failed> {
    let _serial = config
        .as_ref()
        .map(|_| SERIAL.lock().unwrap_or_else(|p| p.into_inner()));
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(name.clone())
            .spawn_scoped(scope, || run_here(test, &name, package, config))
            .map_err(|e| Failed::from(format!("cannot start the test's thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err("the test's thread panicked outside the test".into()))
    })
}

fn run_here(
    test: &'static Test,
    name: &str,
    package: Option<&'static str>,
    config: Option<Config>,
) -> Result<(), Failed> {
    let profile = match &config {
        Some(c) => Some(Profile::start(name, c).map_err(|e| format!("profiled: {e}"))?),
        None => None,
    };
    PANIC.with(|p| *p.borrow_mut() = Some(None));
    let result = std::panic::catch_unwind(test.run);
    let panic_text = PANIC.with(|p| p.borrow_mut().take().flatten());
    let outcome = match (result, test.should_panic) {
        (Ok(Ok(())), None) => Ok(()),
        (Ok(Err(e)), None) => Err(e),
        (Err(payload), None) => Err(panic_text
            .unwrap_or_else(|| format!("test panicked: {}", payload_text(payload.as_ref())))),
        (Ok(_), Some(_)) => Err("test did not panic as expected".to_string()),
        (Err(payload), Some(expected)) => {
            let message = payload_text(payload.as_ref());
            if message.contains(expected) {
                Ok(())
            } else {
                Err(format!(
                    "panic did not contain expected string\n      panic message: {message:?}\n expected substring: {expected:?}"
                ))
            }
        }
    };
    if let (Some(profile), Some(config)) = (profile, config) {
        let written = profile.finish().and_then(|reports| {
            for (r, kind) in reports.iter().zip(&config.kinds) {
                let path = output::profile_path(config.dir.as_deref(), package, name, *kind);
                let svg = config.svg.then(|| output::svg_path(&path));
                r.publish(&path, svg.as_deref(), config.verbose)?;
                record(r, &path);
            }
            Ok(())
        });
        if let Err(e) = written {
            return Err(match outcome {
                Ok(()) => format!("profiled: {e}"),
                Err(m) => format!("{m}\nprofiled: {e}"),
            }
            .into());
        }
    }
    outcome.map_err(Failed::from)
}

/// A panic payload as text (`panic!` gives a `&str` or a `String`).
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "Box<dyn Any>".into())
}

/// `name` in at most `max` characters, the function's own name kept: generic arguments go
/// first (`call_once<…>`), then the middle of the path (`std::…::Context::new`). A name cut
/// from the left loses the function, which is what the reader is looking for.
fn shorten(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_string();
    }
    // Generic arguments open with a `<` right after a name (`Vec<T>`, `call_once::<F>`); a
    // `<` that opens a qualified path (`<T as Trait>::f`) stays, its insides shortened.
    let mut short = String::with_capacity(name.len());
    let mut open: Vec<bool> = Vec::new();
    let mut previous = ' ';
    for c in name.chars() {
        let hidden = open.contains(&true);
        match c {
            '<' => {
                let generic = previous.is_alphanumeric() || matches!(previous, '_' | ':' | '>');
                if generic && !hidden {
                    short.push_str("<…");
                } else if !hidden {
                    short.push(c);
                }
                open.push(generic);
            }
            '>' if previous != '-' && !open.is_empty() => {
                let generic = open.pop() == Some(true);
                if !open.contains(&true) && (generic || !hidden) {
                    short.push('>');
                }
            }
            _ if !hidden => short.push(c),
            _ => {}
        }
        previous = c;
    }
    let chars: Vec<char> = short.chars().collect();
    if chars.len() <= max {
        return short;
    }
    let tail = (max * 2 / 3).min(chars.len());
    let head = max.saturating_sub(tail + 1);
    let (start, end) = (&chars[..head], &chars[chars.len() - tail..]);
    format!(
        "{}…{}",
        start.iter().collect::<String>(),
        end.iter().collect::<String>()
    )
}

fn print_table() {
    let rows = ROWS.lock().unwrap_or_else(|p| p.into_inner());
    if rows.is_empty() {
        return;
    }
    // Widths in characters, as `{:<w$}` pads: the top function may hold a `…`.
    let width = |f: &dyn Fn(&Row) -> &str, header: &str| {
        rows.iter()
            .map(|r| f(r).chars().count())
            .max()
            .unwrap_or(0)
            .max(header.chars().count())
    };
    let (wt, wk, wa, wp) = (
        width(&|r| &r.test, "test"),
        width(&|r| &r.kind, "kind"),
        width(&|r| &r.total, "total"),
        width(&|r| &r.top, "top function"),
    );
    let mut out = format!(
        "\nprofiled: {} profile{}\n{:<wt$}  {:<wk$}  {:>wa$}  {:>8}  {:<wp$}  file\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        "test",
        "kind",
        "total",
        "samples",
        "top function"
    );
    for r in rows.iter() {
        out += &format!(
            "{:<wt$}  {:<wk$}  {:>wa$}  {:>8}  {:<wp$}  {}\n",
            r.test, r.kind, r.total, r.samples, r.top, r.file
        );
    }
    output::line(out.trim_end());
}

/// Runs the tests registered with `#[profiled::test]` in this binary, with libtest's command
/// line plus `--cpuprofile FILE`, `--profile DIR` and `--profile-freq HZ`. Use it as the whole
/// body of a `harness = false` test target.
///
/// ```no_run
/// #[profiled::test]
/// fn adds() {
///     assert_eq!(1 + 1, 2);
/// }
///
/// profiled::main!();
/// ```
#[macro_export]
macro_rules! main {
    () => {
        fn main() {
            $crate::__private::harness::main(::core::option_env!("CARGO_PKG_NAME"))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn long_names_keep_the_function() {
        assert_eq!(shorten("app::parse", 60), "app::parse");
        let name = "core::ops::function::FnOnce::call_once<<std::backtrace_rs::symbolize::\
                    gimli::Context>::new::{closure#0}, ()>";
        assert_eq!(
            shorten(name, 60),
            "core::ops::function::FnOnce::call_once<…>"
        );
        let qualified = "<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop";
        assert_eq!(
            shorten(qualified, 52),
            "<alloc::vec::Vec<…> as core::ops::drop::Drop>::drop"
        );
        assert_eq!(shorten(qualified, 60), qualified);
        // A fn type's arrow is no closing bracket.
        assert_eq!(
            shorten("app::apply<fn(u8) -> u8>::inner_with_a_long_name", 40),
            "app::apply<…>::inner_with_a_long_name"
        );
        // Still too long without generics: the middle goes.
        let path = "a_crate::with::a::very::deeply::nested::module::path::and_its_function";
        let short = shorten(path, 40);
        assert_eq!(short.chars().count(), 40, "{short}");
        assert!(
            short.starts_with("a_crate::") && short.ends_with("::and_its_function"),
            "{short}"
        );
    }
}
