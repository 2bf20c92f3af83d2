//! Addresses -> functions, files, lines and inlined frames: from DWARF, read lazily
//! ([`dwarf`]), and from the symbol table ([`elf`]) for code DWARF does not describe.
//!
//! One symbolizer lives for the whole process: opened objects, what was read of their debug
//! info and resolved addresses are cached, so the second profile of a test binary costs only
//! its new addresses.

#![forbid(unsafe_code)]

mod dwarf;
mod elf;

use rustc_hash::FxHashMap as HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::kind::Notice;
use crate::modules::Module;
use crate::sys;

/// One source-level frame at an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Line {
    /// Demangled, without the hash suffix.
    pub function: Arc<str>,
    /// As in the object (mangled), or the same as `function`.
    pub system_name: Arc<str>,
    pub file: Arc<str>,
    pub line: u32,
}

impl Line {
    /// A frame known by name only, without source file or line.
    pub(crate) fn named(function: impl Into<Arc<str>>, system_name: impl Into<Arc<str>>) -> Line {
        Line {
            function: function.into(),
            system_name: system_name.into(),
            file: "".into(),
            line: 0,
        }
    }
}

/// What an address resolved to: its frames, innermost (inlined) first.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    /// Index into [`Symbolizer::modules`], `None` for addresses outside every known object.
    pub module: Option<usize>,
    pub lines: Arc<[Line]>,
    /// Whether debug info (not only the symbol table, or nothing) named the function.
    pub complete: bool,
}

pub(crate) struct Symbolizer {
    pub modules: Vec<Module>,
    generation: u64,
    objects: HashMap<PathBuf, Option<Object>>,
    cache: HashMap<u64, Resolved>,
    /// What could not be read, for the profile being encoded to tell (each once).
    notices: Vec<Notice>,
}

static SYMBOLIZER: Mutex<Option<Symbolizer>> = Mutex::new(None);

/// Runs `f` with the process's symbolizer, refreshing its module list after a `dlopen` or
/// `dlclose` (objects unloaded since they were sampled stay in it).
pub(crate) fn with<R>(f: impl FnOnce(&mut Symbolizer) -> R) -> R {
    let mut guard = SYMBOLIZER.lock().unwrap_or_else(|p| p.into_inner());
    let generation = sys::modules_generation();
    let stale = guard.as_ref().is_none_or(|s| s.generation != generation);
    if stale {
        let objects = guard.take().map(|s| s.objects).unwrap_or_default();
        *guard = Some(Symbolizer {
            modules: sys::known_modules(),
            generation,
            objects,
            cache: HashMap::default(),
            notices: Vec::new(),
        });
    }
    f(guard.as_mut().expect("set above"))
}

/// An object file: its symbol table, and its debug info if it has any.
struct Object {
    elf: elf::Elf,
    /// The separate debug file holding what was stripped from the object, if one was found.
    debug: Option<elf::Elf>,
    dwarf: Option<dwarf::Dwarf>,
    /// Why its separate debug file could not be used, if it names one.
    unreadable: Option<String>,
    /// Whether the user has been told what could not be read of it.
    said: bool,
}

/// Where distributions install separate debug files (`-dbg`/`-dbgsym`/`-debuginfo`
/// packages), as gdb, perf and addr2line look for them.
const DEBUG_ROOT: &str = "/usr/lib/debug";

/// What to read of a separate debug file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Separate {
    /// Its symbol table and its DWARF.
    Everything,
    /// Its symbol table, and its DWARF only if stored uncompressed. For libraries:
    /// distributions compress their debug files, and decompressing glibc's costs 8.5 MiB
    /// and 0.3 s in a test build for lines in frames that are mostly thread and process
    /// start; its names (the symbol table, read in place) are what profiles need of it.
    NamesIfCompressed,
}

impl Object {
    fn open(path: &Path, build_id: &str, separate: Separate) -> Option<Object> {
        Object::open_in(path, build_id, Path::new(DEBUG_ROOT), separate)
    }

    /// Opens `path`; when its debug info was stripped, reads it from the separate debug file
    /// found under `root` by build id, or through its `.gnu_debuglink`.
    fn open_in(path: &Path, build_id: &str, root: &Path, separate: Separate) -> Option<Object> {
        let elf = elf::Elf::open(path)?;
        let stripped = !elf.has_section(".debug_info") && !elf.has_section(".debug_line");
        let debug = if stripped {
            debug_file(path, build_id, &elf, root)
        } else {
            None
        };
        let unreadable = debuglink(&elf)
            .filter(|_| stripped && debug.is_none())
            .map(|name| {
                format!(
                    "its debug info was moved to {} (.gnu_debuglink), which was not found \
                     beside it, in .debug/ or under {DEBUG_ROOT}: its functions are named from \
                     the symbol table, without lines",
                    String::from_utf8_lossy(name)
                )
            });
        let dwarf = match &debug {
            Some(d)
                if separate == Separate::NamesIfCompressed && d.is_compressed(".debug_info") =>
            {
                None
            }
            Some(d) => dwarf::Dwarf::new(d, path),
            None => dwarf::Dwarf::new(&elf, path),
        };
        elf.release();
        if let Some(debug) = &debug {
            debug.release();
        }
        Some(Object {
            elf,
            debug,
            dwarf,
            unreadable,
            said: false,
        })
    }

