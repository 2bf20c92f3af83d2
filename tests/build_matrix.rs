//! The fixture crate tests/fixtures/matrix (a hot Rust function with an inlined callee, a
//! closure, a generic instantiated twice, 2000-deep recursion, C from gcc and from clang, a
//! library dlopened and closed during the test) built in each configuration users build
//! with, profiled with `PROFILE=cpu`, and its profile read: the hot function on top with its
//! qualified name and `file:line`, the C functions with lines, the dlopened library's
//! stacks reaching the test function, and go tool pprof reading it with no warnings.
//! The configurations and their builds: tests/fixtures/matrix/configs.rs.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "fixtures/matrix/configs.rs"]
mod matrix;
mod support;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use support::{Read, fixture_target, go_tool_pprof, read};

/// One build and run at a time: cargo takes builds in one target dir in turn anyway, and a
/// run profiled beside another configuration's build would share the machine with it.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Builds the fixture's test in configuration `config`, runs it with a CPU profile, and
/// returns the profile.
fn profile_of(config: &str) -> Read {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let exe = matrix::build(&fixture_target(), config);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&exe)
        .env("PROFILE", format!("cpu,dir={}", dir.path().display()))
        .env_remove("RUST_TEST_THREADS")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{config}: the test failed\n{stdout}\n{stderr}"
    );
    let path = dir
        .path()
        .join("matrix/matrix/every_kind_of_code.cpu.pb.gz");
    let p = read(&path);
    // Kept past the temporary directory for go tool pprof.
    let kept = fixture_target().join(format!("matrix-{config}.cpu.pb.gz"));
    std::fs::copy(&path, &kept).unwrap();
    Read { path: kept, ..p }
}

/// The first line of `marker` in the fixture's test source, 1-based.
fn source_line(marker: &str) -> u64 {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/matrix/tests/matrix.rs"),
    )
    .unwrap();
    source
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} not in the fixture")) as u64
        + 1
}

/// The function a location's line is in.
fn function_of<'a>(
    p: &'a Read,
    line: &profiled::pprof::proto::Line,
) -> &'a profiled::pprof::proto::Function {
    p.profile
        .function
        .iter()
        .find(|f| f.id == line.function_id)
        .unwrap()
}

/// `(function name, file, line)` of every frame of every sample, with its CPU weight.
fn frames(p: &Read) -> Vec<(String, String, i64, i64)> {
    let pr = &p.profile;
    let s = |i: i64| pr.string_table[i as usize].clone();
    let mut out = Vec::new();
    for sample in &pr.sample {
        for id in &sample.location_id {
            let loc = pr.location.iter().find(|l| l.id == *id).unwrap();
            for line in &loc.line {
                let f = function_of(p, line);
                out.push((s(f.name), s(f.filename), line.line, sample.value[1]));
            }
        }
    }
    out
}

