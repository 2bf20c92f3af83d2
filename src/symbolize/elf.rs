//! One object file mapped for the process's life: its sections and its function symbols
//! (`.symtab`, else `.dynsym`).
//!
//! Symbols are read from the raw `Elf64_Sym` array with plain loops rather than object's
//! symbol iterator: this code runs in users' unoptimised test builds, where the iterator's
//! layers cost 10 ms for a test binary's 20k symbols and a loop a fraction of that.

#![forbid(unsafe_code)]

use std::fs::File;
use std::path::Path;

use object::{Object, ObjectSection};

/// A section as the file holds it: its bytes in the mapping, or, for a compressed section
/// (`SHF_COMPRESSED` or `.zdebug_*`, as `-Wl,--compress-debug-sections` and distributions'
/// debug packages write them), its compressed bytes, decompressed on first use into memory
/// that lives as long as the mapping. Decompressing costs the section's full size in
/// memory, which reading in place avoids: only sections a lookup needs pay it (never, for
/// instance, the location lists, which are as big as the rest of a C library's).
struct Section {
    name: &'static str,
    compressed: object::CompressedData<'static>,
    data: std::sync::OnceLock<&'static [u8]>,
}

impl Section {
    fn data(&self) -> &'static [u8] {
        self.data
            .get_or_init(|| match self.compressed.decompress() {
                Ok(std::borrow::Cow::Borrowed(bytes)) => bytes,
                Ok(std::borrow::Cow::Owned(bytes)) => Vec::leak(bytes),
                Err(_) => &[],
            })
    }
}

/// A function symbol: `[start, start + len)` in stated (file) addresses.
#[derive(Clone, Copy)]
struct Func {
    start: u64,
    len: u32,
    name: u32,
}

pub(crate) struct Elf {
    /// The whole mapped file.
    data: &'static [u8],
    /// Every section, looked up by name when the DWARF reader asks.
    sections: Vec<Section>,
    /// Sorted function symbols, built once lookups pass [`SCANS_BEFORE_INDEX`].
    funcs: Option<Vec<Func>>,
    scans: u32,
    pub little_endian: bool,
    elf64: bool,
}

const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;

impl Elf {
    /// Maps `path`. The mapping is never unmapped: symbolizers live for the process, and the
    /// DWARF reader borrows from it for `'static`. Only pages that are read become resident.
    pub(crate) fn open(path: &Path) -> Option<Elf> {
        Elf::parse(crate::sys::map_file(&File::open(path).ok()?)?)
    }