    /// An object with no file (the vDSO): its symbol table, no debug info.
    fn in_memory(image: &'static [u8]) -> Option<Object> {
        Some(Object {
            elf: elf::Elf::parse(image)?,
            debug: None,
            dwarf: None,
            unreadable: None,
            said: false,
        })
    }

    /// The fuller symbol table: the debug file's `.symtab` (local functions included) over
    /// the object's own, which a stripped library has only as `.dynsym` (exports).
    fn symbols(&mut self) -> &mut elf::Elf {
        match &mut self.debug {
            Some(debug) if debug.has_symtab() && !self.elf.has_symtab() => debug,
            _ => &mut self.elf,
        }
    }

    fn release(&self) {
        self.elf.release();
        if let Some(debug) = &self.debug {
            debug.release();
        }
    }
}

/// The separate debug file of the object at `path`, as gdb finds it: by build id under
/// `root` (`.build-id/ab/cdef….debug`), else by the name in its `.gnu_debuglink` next to
/// it, in `.debug/` beside it, or under `root` + its directory. A candidate whose build id
/// differs from the object's is someone else's and is skipped (gdb checks the link's CRC,
/// which means reading the whole file; the build id says the same for free).
fn debug_file(path: &Path, build_id: &str, elf: &elf::Elf, root: &Path) -> Option<elf::Elf> {
    let mut candidates = Vec::new();
    if build_id.len() > 2 && build_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        candidates.push(
            root.join(".build-id")
                .join(&build_id[..2])
                .join(format!("{}.debug", &build_id[2..])),
        );
    }
    let real = std::fs::canonicalize(path).ok();
    let name = debuglink(elf)
        .and_then(|n| std::str::from_utf8(n).ok())
        .filter(|n| !n.is_empty() && !n.contains('/'));
    if let (Some(name), Some(dir)) = (name, real.as_deref().and_then(Path::parent)) {
        candidates.push(dir.join(name));
        candidates.push(dir.join(".debug").join(name));
        candidates.push(root.join(dir.strip_prefix("/").unwrap_or(dir)).join(name));
    }
    candidates
        .into_iter()
        .filter(|c| std::fs::canonicalize(c).ok() != real)
        .filter_map(|c| elf::Elf::open(&c))
        .find(|debug| {
            let id = debug.build_id();
            (build_id.is_empty() || id.is_empty() || id == build_id)
                && debug.has_section(".debug_info")
        })
}

/// The file name in an object's `.gnu_debuglink`, as stored (up to its NUL), if it has one.
fn debuglink(elf: &elf::Elf) -> Option<&'static [u8]> {
    let link = elf.section(".gnu_debuglink");
    (!link.is_empty()).then(|| link.split(|&b| b == 0).next().unwrap_or_default())
}

/// Opens the main executable and indexes its debug info's units ahead of the first
/// profile's end, so that test does not wait for it. Run by the drain thread, which no
/// profile samples.
pub(crate) fn prewarm() {
    with(|s| {
        if let Some(main) = s.modules.first().cloned() {
            s.objects
                .entry(main.path.clone())
                .or_insert_with(|| Object::open(&main.path, &main.build_id, Separate::Everything));
        }
    });
}

impl Symbolizer {
    /// What could not be read since last asked, each said once per process.
    pub(crate) fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Resolves `addr`. `is_return` says it is a return address, which is looked up one byte
    /// earlier so that it lands in the call instruction, not the one after it.
    pub(crate) fn resolve(&mut self, addr: u64, is_return: bool) -> Resolved {
        let probe = if is_return {
            addr.saturating_sub(1)
        } else {
            addr
        };
        if let Some(r) = self.cache.get(&probe) {
            return r.clone();
        }
        let module = self.modules.iter().position(|m| m.text.contains(&probe));
        let resolved = match module {
            None => Resolved {
                module: None,
                lines: unknown(probe),
                complete: false,
            },
            Some(i) => {
                let m = &self.modules[i];
                let svma = probe - m.bias;
                let object = self.objects.entry(m.path.clone()).or_insert_with(|| {
                    if m.path.starts_with("[vdso]") {
                        // In memory only: its symbol table, from a copy of its image.
                        return sys::vdso_image().and_then(Object::in_memory);
                    }
                    let separate = if m.is_main {
                        Separate::Everything
                    } else {
                        Separate::NamesIfCompressed
                    };
                    Object::open(&m.path, &m.build_id, separate)
                });
                // Debug info is input like any other: a reader bug on a malformed object
                // must cost a frame's name, not the test.
                let (lines, complete) = match object {
                    Some(object) => {
                        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            lookup(object, svma)
                        }))
                        .unwrap_or_default();
                        if !object.said {
                            let why = object.unreadable.as_ref().or_else(|| {
                                object.dwarf.as_ref().and_then(|d| d.unreadable.as_ref())
                            });
                            if let Some(why) = why {
                                self.notices.push(Notice {
                                    once: None,
                                    text: format!("{}: {why}", m.path.display()),
                                    // A system library's missing debug file is the machine's,
                                    // not the code's: the program's own is worth a line.
                                    minor: !m.is_main,
                                });
                                object.said = true;
                            }
                        }
                        found
                    }
                    None => (Vec::new(), false),
                };
                let lines = if lines.is_empty() {
                    let object = m
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default();
                    Arc::from(vec![Line::named(format!("{object}+{svma:#x}"), "")])
                } else {
                    Arc::from(lines)
                };
                Resolved {
                    module: Some(i),
                    lines,
                    complete,
                }
            }
        };
        self.cache.insert(probe, resolved.clone());
        resolved
    }
}

