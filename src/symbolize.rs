//! Addresses -> functions, files, lines and inlined frames, with addr2line over each loaded
//! object's debug info.
//!
//! One symbolizer lives for the whole process: loaders (the parsed debug info) and resolved
//! addresses are cached, so the second profile of a test binary costs only its new addresses.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::modules::{self, Module};

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
    loaders: HashMap<PathBuf, Option<addr2line::Loader>>,
    cache: HashMap<u64, Resolved>,
}

static SYMBOLIZER: Mutex<Option<Symbolizer>> = Mutex::new(None);

/// Runs `f` with the process's symbolizer, refreshing its module list after a `dlopen`.
pub(crate) fn with<R>(f: impl FnOnce(&mut Symbolizer) -> R) -> R {
    let mut guard = SYMBOLIZER.lock().unwrap_or_else(|p| p.into_inner());
    let generation = modules::generation();
    let stale = guard.as_ref().is_none_or(|s| s.generation != generation);
    if stale {
        let loaders = guard.take().map(|s| s.loaders).unwrap_or_default();
        *guard = Some(Symbolizer {
            modules: modules::loaded(),
            generation,
            loaders,
            cache: HashMap::new(),
        });
    }
    f(guard.as_mut().expect("set above"))
}

/// Loads the main executable's debug info ahead of the first profile's end, so that test
/// does not wait for it. Run by the drain thread, which no profile samples.
pub(crate) fn prewarm() {
    with(|s| {
        if let Some(main) = s.modules.first().cloned() {
            s.loaders
                .entry(main.path.clone())
                .or_insert_with(|| addr2line::Loader::new(&main.path).ok());
        }
    });
}

impl Symbolizer {
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
                let loader = self
                    .loaders
                    .entry(m.path.clone())
                    .or_insert_with(|| addr2line::Loader::new(&m.path).ok());
                let (lines, complete) = match loader {
                    Some(loader) => lookup(loader, svma),
                    None => (Vec::new(), false),
                };
                let lines = if lines.is_empty() {
                    let object = m
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default();
                    Arc::from(vec![Line {
                        function: format!("{object}+{:#x}", probe - m.bias).into(),
                        system_name: "".into(),
                        file: "".into(),
                        line: 0,
                    }])
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
    Arc::from(vec![Line {
        function: format!("{addr:#x}").into(),
        system_name: "".into(),
        file: "".into(),
        line: 0,
    }])
}

/// Frames from DWARF, else the symbol table's name; `complete` when DWARF named them.
fn lookup(loader: &addr2line::Loader, svma: u64) -> (Vec<Line>, bool) {
    let mut lines = Vec::new();
    if let Ok(mut frames) = loader.find_frames(svma) {
        while let Ok(Some(frame)) = frames.next() {
            let raw = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok())
                .map(|n| n.into_owned());
            let Some(raw) = raw else { continue };
            let (file, line) = frame
                .location
                .as_ref()
                .map(|l| (l.file.unwrap_or(""), l.line.unwrap_or(0)))
                .unwrap_or(("", 0));
            lines.push(Line {
                function: demangle(&raw).into(),
                system_name: raw.into(),
                file: file.into(),
                line,
            });
        }
    }
    if !lines.is_empty() {
        return (lines, true);
    }
    if let Some(name) = loader.find_symbol(svma) {
        lines.push(Line {
            function: demangle(name).into(),
            system_name: name.into(),
            file: "".into(),
            line: 0,
        });
    }
    (lines, false)
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
        assert!(last.file.ends_with("symbolize.rs"), "{:?}", r.lines);
        assert!(last.line > 0);
        assert!(r.complete);
        assert_eq!(r.module, Some(0), "in the main executable");
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