/// `function`'s lines resolve: some of its time has a line, and wherever the profile says
/// line 0 (an instruction the compiler gave no line), addr2line says so too, so that no
/// lookup was missed. How much time lands on line-0 instructions is the processor's
/// business: a loop's volatile loads, which clang leaves without a line, hold 55 % of
/// clang_hot on one machine and a few percent on another.
#[track_caller]
fn assert_lines_resolve(what: &str, p: &Read, function: &str) {
    let pr = &p.profile;
    let s = |i: i64| pr.string_table[i as usize].as_str();
    let (mut lined, mut unlined) = (0, 0);
    // Each object read and loaded once, not once per location.
    let mut objects = std::collections::HashMap::new();
    for loc in &pr.location {
        for line in &loc.line {
            if s(function_of(p, line).name) != function {
                continue;
            }
            if line.line > 0 {
                lined += 1;
                continue;
            }
            unlined += 1;
            let m = pr.mapping.iter().find(|m| m.id == loc.mapping_id).unwrap();
            let path = s(m.filename);
            let (data, loader) = objects.entry(path).or_insert_with(|| {
                (
                    std::fs::read(path).unwrap(),
                    addr2line::Loader::new(path).unwrap(),
                )
            });
            let at = file_address(path, data, loc.address - m.memory_start + m.file_offset);
            let mut frames = loader.find_frames(at).unwrap();
            let (mut theirs, mut seen) = (None, Vec::new());
            while let Ok(Some(frame)) = frames.next() {
                // Demangled whatever the unit's language says (a symbol-table name has none).
                let name = frame
                    .function
                    .as_ref()
                    .and_then(|f| f.raw_name().ok())
                    .map(|n| addr2line::demangle_auto(n, None));
                let line = frame.location.and_then(|l| l.line).unwrap_or(0);
                if name.as_ref().is_some_and(|n| n.starts_with(function)) {
                    theirs = Some(line);
                }
                seen.push((name.map(|n| n.into_owned()), line));
            }
            assert_eq!(
                theirs,
                Some(0),
                "{what}: {function} at {:#x} ({path} {at:#x}): no line here, addr2line: {seen:?}",
                loc.address
            );
        }
    }
    assert!(
        lined > 0,
        "{what}: {function} has no location with a line ({unlined} without)"
    );
}

/// The virtual address in an ELF file (its own address space, as addr2line reads it) of
/// file offset `offset`: through the LOAD segment that holds it.
fn file_address(path: &str, data: &[u8], offset: u64) -> u64 {
    let u64_at = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
    let u16_at = |i: usize| u16::from_le_bytes(data[i..i + 2].try_into().unwrap()) as usize;
    let (phoff, size, count) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..count)
        .map(|i| phoff + i * size)
        .filter(|&ph| data[ph..ph + 4] == 1u32.to_le_bytes()) // PT_LOAD
        .map(|ph| (u64_at(ph + 8), u64_at(ph + 16), u64_at(ph + 32)))
        .find(|&(start, _, len)| (start..start + len).contains(&offset))
        .map(|(start, vaddr, _)| offset - start + vaddr)
        .unwrap_or_else(|| panic!("{path}: no segment holds offset {offset:#x}"))
}