fn unknown(addr: u64) -> Arc<[Line]> {
    Arc::from(vec![Line::named(format!("{addr:#x}"), "")])
}

/// Frames from DWARF, the outermost named by the symbol table where DWARF has no name;
/// else the symbol table's function alone. `complete` when DWARF located the address.
fn lookup(object: &mut Object, svma: u64) -> (Vec<Line>, bool) {
    let mut frames = match &mut object.dwarf {
        Some(dwarf) => dwarf.frames(svma),
        None => Vec::new(),
    };
    object.release();
    let outer_is_bare = frames.last().is_some_and(|f| f.name.is_some_and(bare));
    let symbol = if frames.iter().all(|f| f.name.is_some()) && !frames.is_empty() && !outer_is_bare
    {
        None
    } else {
        object.symbols().function(svma).map(|f| f.2)
    };
    if frames.is_empty() {
        let Some(name) = symbol else {
            return (Vec::new(), false);
        };
        return (vec![Line::named(demangle(name), name)], false);
    }
    // `debug = "line-tables-only"` keeps only bare names (`heavy_a`, `{closure#0}`): the
    // function the address is in takes its qualified name from the symbol table, which
    // also keeps closures and generic instantiations of different functions apart. Inlined
    // frames keep what DWARF has.
    if let (Some(outer), Some(symbol)) = (frames.last_mut(), symbol) {
        if outer.name.is_some_and(bare) && is_rust_symbol(symbol) {
            outer.name = Some(symbol);
        }
    }
    let complete = frames.iter().any(|f| f.line != 0);
    let lines = frames
        .into_iter()
        .filter_map(|f| {
            let raw = f.name.or(symbol)?;
            Some(Line {
                function: demangle(raw).into(),
                system_name: raw.into(),
                file: f.file,
                line: f.line,
            })
        })
        .collect();
    (lines, complete)
}

/// A DWARF name without its path (`DW_AT_name` of a Rust item: no linkage name was kept).
fn bare(name: &str) -> bool {
    !name.contains("::") && !is_rust_symbol(name)
}

/// A mangled Rust symbol (legacy `_ZN…E` or v0 `_R…`).
fn is_rust_symbol(name: &str) -> bool {
    name.starts_with("_ZN") || name.starts_with("_R")
}

/// Sorts by address, stably: an LSD radix sort, 11 bits a pass over the span of the keys.
/// Tables of 10-20k entries are sorted once per object; std's comparison sorts, compiled
/// unoptimised into users' test builds, take several milliseconds for that.
pub(crate) fn sort_by_address<T: Copy>(v: &mut Vec<T>, key: impl Fn(&T) -> u64) {
    const BITS: u32 = 11;
    let Some(min) = v.iter().map(&key).min() else {
        return;
    };
    let span = v.iter().map(&key).max().unwrap_or(min) - min;
    let mut from = std::mem::take(v);
    let mut to = from.clone();
    let mut shift = 0;
    while shift < 64 && (shift == 0 || span >> shift != 0) {
        let mut counts = [0usize; 1 << BITS];
        for e in &from {
            counts[((key(e) - min) >> shift) as usize & ((1 << BITS) - 1)] += 1;
        }
        let mut at = 0;
        for c in counts.iter_mut() {
            (*c, at) = (at, at + *c);
        }
        for e in &from {
            let d = ((key(e) - min) >> shift) as usize & ((1 << BITS) - 1);
            to[counts[d]] = *e;
            counts[d] += 1;
        }
        std::mem::swap(&mut from, &mut to);
        shift += BITS;
    }
    *v = from;
}