    /// An object already in memory (the vDSO's image).
    pub(crate) fn parse(data: &'static [u8]) -> Option<Elf> {
        let parsed = object::File::parse(data).ok()?;
        let sections = parsed
            .sections()
            .filter_map(|s| {
                let name = s.name().ok()?;
                // `.zdebug_info` (GNU's older compression) is `.debug_info`, compressed.
                let name: &'static str = match name.strip_prefix(".zdebug_") {
                    Some(rest) => String::leak(format!(".debug_{rest}")),
                    None => name,
                };
                Some(Section {
                    name,
                    compressed: s.compressed_data().ok()?,
                    data: std::sync::OnceLock::new(),
                })
            })
            .collect();
        Some(Elf {
            data,
            sections,
            funcs: None,
            scans: 0,
            little_endian: parsed.is_little_endian(),
            elf64: parsed.is_64(),
        })
    }

    /// Drops the mapping's pages from this process's memory; they are read again from the
    /// page cache if needed. Without this, every unit, table and name a profile ever needed
    /// would stay resident for the rest of the process.
    pub(crate) fn release(&self) {
        crate::sys::release(self.data);
    }

    fn find(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub(crate) fn section(&self, name: &str) -> &'static [u8] {
        self.find(name).map_or(&[], Section::data)
    }

    /// Whether the object has a section `name` with contents, without decompressing it.
    pub(crate) fn has_section(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|s| !s.compressed.data.is_empty())
    }

    /// Whether section `name` is stored compressed.
    pub(crate) fn is_compressed(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|s| s.compressed.format != object::CompressionFormat::None)
    }

    /// Whether the object has a full symbol table (not only the exported `.dynsym`).
    pub(crate) fn has_symtab(&self) -> bool {
        self.has_section(".symtab")
    }

    /// The GNU build id in its `.note.gnu.build-id`, as hex; empty if none.
    pub(crate) fn build_id(&self) -> String {
        crate::modules::gnu_build_id(self.section(".note.gnu.build-id")).unwrap_or_default()
    }

    /// The symbol table (`.symtab`, else `.dynsym`) and its strings, as 24-byte
    /// `Elf64_Sym` records; empty for other layouts.
    fn symbols(&self) -> (&'static [u8], &'static [u8]) {
        if !(self.elf64 && self.little_endian) {
            return (&[], &[]);
        }
        match self.section(".symtab") {
            [] => (self.section(".dynsym"), self.section(".dynstr")),
            syms => (syms, self.section(".strtab")),
        }
    }

    fn index_functions(&self) -> Vec<Func> {
        let syms = self.symbols().0;
        let mut funcs: Vec<Func> = (0..syms.len() / SYM_SIZE)
            .filter_map(|i| function(syms, i * SYM_SIZE))
            .collect();
        // Aliases share a start: keep one, preferring the longest (a real body over a stub).
        super::sort_by_address(&mut funcs, |f| f.start);
        funcs.dedup_by(|later, kept| {
            let same = later.start == kept.start;
            if same && later.len > kept.len {
                *kept = *later;
            }
            same
        });
        funcs.shrink_to_fit();
        funcs
    }

    /// The function symbol containing `svma`: its start, end and raw (mangled) name.
    ///
    /// The first few lookups scan the table; an index (a sort, slow unoptimised) is built
    /// only for objects asked often, i.e. those without debug info: with DWARF only the
    /// frames it doesn't describe (`_start`, `main`, the C library) come here.
    pub(crate) fn function(&mut self, svma: u64) -> Option<(u64, u64, &'static str)> {
        let (syms, strtab) = self.symbols();
        let f = match &self.funcs {
            Some(funcs) => {
                let i = funcs.partition_point(|f| f.start <= svma).checked_sub(1)?;
                Some(funcs[i]).filter(|f| svma - f.start < u64::from(f.len))?
            }
            None if self.scans < SCANS_BEFORE_INDEX => {
                self.scans += 1;
                let found = scan(syms, svma);
                self.release();
                found?
            }
            None => {
                self.funcs = Some(self.index_functions());
                self.release();
                return self.function(svma);
            }
        };
        let name = strtab.get(f.name as usize..)?;
        let len = name.iter().position(|&b| b == 0)?;
        let end = f.start.saturating_add(u64::from(f.len));
        Some((f.start, end, std::str::from_utf8(&name[..len]).ok()?))
    }
}

const SCANS_BEFORE_INDEX: u32 = 16;

/// Bytes in an `Elf64_Sym` record.
const SYM_SIZE: usize = 24;

/// The function symbol containing `svma`, the innermost if several do. A plain loop: it
/// reads every symbol of a test binary (~20k) unoptimised, so it decodes a record only when
/// its start address could be the answer.
fn scan(syms: &[u8], svma: u64) -> Option<Func> {
    let mut best: Option<Func> = None;
    let mut at = 0;
    while at + SYM_SIZE <= syms.len() {
        let start = le64(syms, at + 8);
        if start <= svma && best.is_none_or(|b| b.start < start) {
            if let Some(f) = function(syms, at).filter(|f| svma - f.start < u64::from(f.len)) {
                best = Some(f);
            }
        }
        at += SYM_SIZE;
    }
    best
}

/// The `Elf64_Sym` record at `at`, if it is a defined function with a size.
fn function(syms: &[u8], at: usize) -> Option<Func> {
    let sym = syms.get(at..at + SYM_SIZE)?;
    let kind = sym[4] & 0xf;
    let defined = sym[6] != 0 || sym[7] != 0;
    let size = le64(sym, 16);
    ((kind == STT_FUNC || kind == STT_GNU_IFUNC) && defined && size > 0).then(|| Func {
        start: le64(sym, 8),
        len: size.min(u64::from(u32::MAX)) as u32,
        name: le32(sym, 0),
    })
}

#[inline(always)]
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}