/// What every configuration must give.
fn check(config: &str, p: &Read) {
    let what = format!("{config} ({})", p.path.display());
    // `debug = "line-tables-only"` keeps only bare names for inlined functions (no
    // namespaces, no linkage names): the test function, inlined into its closure, is one.
    let bare = config == "release_line_tables_only";
    let is_test =
        |f: &str| f == "matrix::every_kind_of_code" || (bare && f == "every_kind_of_code");
    // go tool pprof reads it with no warnings, and its hottest function (by flat) is the hot
    // one, qualified.
    let top = go_tool_pprof(&["-top"], &p.path);
    let first = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("{what}: no rows in -top\n{top}"));
    assert!(
        first.trim_end().ends_with(" matrix::rust::hot_sum"),
        "{what}: the hot function is not on top\n{top}"
    );
    // With its lines: within its body, in the fixture's source.
    let (start, end) = (
        source_line("pub fn hot_sum"),
        source_line("/// Inlined into"),
    );
    let frames = frames(p);
    let hot: Vec<_> = frames
        .iter()
        .filter(|f| f.0 == "matrix::rust::hot_sum")
        .collect();
    assert!(!hot.is_empty(), "{what}");
    // Compilers mark a few instructions with line 0, no source line: those agree with
    // addr2line, and every other line is in the body.
    assert_lines_resolve(&what, p, "matrix::rust::hot_sum");
    for (_, file, line, _) in hot.iter().filter(|f| f.2 > 0) {
        assert!(
            file.ends_with("tests/matrix.rs") && (start..end).contains(&(*line as u64)),
            "{what}: hot_sum at {file}:{line}, its body is lines {start}..{end}"
        );
    }
    let lines = go_tool_pprof(&["-top", "-lines", "-nodecount=200"], &p.path);
    assert!(
        lines.contains("matrix::rust::hot_sum") && lines.contains("tests/matrix.rs:"),
        "{what}\n{lines}"
    );
    // C from both compilers, and the dlopened library's, with file and line.
    for (function, file) in [
        ("gcc_hot", "c/gcc_hot.c"),
        ("clang_hot", "c/clang_hot.c"),
        ("dl_hot", "c/dl_hot.c"),
    ] {
        let at: Vec<_> = frames.iter().filter(|f| f.0 == function).collect();
        let all: i64 = at.iter().map(|f| f.3).sum();
        assert!(all > 0, "{what}: no samples in {function}\n{top}");
        assert!(
            at.iter().all(|f| f.1.ends_with(file)),
            "{what}: {function} {at:?}"
        );
        assert_lines_resolve(&what, p, function);
    }
    // Stacks through the library, and 2000 frames deep, reach the test function.
    for (leaf, through) in [
        ("dl_hot", "matrix::through_library"),
        (
            "matrix::rust::hot_loop_at_the_bottom",
            "matrix::rust::recurse",
        ),
    ] {
        let weight = |reaching: bool| -> i64 {
            p.profile
                .sample
                .iter()
                .filter(|s| {
                    let stack = p.stack(s);
                    stack.contains(&leaf)
                        && (!reaching
                            || stack.contains(&through) && stack.iter().any(|f| is_test(f)))
                })
                .map(|s| s.value[1])
                .sum()
        };
        let (all, whole) = (weight(false), weight(true));
        assert!(all > 0, "{what}: no samples in {leaf}");
        assert!(
            whole * 10 >= all * 9,
            "{what}: {:.0} % of the CPU in {leaf} has stacks that reach the test function",
            whole as f64 * 100.0 / all as f64
        );
    }
    // The closure, named as the function it is in, and each instantiation of the generic.
    let closure = if bare {
        "{closure#"
    } else {
        "matrix::every_kind_of_code::{"
    };
    assert!(
        frames.iter().any(|f| f.0.starts_with(closure)),
        "{what}: no closure of the test function"
    );
    let generics: std::collections::HashSet<&str> = p
        .profile
        .function
        .iter()
        .filter(|f| p.profile.string_table[f.name as usize] == "matrix::rust::generic_work")
        .map(|f| p.profile.string_table[f.system_name as usize].as_str())
        .collect();
    assert_eq!(generics.len(), 2, "{what}: {generics:?}");
}

macro_rules! configurations {
    ($($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name), &profile_of(stringify!($name)));
            }
        )*
        /// The configurations with a test above.
        const TESTED: &[&str] = &[$(stringify!($name)),*];
    };
}

// One test per configuration of tests/fixtures/matrix/configs.rs.
configurations! {
    dev release_debug release_line_tables_only dwarf_4 dwarf_5 split_unpacked split_packed
    compressed_debug_sections fat_lto
}

#[test]
fn every_configuration_has_its_test() {
    let configs: Vec<&str> = matrix::CONFIGS.iter().map(|c| c.0).collect();
    assert_eq!(configs, TESTED);
}

/// `svg` in a build without profiled's `flamegraph` feature (the fixture has none): the test
/// fails with the one thing to do, not the list of every accepted item.
#[test]
fn svg_without_the_feature_names_the_feature() {
    let exe = {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        matrix::build(&fixture_target(), "dev")
    };
    let out = Command::new(&exe)
        .env("PROFILE", "cpu,svg")
        .env_remove("RUST_TEST_THREADS")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(101), "{text}");
    assert!(
        text.contains(
            "PROFILE: `svg` needs profiled's `flamegraph` cargo feature: `profiled = { version = \
             \"0.1\", features = [\"flamegraph\"] }` under [dev-dependencies]"
        ),
        "{text}"
    );
    assert!(!text.contains("accepted:"), "{text}");
}