/// Rust (legacy and v0) names demangled without the hash suffix; others unchanged.
pub(crate) fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolizer_test() -> u64 {
        std::hint::black_box(7)
    }

    #[cfg(not(profiled_unsupported))] // needs the platform's list of loaded objects
    #[test]
    fn resolves_own_function_with_file_and_line() {
        let addr = marker_function_for_symbolizer_test as *const () as usize as u64;
        assert_eq!(marker_function_for_symbolizer_test(), 7);
        let r = with(|s| s.resolve(addr, false));
        let last = r.lines.last().unwrap();
        assert!(
            last.function
                .ends_with("marker_function_for_symbolizer_test"),
            "{:?}",
            r.lines
        );
        assert!(last.file.ends_with("symbolize/mod.rs"), "{:?}", r.lines);
        assert!(last.line > 0);
        assert!(r.complete);
        assert_eq!(r.module, Some(0), "in the main executable");
    }

    /// Frames in the vDSO (`clock_gettime`, which every `Instant::now()` calls) are named
    /// from its symbol table, read from memory: it has no file.
    #[test]
    fn names_vdso_functions() {
        use object::{Object as _, ObjectSymbol};
        let image = sys::vdso_image().expect("Linux maps a vDSO into every process");
        let file = object::File::parse(image).unwrap();
        let sym = file
            .dynamic_symbols()
            .find(|s| s.size() > 0 && s.name().is_ok_and(|n| n.ends_with("clock_gettime")))
            .expect("the vDSO exports clock_gettime");
        let vdso = sys::known_modules()
            .into_iter()
            .find(|m| m.path.as_os_str() == "[vdso]")
            .expect("the vDSO among the known objects");
        let addr = vdso.bias + sym.address() + sym.size() / 2;
        let r = with(|s| s.resolve(addr, false));
        assert!(
            r.lines[0].function.ends_with("clock_gettime"),
            "{:?}",
            r.lines
        );
        assert!(r.module.is_some(), "in the vDSO's mapping");
    }

    /// Every function of this test binary (std's optimised code with its inlined calls
    /// included), at its start, middle and last byte: the same frames, names, files and
    /// lines as addr2line, which reads all of the debug info eagerly.
    #[test]
    fn agrees_with_addr2line_on_every_function() {
        let (checked, inlined) = agrees_with_addr2line(&std::env::current_exe().unwrap());
        assert!(
            checked > 1000 && inlined > 100,
            "{checked} addresses, {inlined} with inlined frames"
        );
    }

    /// A small program with generics, closures, inlining and std collections, built with
    /// `flags` into a temporary directory (kept alive by the returned guard).
    fn small_program(flags: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("small.rs");
        std::fs::write(
            &source,
            r#"
            use std::collections::BTreeMap;
            #[inline(always)]
            fn inner(x: u64) -> u64 { x.rotate_left(7) ^ 0x9e37 }
            #[inline(never)]
            fn outer(v: &[u64]) -> BTreeMap<u64, u64> {
                v.iter().map(|&x| (inner(x), x.count_ones() as u64)).collect()
            }
            fn main() {
                let v: Vec<u64> = (0..1000).collect();
                println!("{}", outer(&v).len());
            }
            "#,
        )
        .unwrap();
        let exe = dir.path().join("small");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        run(std::process::Command::new(rustc)
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(&source));
        (dir, exe)
    }

    /// Runs a build tool, failing the test with its stderr if it fails.
    fn run(command: &mut std::process::Command) {
        let out = command
            .output()
            .unwrap_or_else(|e| panic!("{command:?}: {e} (.ci/run installs the tools)"));
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The same for a program built with `-Cdwarf-version=5` (`.debug_addr`/`addrx`,
    /// `strx`, `.debug_rnglists`, the DWARF 5 line header), as such builds emit it.
    #[test]
    fn agrees_with_addr2line_on_dwarf_5() {
        let (_dir, exe) = small_program(&["-Cdwarf-version=5", "-Cdebuginfo=2", "-Copt-level=1"]);
        let data = std::fs::read(&exe).unwrap();
        let file = object::read::File::parse(&*data).unwrap();
        use object::{Object as _, ObjectSection as _};
        let version = file
            .section_by_name(".debug_info")
            .and_then(|s| s.data().ok())
            .map(|d| u16::from_le_bytes([d[4], d[5]]));
        assert_eq!(version, Some(5), "the program's first unit is DWARF 5");
        assert!(file.section_by_name(".debug_addr").is_some());
        let (checked, inlined) = agrees_with_addr2line(&exe);
        assert!(
            checked > 100 && inlined > 0,
            "{checked} addresses, {inlined} inlined"
        );
    }

    /// Debug sections compressed by the linker (`SHF_COMPRESSED`, zlib and zstd), as
    /// `-C link-arg=-Wl,--compress-debug-sections=...` makes them.
    #[test]
    fn agrees_with_addr2line_on_compressed_debug_sections() {
        for (how, format) in [
            ("zlib", object::CompressionFormat::Zlib),
            ("zstd", object::CompressionFormat::Zstandard),
        ] {
            let flag = format!("-Clink-arg=-Wl,--compress-debug-sections={how}");
            let (_dir, exe) = small_program(&["-Cdebuginfo=2", &flag]);
            let data = std::fs::read(&exe).unwrap();
            let file = object::read::File::parse(&*data).unwrap();
            use object::{Object as _, ObjectSection as _};
            let info = file.section_by_name(".debug_info").unwrap();
            assert_eq!(info.compressed_data().unwrap().format, format, "{how}");
            let (checked, inlined) = agrees_with_addr2line(&exe);
            assert!(
                checked > 100 && inlined > 0,
                "{how}: {checked} addresses, {inlined} inlined"
            );
        }
    }

    /// Split DWARF: `split-debuginfo = "unpacked"` (skeleton units in the binary, the rest in
    /// `.dwo` files beside the objects) and `"packed"` (one `<binary>.dwp`), in DWARF 4
    /// (GNU's extension) and 5. The program's own unit is split (std comes prebuilt).
    #[test]
    fn agrees_with_addr2line_on_split_debug_info() {
        for (kind, version) in [
            ("unpacked", "4"),
            ("packed", "4"),
            ("unpacked", "5"),
            ("packed", "5"),
        ] {
            let (dir, exe) = small_program(&[
                "-Cdebuginfo=2",
                "-Copt-level=1",
                &format!("-Csplit-debuginfo={kind}"),
                &format!("-Cdwarf-version={version}"),
            ]);
            let files: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let wanted = if kind == "packed" { ".dwp" } else { ".dwo" };
            assert!(
                files.iter().any(|f| f.ends_with(wanted)),
                "{kind}: {files:?}"
            );
            let mut object = Object::open(&exe, "", Separate::Everything).unwrap();
            let (checked, inlined) =
                compare(&exe, Object::open(&exe, "", Separate::Everything).unwrap());
            assert!(
                checked > 100 && inlined > 0,
                "{kind} v{version}: {checked} addresses, {inlined} inlined"
            );
            // The program's own function, whose entries are only in the split file.
            let outer = sym_address(&exe, "outer");
            let (lines, complete) = lookup(&mut object, outer);
            assert!(complete, "{kind} v{version}: {lines:?}");
            assert!(
                lines.last().unwrap().file.ends_with("small.rs"),
                "{lines:?}"
            );
        }
    }

    /// The address of the function whose demangled name ends with `::name`.
    fn sym_address(exe: &Path, name: &str) -> u64 {
        use object::{Object as _, ObjectSymbol};
        let data = std::fs::read(exe).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let found = file
            .symbols()
            .find(|s| demangle(s.name().unwrap_or("")).ends_with(&format!("::{name}")))
            .unwrap_or_else(|| panic!("no {name}"));
        found.address() + 4
    }

    /// A release build with `debug = "line-tables-only"` (`-Cdebuginfo=line-tables-only`,
    /// optimised): names from the few entries such units keep, lines from the line table.
    #[test]
    fn agrees_with_addr2line_on_optimised_line_tables_only() {
        let (_dir, exe) = small_program(&["-Cdebuginfo=line-tables-only", "-Copt-level=3"]);
        let (checked, _) = agrees_with_addr2line(&exe);
        assert!(checked > 100, "{checked} addresses");
        // DWARF has `outer`; the profile says which `outer`.
        let mut object = Object::open(&exe, "", Separate::Everything).unwrap();
        let (lines, _) = lookup(&mut object, sym_address(&exe, "outer"));
        let last = lines.last().unwrap();
        assert_eq!(&*last.function, "small::outer", "{lines:?}");
        assert!(
            last.file.ends_with("small.rs") && last.line > 0,
            "{lines:?}"
        );
    }

    /// Debug info stripped into a separate file (`objcopy --only-keep-debug`, as
    /// distributions' debug packages hold it), found through `.gnu_debuglink` beside the
    /// object and in `.debug/` beside it, and by build id under the debug root: the same
    /// frames as addr2line gives for the program before stripping. A debug file of another
    /// build is not taken.
    #[test]
    fn reads_separate_debug_files() {
        let (dir, exe) = small_program(&[
            "-Cdebuginfo=2",
            "-Copt-level=1",
            "-Clink-arg=-Wl,--build-id",
        ]);
        let d = dir.path();
        let objcopy =
            |args: &[&std::ffi::OsStr]| run(std::process::Command::new("objcopy").args(args));
        let debug = d.join("small.debug");
        objcopy(&[
            "--only-keep-debug".as_ref(),
            exe.as_os_str(),
            debug.as_os_str(),
        ]);
        let linked = d.join("linked");
        objcopy(&[
            "--strip-debug".as_ref(),
            "--add-gnu-debuglink".as_ref(),
            debug.as_os_str(),
            exe.as_os_str(),
            linked.as_os_str(),
        ]);
        let bare = d.join("bare");
        objcopy(&["--strip-debug".as_ref(), exe.as_os_str(), bare.as_os_str()]);
        let build_id = elf::Elf::open(&exe).unwrap().build_id();
        assert_eq!(build_id.len(), 40);
        let root = d.join("root");
        let by_id = root.join(".build-id").join(&build_id[..2]);
        std::fs::create_dir_all(&by_id).unwrap();
        let nowhere = d.join("no-root");

        // Linked but missing: said, with the name it looked for.
        let kept = d.join("kept");
        std::fs::rename(&debug, &kept).unwrap();
        let away = Object::open_in(&linked, &build_id, &nowhere, Separate::Everything).unwrap();
        assert!(away.debug.is_none());
        let why = away.unreadable.as_deref().unwrap_or_default();
        assert!(
            why.contains("small.debug") && why.contains(".gnu_debuglink"),
            "{why}"
        );
        std::fs::rename(&kept, &debug).unwrap();
        // Beside the object, then in .debug/ beside it.
        let (checked, _) = compare(
            &exe,
            Object::open_in(&linked, &build_id, &nowhere, Separate::Everything).unwrap(),
        );
        assert!(checked > 100, "{checked}");
        std::fs::create_dir(d.join(".debug")).unwrap();
        std::fs::rename(&debug, d.join(".debug/small.debug")).unwrap();
        compare(
            &exe,
            Object::open_in(&linked, &build_id, &nowhere, Separate::Everything).unwrap(),
        );
        // By build id, for an object with no link.
        std::fs::rename(
            d.join(".debug/small.debug"),
            by_id.join(format!("{}.debug", &build_id[2..])),
        )
        .unwrap();
        let object = Object::open_in(&bare, &build_id, &root, Separate::Everything).unwrap();
        assert!(object.debug.is_some());
        compare(&exe, object);
        // Someone else's debug file under this build id: not taken.
        let (_other_dir, other) = small_program(&[
            "-Cdebuginfo=2",
            &format!("-Clink-arg=-Wl,--build-id=0x{}", "ab".repeat(20)),
        ]);
        std::fs::copy(&other, by_id.join(format!("{}.debug", &build_id[2..]))).unwrap();
        assert!(
            Object::open_in(&bare, &build_id, &root, Separate::Everything)
                .unwrap()
                .debug
                .is_none()
        );
    }

    /// The C library's internal functions (absent from its `.dynsym`) are named, with file
    /// and line, from the distribution's debug file found by build id, and every function
    /// of it agrees with addr2line (GCC's `.cold` parts, described by their parent's
    /// `DW_AT_ranges`, included), where the debug file is installed (`.ci/run` installs Debian's libc6-dbg; without it this test says so and
    /// fails in CI).
    #[cfg(not(profiled_unsupported))]
    #[test]
    fn names_system_library_internals_from_installed_debug_files() {
        use object::{Object as _, ObjectSymbol};
        let libc = sys::known_modules()
            .into_iter()
            .find(|m| {
                m.path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
            })
            .expect("libc is loaded");
        let installed = Path::new(DEBUG_ROOT)
            .join(".build-id")
            .join(&libc.build_id[..2])
            .join(format!("{}.debug", &libc.build_id[2..]));
        if !installed.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is missing",
                installed.display()
            );
            eprintln!(
                "skipped: no debug file for {} ({})",
                libc.path.display(),
                installed.display()
            );
            return;
        }
        let data = std::fs::read(&installed).unwrap();
        let debug = object::File::parse(&*data).unwrap();
        let exported: std::collections::HashSet<u64> = {
            let lib = std::fs::read(&libc.path).unwrap();
            let lib = object::File::parse(&*lib).unwrap();
            lib.dynamic_symbols().map(|s| s.address()).collect()
        };
        let internal: Vec<_> = debug
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 16 && s.is_local())
            .filter(|s| !exported.contains(&s.address()))
            .take(50)
            .map(|s| (s.address(), s.name().unwrap().to_string()))
            .collect();
        assert!(
            internal.len() >= 20,
            "{} internal functions",
            internal.len()
        );
        // As profiles open it: names from the debug file's symbol table; its DWARF, which
        // Debian compresses, is left alone.
        let mut names_only =
            Object::open(&libc.path, &libc.build_id, Separate::NamesIfCompressed).unwrap();
        assert!(names_only.debug.is_some() && names_only.dwarf.is_none());
        for (svma, name) in &internal {
            let (lines, _) = lookup(&mut names_only, svma + 4);
            assert_eq!(lines.last().map(|l| &*l.system_name), Some(name.as_str()));
        }
        let mut object = Object::open(&libc.path, &libc.build_id, Separate::Everything).unwrap();
        assert!(object.debug.is_some(), "found {}", installed.display());
        let mut with_lines = 0;
        for (svma, name) in &internal {
            let (lines, _) = lookup(&mut object, svma + 4);
            let outer = lines.last().unwrap_or_else(|| panic!("{name}: no frames"));
            // DWARF names the function; the symbol may carry GCC's clone suffix (`.part.0`).
            assert!(name.starts_with(&*outer.system_name), "{name}: {lines:?}");
            with_lines += usize::from(outer.line > 0);
        }
        assert!(with_lines >= internal.len() / 2, "{with_lines} with lines");
        // Every function of the C library (GCC's `.cold` parts, described by their parent's
        // DW_AT_ranges, and its assembly included) against addr2line reading the debug file.
        let (checked, inlined) = compare(&installed, object);
        assert!(
            checked > 5000 && inlined > 500,
            "{checked} addresses, {inlined} inlined"
        );
    }

    /// The build settings real projects use, each against addr2line over every function:
    /// fat LTO, frame pointers, DWARF 4, `debug = 1`, lld, a static executable, v0 symbol
    /// mangling (the default tests here use the legacy one).
    #[test]
    fn agrees_with_addr2line_across_build_settings() {
        let settings: &[&[&str]] = &[
            &[
                "-Cdebuginfo=2",
                "-Copt-level=3",
                "-Clto=fat",
                "-Ccodegen-units=1",
            ],
            &[
                "-Cdebuginfo=2",
                "-Copt-level=2",
                "-Cforce-frame-pointers=yes",
            ],
            &["-Cdebuginfo=2", "-Copt-level=2", "-Cdwarf-version=4"],
            &["-Cdebuginfo=1", "-Copt-level=2"],
            &["-Cdebuginfo=2", "-Clink-arg=-fuse-ld=lld"],
            &["-Cdebuginfo=2", "-Ctarget-feature=+crt-static"],
            &[
                "-Cdebuginfo=2",
                "-Copt-level=1",
                "-Csymbol-mangling-version=v0",
            ],
        ];
        for flags in settings {
            let (_dir, exe) = small_program(flags);
            let (checked, _) = agrees_with_addr2line(&exe);
            assert!(checked > 100, "{flags:?}: {checked} addresses");
        }
    }

    /// The fixture matrix's test binary (tests/fixtures/matrix: Rust with inlining,
    /// closures and generics, gcc and clang C) in every configuration tests/build_matrix.rs
    /// profiles, against addr2line over every function. Built into the fixtures' shared
    /// target dir, where that test finds them built.
    #[test]
    fn agrees_with_addr2line_on_the_fixture_matrix() {
        mod matrix {
            include!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/matrix/configs.rs"
            ));
        }
        // target/debug/deps/<this test> -> target/fixtures, as the integration tests have it.
        let exe = std::env::current_exe().unwrap();
        let target = exe.ancestors().nth(3).unwrap().join("fixtures");
        for (name, _, _) in matrix::CONFIGS {
            let exe = matrix::build(&target, name);
            eprintln!("{name}: {}", exe.display());
            let (checked, inlined) = agrees_with_addr2line(&exe);
            assert!(
                checked > 1000 && inlined > 100,
                "{name}: {checked}, {inlined}"
            );
        }
    }

    /// C built with gcc and with clang (which writes no `.debug_aranges`: its units are
    /// found through their own ranges), optimised, against addr2line.
    #[test]
    fn agrees_with_addr2line_on_c() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("hot.c");
        std::fs::write(
            &source,
            "#include <stdio.h>\n\
             static inline unsigned mix(unsigned x) { return (x << 7 | x >> 25) ^ 0x9e37u; }\n\
             __attribute__((noinline)) unsigned hot(unsigned n) {\n\
             \x20 unsigned s = 0; for (unsigned i = 0; i < n; i++) s += mix(i * s + i); return s;\n\
             }\n\
             int main(int argc, char **argv) { printf(\"%u\\n\", hot(argc * 1000000u)); return 0; }\n",
        )
        .unwrap();
        for cc in ["gcc", "clang"] {
            let exe = dir.path().join(cc);
            run(std::process::Command::new(cc)
                .args(["-O2", "-g", "-o"])
                .arg(&exe)
                .arg(&source));
            let (checked, _) = agrees_with_addr2line(&exe);
            assert!(checked >= 3, "{cc}: {checked} addresses");
            let mut object = Object::open(&exe, "", Separate::Everything).unwrap();
            let hot = sym_address_raw(&exe, "hot");
            let (lines, complete) = lookup(&mut object, hot);
            assert!(complete, "{cc}: {lines:?}");
            let outer = lines.last().unwrap();
            assert_eq!(&*outer.function, "hot");
            assert!(
                outer.file.ends_with("hot.c") && outer.line > 0,
                "{cc}: {lines:?}"
            );
        }
    }

    /// The address (plus 4) of the symbol named exactly `name`.
    fn sym_address_raw(exe: &Path, name: &str) -> u64 {
        use object::{Object as _, ObjectSymbol};
        let data = std::fs::read(exe).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let found = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
        found.address() + 4
    }

    /// Compares every function of `exe` with addr2line; (addresses checked, with inlines).
    fn agrees_with_addr2line(exe: &std::path::Path) -> (usize, usize) {
        compare(exe, Object::open(exe, "", Separate::Everything).unwrap())
    }

    /// Compares `ours` with addr2line reading `exe` over every function of `exe`.
    fn compare(exe: &std::path::Path, mut ours: Object) -> (usize, usize) {
        use object::{Object as _, ObjectSymbol};
        let exe = exe.to_path_buf();
        let data = std::fs::read(&exe).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let reference = addr2line::Loader::new(&exe).unwrap();
        let starts: HashMap<String, u64> = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text)
            .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
            .collect();
        let (mut checked, mut inlined, mut wrong) = (0, 0, Vec::new());
        for sym in file.symbols() {
            if sym.kind() != object::SymbolKind::Text || sym.size() == 0 {
                continue;
            }
            for addr in [
                sym.address(),
                sym.address() + sym.size() / 2,
                sym.address() + sym.size() - 1,
            ] {
                let mut expected = Vec::new();
                let mut frames = reference.find_frames(addr).unwrap();
                while let Ok(Some(f)) = frames.next() {
                    let name = f
                        .function
                        .as_ref()
                        .and_then(|n| n.raw_name().ok())
                        .map(|n| n.into_owned());
                    let (file, line) = f
                        .location
                        .map(|l| (l.file.unwrap_or("").to_string(), l.line.unwrap_or(0)))
                        .unwrap_or_default();
                    expected.push((name.unwrap_or_default(), file, line));
                }
                if expected.is_empty() {
                    continue;
                }
                let (lines, _) = lookup(&mut ours, addr);
                let got: Vec<_> = lines
                    .iter()
                    .map(|l| (l.system_name.to_string(), l.file.to_string(), l.line))
                    .collect();
                checked += 1;
                inlined += usize::from(expected.len() > 1);
                // Where DWARF names no function (line-tables-only units), addr2line gives
                // none; profiled names it from the symbol table, and must agree on the rest.
                // Names from the symbol table may be any of a function's aliases (C
                // libraries have several per function: `__GI_x`, `__x`, `x`).
                for (want, have) in expected.iter_mut().zip(&got) {
                    let alias = |n: &str| starts.get(n).copied();
                    // A bare DWARF name (line-tables-only) is qualified from the symbol table.
                    let qualified = bare(&want.0) && is_rust_symbol(&have.0);
                    if (want.0.is_empty() && !have.0.is_empty())
                        || qualified
                        || (alias(&want.0).is_some() && alias(&want.0) == alias(&have.0))
                    {
                        want.0.clone_from(&have.0);
                    }
                }
                if got != expected {
                    wrong.push((addr, expected, got));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {checked} differ, e.g. {:#?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        (checked, inlined)
    }

    /// Debug info is input: a binary with one DWARF section corrupted (bytes overwritten at
    /// random, lightly and heavily) must give frames or fall back to symbol names, never
    /// panic; lightly corrupted, most lookups must still reach the section, or the test
    /// would prove nothing. (It found slicing past a unit's end and unbounded tables.)
    #[test]
    fn corrupted_debug_info_never_panics() {
        use object::{Object as _, ObjectSection, ObjectSymbol};
        let exe = std::env::current_exe().unwrap();
        let original = std::fs::read(&exe).unwrap();
        let file = object::File::parse(&*original).unwrap();
        let addresses: Vec<u64> = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text)
            .map(|s| s.address() + s.size() / 2)
            .step_by(7)
            .collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let dir = tempfile::tempdir().unwrap();
        let sections = [
            ".debug_aranges",
            ".debug_info",
            ".debug_line",
            ".debug_abbrev",
        ];
        for (name, bytes) in sections.iter().flat_map(|s| [(*s, 64), (*s, 2000)]) {
            let (offset, size) = file.section_by_name(name).unwrap().file_range().unwrap();
            let mut data = original.clone();
            for _ in 0..bytes {
                data[(offset + next() % size) as usize] = next() as u8;
            }
            let path = dir.path().join(format!("{}-{bytes}", &name[1..]));
            std::fs::write(&path, &data).unwrap();
            let mut object = Object::open(&path, "", Separate::Everything).unwrap();
            let (mut panics, mut located) = (0, 0);
            for &addr in &addresses {
                let looked_up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    lookup(&mut object, addr)
                }));
                match looked_up {
                    Ok((_, complete)) => located += usize::from(complete),
                    Err(_) => panics += 1,
                }
            }
            assert_eq!(panics, 0, "{name}, {bytes} bytes: lookups that panicked");
            if bytes == 64 {
                assert!(
                    located > addresses.len() / 4,
                    "{name}: {located} located with DWARF"
                );
            }
        }
    }

    /// The same for a DWARF 5 program, over every section the reader touches (string,
    /// address, range-list and string-offset tables included), lightly and heavily, under
    /// a deadline and a memory bound: a corrupted length or offset must not make a lookup
    /// loop, run away or allocate without end.
    #[test]
    fn corrupted_dwarf_5_sections_never_panic_or_hang() {
        use object::{Object as _, ObjectSection, ObjectSymbol};
        let (dir, exe) = small_program(&["-Cdwarf-version=5", "-Cdebuginfo=2", "-Copt-level=1"]);
        let original = std::fs::read(&exe).unwrap();
        let file = object::File::parse(&*original).unwrap();
        let addresses: Vec<u64> = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
            .flat_map(|s| [s.address(), s.address() + s.size() / 2])
            .collect();
        let sections = [
            ".debug_info",
            ".debug_abbrev",
            ".debug_line",
            ".debug_str",
            ".debug_line_str",
            ".debug_str_offsets",
            ".debug_addr",
            ".debug_rnglists",
            ".debug_aranges",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases = Vec::new();
        for name in sections {
            let Some(section) = file.section_by_name(name) else {
                continue;
            };
            let (offset, size) = section.file_range().unwrap();
            for (round, bytes) in [16u64, 256, 4096].into_iter().enumerate() {
                let mut data = original.clone();
                for _ in 0..bytes.min(size) {
                    data[(offset + next() % size) as usize] = next() as u8;
                }
                let path = dir.path().join(format!("{}-{round}", &name[1..]));
                std::fs::write(&path, &data).unwrap();
                cases.push((name, bytes, path));
            }
        }
        assert!(cases.len() >= 24, "{} cases", cases.len());
        // Memory is bounded too: a corrupted length or count must not make the reader
        // allocate what it says. The bound is twice the intact program's peak (its lookups
        // reach ~4.5 MB, the corrupted ones at most ~5 MB when this was written) plus 1 MiB.
        let intact = crate::heap::allocations(|| {
            let mut object = Object::open(&exe, "", Separate::Everything).unwrap();
            for &addr in &addresses {
                lookup(&mut object, addr);
            }
        });
        let bound = 2 * intact.peak_live_bytes + (1 << 20);
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (name, bytes, path) in cases {
                let mut panicked = None;
                let counts = crate::heap::allocations(|| {
                    let mut object = Object::open(&path, "", Separate::Everything).unwrap();
                    for &addr in &addresses {
                        let looked_up =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                lookup(&mut object, addr)
                            }));
                        if looked_up.is_err() {
                            panicked = Some(addr);
                            return;
                        }
                    }
                });
                if let Some(addr) = panicked {
                    let _ = done.send(Err(format!("{name}, {bytes} bytes, {addr:#x}: panicked")));
                    return;
                }
                if counts.peak_live_bytes > bound {
                    let _ = done.send(Err(format!(
                        "{name}, {bytes} bytes: lookups held {} bytes at their peak, over {bound}",
                        counts.peak_live_bytes
                    )));
                    return;
                }
            }
            let _ = done.send(Ok(()));
        });
        match finished.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(result) => result.unwrap(),
            Err(_) => panic!("lookups on corrupted DWARF did not finish in 120 s"),
        }
    }

    #[test]
    fn sorts_by_address_stably() {
        let mut v: Vec<(u64, u32)> = (0..5000u32)
            .map(|i| ((u64::from(i) * 7919 % 5003) << 20 | 0x5555_0000_0000, i % 3))
            .collect();
        v.push((0x5555_0000_0000, 9));
        v.push((0x5555_0000_0000, 8));
        let mut expected = v.clone();
        expected.sort_by_key(|e| e.0);
        sort_by_address(&mut v, |e| e.0);
        assert_eq!(v, expected, "same order as std's stable sort, ties kept");
        let mut empty: Vec<(u64, u32)> = Vec::new();
        sort_by_address(&mut empty, |e| e.0);
        assert!(empty.is_empty());
    }

    #[test]
    fn demangles_without_hash() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("memcpy"), "memcpy");
    }
}
