//! Lines and inlined frames from DWARF, read lazily: only the compilation units, line
//! sequences and function subtrees that sampled addresses fall in.
//!
//! Why not addr2line: it parses every unit's ranges up front and a whole unit's line table
//! and function tree on its first address. Rust's standard library is one unit with ~40k
//! line rows and ~45k entries, and every stack passes through it (`lang_start`, thread
//! start); in users' unoptimised test builds that costs ~150 ms and ~40 MiB per process.
//! Here the two linear scans that remain (line sequences and subprogram entries of a unit
//! that is hit) are plain byte loops that resume where they stopped, and gimli reads only
//! the few entries and headers that are needed.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::elf::{Elf, le32, le64};
use crate::sys::release;

/// Bytes a scan reads before it drops the pages behind it.
const RELEASE_EVERY: usize = 256 << 10;

/// Called by a scan of `data` now at `pos`: drops the pages between `released` and `pos`
/// once they are [`RELEASE_EVERY`] bytes, so a unit of several MiB is never resident at once.
fn release_behind(data: &[u8], released: &mut usize, pos: usize) {
    if pos.saturating_sub(*released) > RELEASE_EVERY {
        release(data.get(*released..pos).unwrap_or_default());
        *released = pos;
    }
}

type R = EndianSlice<'static, RunTimeEndian>;

/// One frame at an address: the raw (mangled) function name (`None` when DWARF has none:
/// the symbol table's then), and the source location in it.
pub(crate) struct Frame {
    pub name: Option<&'static str>,
    pub file: Arc<str>,
    pub line: u32,
}

pub(crate) struct Dwarf {
    dwarf: gimli::Dwarf<R>,
    info: &'static [u8],
    /// Address ranges of units, sorted, adjacent ranges of one unit merged: (start, end, unit
    /// offset in `.debug_info`).
    ranges: Vec<(u64, u64, usize)>,
    /// Ranges of the units `.debug_aranges` leaves out (assemblers often write none), read
    /// from the units themselves the first time an address misses `ranges`.
    unlisted: Option<Vec<(u64, u64, usize)>>,
    units: HashMap<usize, Option<Box<UnitInfo>>>,
    names: Names,
    /// The object's path, for its split DWARF (`.dwo` files, `<object>.dwp`).
    path: std::path::PathBuf,
    /// The DWARF package beside the object, opened on the first split unit: `None` not yet
    /// looked for, `Some(None)` there is none.
    package: Option<Option<gimli::DwarfPackage<R>>>,
    /// Why part of the debug info could not be read, said once per object.
    pub(crate) unreadable: Option<String>,
}

/// Entry names already read, by `.debug_info` offset, and the units that other units'
/// entries refer into. Optimised code names its inlined calls through abstract entries,
/// often in another unit (`DW_FORM_ref_addr`), and the same few thousand callees come up
/// again and again: without these caches a big optimised binary's first profile spent most
/// of its time finding and parsing the same units over and over.
#[derive(Default)]
struct Names {
    names: HashMap<usize, Option<&'static str>>,
    /// Every unit's offset, sorted; read once, on the first reference into another unit.
    starts: Option<Vec<usize>>,
    units: HashMap<usize, Option<Arc<gimli::Unit<R>>>>,
}

impl Dwarf {
    pub(crate) fn new(elf: &Elf, path: &std::path::Path) -> Option<Dwarf> {
        let endian = endian(elf);
        let info = elf.section(".debug_info");
        if info.is_empty() {
            return None;
        }
        let dwarf = gimli::Dwarf::load(|id| -> Result<R, ()> {
            // Location lists are never read: not loading them keeps them compressed (or
            // unread) where they are.
            let unused = matches!(
                id,
                gimli::SectionId::DebugLoc | gimli::SectionId::DebugLocLists
            );
            Ok(EndianSlice::new(
                if unused { &[] } else { elf.section(id.name()) },
                endian,
            ))
        })
        .ok()?;
        // A binary built with split DWARF keeps only skeleton units here.
        let ranges = match aranges(elf.section(".debug_aranges"), elf.little_endian) {
            Some(r) if !r.is_empty() => r,
            _ => unit_ranges(&dwarf, &HashSet::default()),
        };
        Some(Dwarf {
            dwarf,
            info,
            ranges,
            unlisted: None,
            units: HashMap::default(),
            names: Names::default(),
            path: path.to_path_buf(),
            package: None,
            unreadable: None,
        })
    }

    /// Frames at `svma`, innermost first; empty when no unit or subprogram covers it.
    pub(crate) fn frames(&mut self, svma: u64) -> Vec<Frame> {
        let offset = unit_at(&self.ranges, svma).or_else(|| {
            let (dwarf, listed) = (&self.dwarf, &self.ranges);
            // Only the units `.debug_aranges` leaves out: parsing every unit's header
            // again would cost as much as aranges saves.
            let unlisted = self
                .unlisted
                .get_or_insert_with(|| unit_ranges(dwarf, &listed.iter().map(|l| l.2).collect()));
            unit_at(unlisted, svma)
        });
        let Some(offset) = offset else {
            return Vec::new();
        };
        if !self.units.contains_key(&offset) {
            let unit = UnitInfo::new(&self.dwarf, self.info, offset).and_then(|unit| {
                if unit.unit.dwo_id.is_some() {
                    let split = self.split(&unit);
                    if split.is_none() && self.unreadable.is_none() {
                        self.unreadable = Some(format!(
                            "its debug info is split (split-debuginfo) and neither {}.dwp nor \
                             the .dwo files it names (such as {}) could be read: its functions \
                             are named from the symbol table, without lines",
                            self.path.display(),
                            self.dwo_path(&unit)
                                .map_or("?".into(), |p| p.display().to_string())
                        ));
                    }
                    split
                } else {
                    Some(unit)
                }
            });
            self.units.insert(offset, unit.map(Box::new));
        }
        let Some(Some(unit)) = self.units.get_mut(&offset) else {
            return Vec::new();
        };
        match unit.split.clone() {
            Some(split) => {
                let mut names = std::mem::take(&mut unit.split_names);
                let frames = unit.frames(&split, &mut names, svma);
                unit.split_names = names;
                frames
            }
            None => unit.frames(&self.dwarf, &mut self.names, svma),
        }
    }

    /// The full unit of a skeleton unit (`split-debuginfo = "unpacked"` or `"packed"`):
    /// from the DWARF package `<object>.dwp` if there is one, else from the `.dwo` file the
    /// skeleton names (relative to its compilation directory). Its entries come from there;
    /// addresses, ranges and the line table stay in the object.
    fn split(&mut self, skeleton: &UnitInfo) -> Option<UnitInfo> {
        let id = skeleton.unit.dwo_id?;
        let parent = &self.dwarf;
        let package = self.package.get_or_insert_with(|| {
            let mut dwp = self.path.clone().into_os_string();
            dwp.push(".dwp");
            let elf = Elf::open(std::path::Path::new(&dwp))?;
            let endian = endian(&elf);
            let empty = EndianSlice::new(&[], endian);
            gimli::DwarfPackage::load(|id| Ok::<_, gimli::Error>(dwo_section(&elf, id)), empty).ok()
        });
        let mut dwo = match package {
            Some(package) => package.find_cu(id, parent).ok()??,
            None => {
                let path = self.dwo_path(skeleton)?;
                let elf = Elf::open(&path)?;
                let mut dwo = gimli::Dwarf::load(|id| Ok::<_, ()>(dwo_section(&elf, id))).ok()?;
                dwo.make_dwo(parent);
                dwo
            }
        };
        dwo.file_type = gimli::DwarfFileType::Dwo;
        // The skeleton's line table names its files in the object's `.debug_line_str`.
        dwo.debug_line_str = parent.debug_line_str;
        let all: &'static [u8] = gimli::Section::reader(&dwo.debug_info).slice();
        let mut found = None;
        let mut headers = dwo.units();
        while let Ok(Some(header)) = headers.next() {
            let offset = header.offset().0;
            if let Ok(unit) = dwo.unit(header) {
                if unit.dwo_id == Some(id) {
                    found = Some((offset, unit));
                    break;
                }
            }
        }
        let (offset, mut unit) = found?;
        unit.copy_relocated_attributes(&skeleton.unit);
        // The line table is the skeleton's (in the object's `.debug_line`), and so is the
        // directory its relative paths are from (a `.dwo` unit need not repeat it).
        unit.line_program = skeleton.unit.line_program.clone();
        unit.comp_dir = skeleton.unit.comp_dir;
        let len = unit.header.length_including_self();
        let info = all.get(offset..offset.checked_add(len)?)?;
        let mut full = UnitInfo::with_unit(unit, info);
        full.split = Some(Arc::new(dwo));
        Some(full)
    }

    /// The `.dwo` file a skeleton unit names, relative to its compilation directory.
    fn dwo_path(&self, skeleton: &UnitInfo) -> Option<std::path::PathBuf> {
        let name = skeleton.unit.dwo_name().ok()??;
        let name = self.dwarf.attr_string(&skeleton.unit, name).ok()?;
        let name = std::path::Path::new(std::str::from_utf8(name.slice()).ok()?);
        Some(match &skeleton.unit.comp_dir {
            Some(dir) if name.is_relative() => {
                std::path::Path::new(std::str::from_utf8(dir.slice()).ok()?).join(name)
            }
            _ => name.to_path_buf(),
        })
    }
}

/// Section `id` of a `.dwo` file or DWARF package (`.debug_info.dwo`, ...).
fn dwo_section(elf: &Elf, id: gimli::SectionId) -> R {
    EndianSlice::new(elf.section(id.dwo_name().unwrap_or("")), endian(elf))
}

fn endian(elf: &Elf) -> RunTimeEndian {
    if elf.little_endian {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    }
}

/// The offset of the unit whose range holds `svma`.
fn unit_at(ranges: &[(u64, u64, usize)], svma: u64) -> Option<usize> {
    let i = ranges.partition_point(|r| r.0 <= svma).checked_sub(1)?;
    let (_, end, offset) = ranges[i];
    (svma < end).then_some(offset)
}

/// `.debug_aranges`, hand-parsed (32-bit DWARF, 4- or 8-byte addresses, no segments): a
/// few microseconds per unit even unoptimised, against gimli's reader chain.
fn aranges(data: &[u8], little: bool) -> Option<Vec<(u64, u64, usize)>> {
    if !little {
        return None;
    }
    let mut out: Vec<(u64, u64, usize)> = Vec::new();
    let mut pos = 0;
    while pos + 12 <= data.len() {
        let len = le32(data, pos) as usize;
        let end = pos.checked_add(4 + len).filter(|&e| e <= data.len())?;
        let unit = le32(data, pos + 6) as usize;
        let (addr_size, seg_size) = (data[pos + 10] as usize, data[pos + 11]);
        if len >= 0xffff_fff0 || seg_size != 0 || !(addr_size == 4 || addr_size == 8) {
            return None;
        }
        // Tuples start at a multiple of their size from the section's start of the set.
        let mut at = pos + (12usize).div_ceil(2 * addr_size) * 2 * addr_size;
        while at + 2 * addr_size <= end {
            let (start, size) = if addr_size == 8 {
                (le64(data, at), le64(data, at + 8))
            } else {
                (le32(data, at) as u64, le32(data, at + 4) as u64)
            };
            at += 2 * addr_size;
            if start == 0 && size == 0 {
                break;
            }
            match out.last_mut() {
                Some(last) if last.2 == unit && last.1 == start => {
                    last.1 = start.saturating_add(size)
                }
                _ if start != 0 => out.push((start, start.saturating_add(size), unit)),
                _ => {}
            }
        }
        pos = end;
    }
    super::sort_by_address(&mut out, |e| e.0);
    out.shrink_to_fit();
    Some(out)
}

/// Without `.debug_aranges`: each unit's own ranges (slower; parses every unit's root).
fn unit_ranges(dwarf: &gimli::Dwarf<R>, skip: &HashSet<usize>) -> Vec<(u64, u64, usize)> {
    let mut out = Vec::new();
    each_unit_header(dwarf, |header| {
        let offset = header.offset().0;
        if skip.contains(&offset) {
            return;
        }
        let Ok(unit) = dwarf.unit(header) else {
            return;
        };
        let Ok(mut ranges) = dwarf.unit_ranges(&unit) else {
            return;
        };
        while let Ok(Some(r)) = ranges.next() {
            if r.begin != 0 && r.begin < r.end {
                out.push((r.begin, r.end, offset));
            }
        }
    });
    out.sort_unstable();
    out
}

/// Calls `f` with every unit header of `.debug_info`, in order. Each header is on a page of
/// its own in a big section, all over it: the pages behind the walk are dropped as it goes,
/// or it would bring the whole section into memory at once.
fn each_unit_header(dwarf: &gimli::Dwarf<R>, mut f: impl FnMut(gimli::UnitHeader<R>)) {
    let info: &'static [u8] = gimli::Section::reader(&dwarf.debug_info).slice();
    let mut released = 0;
    let mut headers = dwarf.units();
    while let Ok(Some(header)) = headers.next() {
        release_behind(info, &mut released, header.offset().0);
        f(header);
    }
}

/// The unit at `offset` in `.debug_info`, parsed (abbreviations, line program header).
fn parse_unit(dwarf: &gimli::Dwarf<R>, offset: usize) -> Option<gimli::Unit<R>> {
    let header = dwarf
        .debug_info
        .header_from_offset(gimli::DebugInfoOffset(offset))
        .ok()?;
    dwarf.unit(header).ok()
}

/// One unit that samples fell in, with what has been read of it so far.
struct UnitInfo {
    unit: gimli::Unit<R>,
    /// The unit's bytes in `.debug_info`; entry offsets count from their start.
    info: &'static [u8],
    lines: Option<LineTable>,
    subprograms: Subprograms,
    files: HashMap<u64, Arc<str>>,
    functions: HashMap<u64, Function>,
    /// For a split unit: the `.dwo` (or package part) its entries are read from, and the
    /// names read there (entry offsets are that file's).
    split: Option<Arc<gimli::Dwarf<R>>>,
    split_names: Names,
}

/// What one function's addresses need: its line rows and inlined calls.
struct Function {
    /// Rows of the function's sequence: (address, file index, line), sorted; the last one is
    /// the sequence's end.
    rows: Vec<(u64, u64, u32)>,
    /// Inlined calls in tree order (a call's callees follow it).
    inlines: Vec<Inline>,
    /// The subprogram's raw name (`None`: ask the symbol table).
    name: Option<&'static str>,
}

struct Inline {
    ranges: Vec<(u64, u64)>,
    name: Option<&'static str>,
    call_file: u64,
    call_line: u32,
}

impl UnitInfo {
    fn new(dwarf: &gimli::Dwarf<R>, all: &'static [u8], offset: usize) -> Option<UnitInfo> {
        let unit = parse_unit(dwarf, offset)?;
        let len = unit.header.length_including_self();
        let info = all.get(offset..offset.checked_add(len)?)?;
        Some(UnitInfo::with_unit(unit, info))
    }

    fn with_unit(unit: gimli::Unit<R>, info: &'static [u8]) -> UnitInfo {
        let lines = unit.line_program.as_ref().and_then(LineTable::new);
        let first = unit.header.header_size();
        UnitInfo {
            subprograms: Subprograms {
                pos: first,
                done: false,
                found: BTreeMap::new(),
                dense: Vec::new(),
                sparse: HashMap::default(),
                // Code 0, a null entry, is one byte.
                step: vec![1],
            },
            unit,
            info,
            lines,
            files: HashMap::default(),
            functions: HashMap::default(),
            split: None,
            split_names: Names::default(),
        }
    }

    fn frames(&mut self, dwarf: &gimli::Dwarf<R>, names: &mut Names, svma: u64) -> Vec<Frame> {
        let Some((start, end, die)) = self.subprograms.find(dwarf, &self.unit, self.info, svma)
        else {
            return self.line_only(dwarf, svma);
        };
        if !self.functions.contains_key(&start) {
            let f = self.function(dwarf, names, start..end, die);
            self.functions.insert(start, f);
        }
        let f = &self.functions[&start];
        let i = f.rows.partition_point(|r| r.0 <= svma);
        let here = i
            .checked_sub(1)
            .filter(|&i| i + 1 < f.rows.len())
            .map(|i| (f.rows[i].1, f.rows[i].2));
        let chain: Vec<&Inline> = f
            .inlines
            .iter()
            .filter(|c| c.ranges.iter().any(|r| r.0 <= svma && svma < r.1))
            .collect();
        // Innermost first: each frame's location is where the next-inner call was made from,
        // the innermost's is the line row itself.
        let mut raw = Vec::with_capacity(chain.len() + 1);
        let mut location = here;
        for call in chain.iter().rev() {
            raw.push((call.name, location));
            location = Some((call.call_file, call.call_line));
        }
        raw.push((f.name, location));
        raw.into_iter()
            .map(|(name, loc)| {
                let (file, line) = match loc {
                    Some((file, line)) => (self.file(dwarf, file), line),
                    None => (Arc::from(""), 0),
                };
                Frame { name, file, line }
            })
            .collect()
    }

    /// A unit with lines but no function entries (assembly, such as ring's or a C
    /// library's `.S` files): the line row alone, named from the symbol table.
    fn line_only(&mut self, dwarf: &gimli::Dwarf<R>, svma: u64) -> Vec<Frame> {
        let rows = self
            .lines
            .as_mut()
            .map(|t| t.rows(svma))
            .unwrap_or_default();
        let i = rows.partition_point(|r| r.0 <= svma);
        let Some((_, file, line)) = i
            .checked_sub(1)
            .filter(|&i| i + 1 < rows.len())
            .map(|i| rows[i])
        else {
            return Vec::new();
        };
        vec![Frame {
            name: None,
            file: self.file(dwarf, file),
            line,
        }]
    }

    /// The function spanning `range` whose entry is `die`.
    fn function(
        &mut self,
        dwarf: &gimli::Dwarf<R>,
        names: &mut Names,
        range: std::ops::Range<u64>,
        die: usize,
    ) -> Function {
        let rows = self
            .lines
            .as_mut()
            .map(|t| t.rows_in(range))
            .unwrap_or_default();
        let die = UnitOffset(die);
        Function {
            rows,
            inlines: inlines(dwarf, names, &self.unit, die),
            name: name(dwarf, names, &self.unit, AttributeValue::UnitRef(die), 0),
        }
    }

    /// The file's path as addr2line renders it: the unit's directory, the file's directory
    /// (unless index 0, the unit's own), the file name; an absolute part replaces what is
    /// before it.
    fn file(&mut self, dwarf: &gimli::Dwarf<R>, index: u64) -> Arc<str> {
        if let Some(f) = self.files.get(&index) {
            return f.clone();
        }
        let mut path = String::new();
        if let Some(dir) = self.unit.comp_dir {
            push_path(&mut path, &String::from_utf8_lossy(dir.slice()));
        }
        if let Some(program) = &self.unit.line_program {
            let header = program.header();
            if let Some(file) = header.file(index) {
                let string = |v| {
                    dwarf
                        .attr_string(&self.unit, v)
                        .ok()
                        .map(|s| String::from_utf8_lossy(s.slice()).into_owned())
                };
                if file.directory_index() != 0 {
                    if let Some(dir) = file.directory(header).and_then(string) {
                        push_path(&mut path, &dir);
                    }
                }
                if let Some(name) = string(file.path_name()) {
                    push_path(&mut path, &name);
                }
            }
        }
        let path: Arc<str> = path.into();
        self.files.insert(index, path.clone());
        path
    }
}

fn push_path(path: &mut String, part: &str) {
    if part.starts_with('/') || path.is_empty() {
        *path = part.to_string();
    } else {
        if !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(part);
    }
}

/// A unit's line program, and the sequences found in it so far.
struct LineTable {
    program: &'static [u8],
    min_len: u64,
    line_base: i64,
    line_range: u8,
    opcode_base: u8,
    standard_lengths: &'static [u8],
    addr_size: u8,
    /// (first address, end address, offset in `program`), in program order.
    sequences: Vec<(u64, u64, usize)>,
    /// How far the sequence scan has read.
    scanned: usize,
}

impl LineTable {
    fn new(program: &gimli::IncompleteLineProgram<R>) -> Option<LineTable> {
        let h = program.header();
        if h.line_range() == 0 || h.maximum_operations_per_instruction() > 1 {
            return None;
        }
        Some(LineTable {
            program: h.raw_program_buf().slice(),
            min_len: u64::from(h.minimum_instruction_length()),
            line_base: i64::from(h.line_base()),
            line_range: h.line_range(),
            opcode_base: h.opcode_base(),
            standard_lengths: h.standard_opcode_lengths().slice(),
            addr_size: h.address_size(),
            sequences: Vec::new(),
            scanned: 0,
        })
    }

    /// The rows of the sequence that holds `start`, scanning on from where the last call
    /// stopped if no sequence found so far does.
    fn rows(&mut self, start: u64) -> Vec<(u64, u64, u32)> {
        self.rows_in(start..start.saturating_add(1))
    }

    /// The rows of the sequence that holds `range.start`, or else of the first one that
    /// starts inside `range`: assemblers may start a function's rows a byte or more after
    /// its symbol (ring's `.S` files).
    fn rows_in(&mut self, range: std::ops::Range<u64>) -> Vec<(u64, u64, u32)> {
        let start = range.start;
        let holds = |s: &(u64, u64, usize)| {
            (s.0 <= start && start < s.1) || (start < s.0 && s.0 < range.end)
        };
        let mut found = self.sequences.iter().find(|s| holds(s)).map(|s| s.2);
        let mut released = self.scanned;
        while found.is_none() && self.scanned < self.program.len() {
            release_behind(self.program, &mut released, self.scanned);
            let from = self.scanned;
            match self.sequence_bounds(from) {
                Some((first, end, next)) => {
                    self.scanned = next;
                    let s = (first, end, from);
                    if holds(&s) {
                        found = Some(from);
                    }
                    self.sequences.push(s);
                }
                None => self.scanned = self.program.len(),
            }
        }
        let mut rows = Vec::new();
        if let Some(from) = found {
            self.run(from, |addr, file, line, end| {
                rows.push((addr, file, line.clamp(0, u32::MAX as i64) as u32));
                !end
            });
        }
        rows
    }

    /// The extended opcode whose length starts at `pos`, and the position after it.
    fn extended(&self, pos: usize) -> Option<(Extended, usize)> {
        let p = self.program;
        let (len, at) = uleb(p, pos)?;
        let end = at.checked_add(len as usize)?;
        let op = match p.get(at) {
            Some(1) => Extended::EndSequence,
            Some(2) if self.addr_size == 8 && at + 9 <= p.len() => {
                Extended::SetAddress(le64(p, at + 1))
            }
            Some(2) if self.addr_size == 4 && at + 5 <= p.len() => {
                Extended::SetAddress(u64::from(le32(p, at + 1)))
            }
            _ => Extended::Other,
        };
        Some((op, end))
    }

    /// Steps over the sequence at `pos` following only the address: its first row's address,
    /// its end address and the position after it. The scan's fast path: no rows, no calls
    /// per opcode (this runs unoptimised in test builds, over std's ~40k rows).
    fn sequence_bounds(&self, mut pos: usize) -> Option<(u64, u64, usize)> {
        let p = self.program;
        let (base, range, min_len) = (self.opcode_base, self.line_range, self.min_len);
        let (mut addr, mut first, mut seen) = (0u64, 0u64, false);
        while pos < p.len() {
            let op = p[pos];
            pos += 1;
            if op >= base || op == 1 {
                if op >= base {
                    addr = addr.wrapping_add(u64::from((op - base) / range) * min_len);
                }
                if !seen {
                    (first, seen) = (addr, true);
                }
                continue;
            }
            match op {
                0 => {
                    let (op, end) = self.extended(pos)?;
                    match op {
                        Extended::EndSequence => {
                            return Some((if seen { first } else { addr }, addr, end));
                        }
                        Extended::SetAddress(a) => addr = a,
                        Extended::Other => {}
                    }
                    pos = end;
                }
                2 => {
                    let (v, at) = uleb(p, pos)?;
                    addr = addr.wrapping_add(v.wrapping_mul(min_len));
                    pos = at;
                }
                8 => addr = addr.wrapping_add(u64::from((255 - base) / range) * min_len),
                9 => {
                    let v = u16::from_le_bytes([*p.get(pos)?, *p.get(pos + 1)?]);
                    addr = addr.wrapping_add(u64::from(v));
                    pos += 2;
                }
                _ => {
                    let n = *self.standard_lengths.get(usize::from(op) - 1)?;
                    for _ in 0..n {
                        pos = uleb(p, pos)?.1;
                    }
                }
            }
        }
        None
    }

    /// Runs the line-number state machine (DWARF 2-5, one operation per instruction) from
    /// `pos`, the start of a sequence, calling `row(address, file, line, end_sequence)` for
    /// each row until it returns false; returns the position after that row.
    fn run(
        &self,
        mut pos: usize,
        mut row: impl FnMut(u64, u64, i64, bool) -> bool,
    ) -> Option<usize> {
        let p = self.program;
        let (mut addr, mut file, mut line) = (0u64, 1u64, 1i64);
        while pos < p.len() {
            let op = p[pos];
            pos += 1;
            if op >= self.opcode_base {
                let adjusted = op - self.opcode_base;
                addr = addr.wrapping_add(u64::from(adjusted / self.line_range) * self.min_len);
                line = line.wrapping_add(self.line_base + i64::from(adjusted % self.line_range));
                if !row(addr, file, line, false) {
                    return Some(pos);
                }
                continue;
            }
            match op {
                0 => {
                    let (op, end) = self.extended(pos)?;
                    match op {
                        Extended::EndSequence => {
                            let more = row(addr, file, line, true);
                            (addr, file, line) = (0, 1, 1);
                            if !more {
                                return Some(end);
                            }
                        }
                        Extended::SetAddress(a) => addr = a,
                        Extended::Other => {}
                    }
                    pos = end;
                }
                1 => {
                    if !row(addr, file, line, false) {
                        return Some(pos);
                    }
                }
                2 => {
                    let (v, at) = uleb(p, pos)?;
                    addr = addr.wrapping_add(v.wrapping_mul(self.min_len));
                    pos = at;
                }
                3 => {
                    let (v, at) = sleb(p, pos)?;
                    line = line.wrapping_add(v);
                    pos = at;
                }
                4 => {
                    let (v, at) = uleb(p, pos)?;
                    file = v;
                    pos = at;
                }
                8 => {
                    let adjusted = 255 - self.opcode_base;
                    addr = addr.wrapping_add(u64::from(adjusted / self.line_range) * self.min_len);
                }
                9 => {
                    let v = u16::from_le_bytes([*p.get(pos)?, *p.get(pos + 1)?]);
                    addr = addr.wrapping_add(u64::from(v));
                    pos += 2;
                }
                6 | 7 | 10 | 11 => {}
                _ => {
                    // set_column, set_isa and unknown standard opcodes: skip their operands.
                    let n = self.standard_lengths.get(usize::from(op) - 1).copied()?;
                    for _ in 0..n {
                        pos = uleb(p, pos)?.1;
                    }
                }
            }
        }
        None
    }
}

/// The extended line-program opcodes that matter here.
enum Extended {
    EndSequence,
    SetAddress(u64),
    Other,
}

/// The unit's subprograms with code, found by a scan that stops at the one asked for and
/// resumes from there next time.
struct Subprograms {
    pos: usize,
    done: bool,
    /// low_pc -> (high_pc, entry offset).
    found: BTreeMap<u64, (u64, usize)>,
    /// By abbreviation code below [`DENSE_CODES`], filled as codes are met.
    dense: Vec<Option<Abbrev>>,
    /// By larger codes, which only a corrupted unit has.
    sparse: HashMap<u64, Abbrev>,
    /// By code below [`DENSE_CODES`]: 1 + the attributes' size for entries the scan only
    /// steps over (fixed size, no code range), 0 for the rest or not yet seen.
    step: Vec<u32>,
}

/// Units number their abbreviations densely from 1: codes below this are looked up by index.
const DENSE_CODES: usize = 4096;

struct Abbrev {
    /// Total size when every attribute has a fixed size.
    fixed: Option<usize>,
    /// (form, fixed size) per attribute.
    forms: Vec<(gimli::DwForm, Option<usize>)>,
    /// For a subprogram with a low_pc, or with DW_AT_ranges: where its pc attributes are.
    pc: Option<Pc>,
}

/// Offsets of a subprogram's `DW_FORM_addr` low_pc and of its high_pc (with its form), when
/// every attribute before each has a fixed size.
struct Pc {
    low: Option<usize>,
    high: Option<(gimli::DwForm, usize)>,
    /// The subprogram lists its ranges instead (GCC's hot/cold split functions, whose
    /// `.cold` part lies elsewhere in `.text`; BOLT).
    ranges: bool,
}

impl Subprograms {
    /// The subprogram containing `svma`: (low_pc, high_pc, entry offset).
    fn find(
        &mut self,
        dwarf: &gimli::Dwarf<R>,
        unit: &gimli::Unit<R>,
        info: &'static [u8],
        svma: u64,
    ) -> Option<(u64, u64, usize)> {
        let known = |found: &BTreeMap<u64, (u64, usize)>| {
            found
                .range(..=svma)
                .next_back()
                .filter(|(_, (high, _))| svma < *high)
                .map(|(&low, &(high, die))| (low, high, die))
        };
        if let Some(hit) = known(&self.found) {
            return Some(hit);
        }
        let mut released = self.pos;
        while !self.done {
            release_behind(info, &mut released, self.pos);
            // Fast path for the entries that are only stepped over (most of them): a code of
            // one or two bytes, a table lookup, no calls, since this runs unoptimised in test
            // builds.
            let (mut pos, end, step) = (self.pos, info.len(), &self.step[..]);
            while pos < end {
                let (code, len) = match info[pos] {
                    b if b < 0x80 => (b as usize, 1),
                    b if pos + 1 < end && info[pos + 1] < 0x80 => {
                        ((b & 0x7f) as usize | (info[pos + 1] as usize) << 7, 2)
                    }
                    _ => break,
                };
                if code >= step.len() || step[code] == 0 {
                    break;
                }
                pos += len + step[code] as usize - 1;
            }
            self.pos = pos;
            let die = self.pos;
            let Some((code, at)) = uleb(info, die).filter(|_| die < info.len()) else {
                self.done = true;
                break;
            };
            self.pos = at;
            if code == 0 {
                continue;
            }
            let Some(abbrev) = self.abbrev(unit, code) else {
                self.done = true;
                break;
            };
            let ranges = match abbrev.pc {
                None => Vec::new(),
                Some(Pc { ranges: true, .. }) => slow_ranges(dwarf, unit, die),
                Some(Pc {
                    low: Some(low_at),
                    high: Some((form, high_at)),
                    ..
                }) => fast_pc(info, at, low_at, form, high_at, unit.header.address_size())
                    .into_iter()
                    .collect(),
                Some(_) => slow_pc(dwarf, unit, die).into_iter().collect(),
            };
            match skip(info, at, abbrev, unit) {
                Some(next) => self.pos = next,
                None => self.done = true,
            }
            let mut hit = None;
            for (low, high) in ranges.into_iter().filter(|r| r.0 != 0 && r.0 < r.1) {
                self.found.insert(low, (high, die));
                if low <= svma && svma < high {
                    hit = Some((low, high, die));
                }
            }
            if hit.is_some() {
                return hit;
            }
        }
        None
    }

    fn abbrev(&mut self, unit: &gimli::Unit<R>, code: u64) -> Option<&Abbrev> {
        let dense = usize::try_from(code).ok().filter(|&c| c < DENSE_CODES);
        match dense {
            Some(c) => {
                if c >= self.dense.len() {
                    self.dense.resize_with(c + 1, || None);
                    self.step.resize(c + 1, 0);
                }
                if self.dense[c].is_none() {
                    let abbrev = Abbrev::new(unit, code)?;
                    if let (Some(size), None) = (abbrev.fixed, &abbrev.pc) {
                        self.step[c] = 1 + size as u32;
                    }
                    self.dense[c] = Some(abbrev);
                }
                self.dense[c].as_ref()
            }
            None => {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.sparse.entry(code) {
                    slot.insert(Abbrev::new(unit, code)?);
                }
                self.sparse.get(&code)
            }
        }
    }
}

impl Abbrev {
    fn new(unit: &gimli::Unit<R>, code: u64) -> Option<Abbrev> {
        let a = unit.abbreviations.get(code)?;
        let forms: Vec<_> = a
            .attributes()
            .iter()
            .map(|s| (s.form(), s.size(&unit.header)))
            .collect();
        let fixed = forms.iter().map(|f| f.1).sum::<Option<usize>>();
        let mut pc = None;
        if a.tag() == gimli::DW_TAG_subprogram {
            let (mut low, mut high, mut has_low, mut ranges) = (None, None, false, false);
            let mut off = Some(0usize);
            for (spec, (form, size)) in a.attributes().iter().zip(&forms) {
                if spec.name() == gimli::DW_AT_low_pc {
                    has_low = true;
                    low = off.filter(|_| *form == gimli::DW_FORM_addr);
                } else if spec.name() == gimli::DW_AT_high_pc {
                    high = off.map(|o| (*form, o));
                } else if spec.name() == gimli::DW_AT_ranges {
                    ranges = true;
                }
                off = off.zip(*size).map(|(o, s)| o + s);
            }
            if has_low || ranges {
                pc = Some(Pc {
                    low,
                    high,
                    ranges: ranges && high.is_none(),
                });
            }
        }
        Some(Abbrev { fixed, forms, pc })
    }
}

/// low_pc and high_pc read in place from their known offsets.
fn fast_pc(
    info: &[u8],
    at: usize,
    low_at: usize,
    high_form: gimli::DwForm,
    high_at: usize,
    addr_size: u8,
) -> Option<(u64, u64)> {
    let read = |pos: usize, size: usize| -> Option<u64> {
        let b = info.get(pos..pos + size)?;
        Some(b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    };
    let addr_size = usize::from(addr_size);
    let low = read(at + low_at, addr_size)?;
    let high = match high_form {
        gimli::DW_FORM_addr => read(at + high_at, addr_size)?,
        gimli::DW_FORM_data1 => low.checked_add(read(at + high_at, 1)?)?,
        gimli::DW_FORM_data2 => low.checked_add(read(at + high_at, 2)?)?,
        gimli::DW_FORM_data4 => low.checked_add(read(at + high_at, 4)?)?,
        gimli::DW_FORM_data8 => low.checked_add(read(at + high_at, 8)?)?,
        _ => return None,
    };
    Some((low, high))
}

/// low_pc and high_pc through gimli, for layouts [`fast_pc`] can't place (DWARF 5's
/// `DW_FORM_addrx` among them).
fn slow_pc(dwarf: &gimli::Dwarf<R>, unit: &gimli::Unit<R>, die: usize) -> Option<(u64, u64)> {
    let entry = unit.entry(UnitOffset(die)).ok()?;
    let address = |v| dwarf.attr_address(unit, v).ok().flatten();
    let low = address(entry.attr_value(gimli::DW_AT_low_pc)?)?;
    let high = match entry.attr_value(gimli::DW_AT_high_pc)? {
        v @ (AttributeValue::Addr(_) | AttributeValue::DebugAddrIndex(_)) => address(v)?,
        v => low.checked_add(v.udata_value()?)?,
    };
    Some((low, high))
}

/// A subprogram's address ranges from its DW_AT_ranges (`.debug_ranges`/`.debug_rnglists`).
fn slow_ranges(dwarf: &gimli::Dwarf<R>, unit: &gimli::Unit<R>, die: usize) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let Ok(entry) = unit.entry(UnitOffset(die)) else {
        return out;
    };
    let Some(value) = entry.attr_value(gimli::DW_AT_ranges) else {
        return out;
    };
    if let Ok(Some(mut list)) = dwarf.attr_ranges(unit, value) {
        // Bounded: a corrupted list must not grow without end.
        while let (Ok(Some(r)), true) = (list.next(), out.len() < 4096) {
            out.push((r.begin, r.end));
        }
    }
    out
}

/// The position after an entry's attributes, or `None` for a form this reader can't size.
fn skip(info: &[u8], mut pos: usize, abbrev: &Abbrev, unit: &gimli::Unit<R>) -> Option<usize> {
    if let Some(n) = abbrev.fixed {
        return Some(pos + n);
    }
    for &(form, size) in &abbrev.forms {
        pos = match size {
            Some(n) => pos + n,
            None => skip_form(info, pos, form, unit, 0)?,
        };
    }
    Some(pos)
}

fn skip_form(
    info: &[u8],
    pos: usize,
    form: gimli::DwForm,
    unit: &gimli::Unit<R>,
    depth: u8,
) -> Option<usize> {
    use gimli::constants as c;
    let leb = |pos| uleb(info, pos).map(|(_, at)| at);
    Some(match form {
        c::DW_FORM_string => pos + info.get(pos..)?.iter().position(|&b| b == 0)? + 1,
        c::DW_FORM_block1 => pos + 1 + usize::from(*info.get(pos)?),
        c::DW_FORM_block2 => {
            pos + 2 + usize::from(u16::from_le_bytes([*info.get(pos)?, *info.get(pos + 1)?]))
        }
        c::DW_FORM_block4 => {
            let len = info.get(pos..pos + 4)?;
            (pos + 4).checked_add(le32(len, 0) as usize)?
        }
        c::DW_FORM_block | c::DW_FORM_exprloc => {
            let (n, at) = uleb(info, pos)?;
            at.checked_add(usize::try_from(n).ok()?)?
        }
        c::DW_FORM_udata
        | c::DW_FORM_sdata
        | c::DW_FORM_ref_udata
        | c::DW_FORM_strx
        | c::DW_FORM_addrx
        | c::DW_FORM_loclistx
        | c::DW_FORM_rnglistx
        | c::DW_FORM_GNU_addr_index
        | c::DW_FORM_GNU_str_index => leb(pos)?,
        c::DW_FORM_indirect if depth == 0 => {
            let (f, at) = uleb(info, pos)?;
            let form = gimli::DwForm(u16::try_from(f).ok()?);
            let spec = gimli::AttributeSpecification::new(gimli::DW_AT_null, form, None);
            match spec.size(&unit.header) {
                Some(n) => at + n,
                None => skip_form(info, at, form, unit, 1)?,
            }
        }
        _ => return None,
    })
}

/// The inlined calls under the subprogram at `die`, in tree order.
fn inlines(
    dwarf: &gimli::Dwarf<R>,
    names: &mut Names,
    unit: &gimli::Unit<R>,
    die: UnitOffset,
) -> Vec<Inline> {
    let mut out = Vec::new();
    let Ok(mut raw) = unit.entries_raw(Some(die)) else {
        return out;
    };
    match raw.read_abbreviation() {
        Ok(Some(a)) if a.has_children() => {
            if raw.skip_attributes(a.attributes()).is_err() {
                return out;
            }
        }
        _ => return out,
    }
    while raw.next_depth() > 0 {
        let abbrev = match raw.read_abbreviation() {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(_) => break,
        };
        if abbrev.tag() != gimli::DW_TAG_inlined_subroutine {
            if raw.skip_attributes(abbrev.attributes()).is_err() {
                break;
            }
            continue;
        }
        let (mut low, mut high, mut high_is_len, mut ranges) = (None, None, false, None);
        let (mut origin, mut call_file, mut call_line) = (None, 0, 0);
        for spec in abbrev.attributes() {
            let Ok(attr) = raw.read_attribute(*spec) else {
                return out;
            };
            match attr.name() {
                gimli::DW_AT_low_pc => low = dwarf.attr_address(unit, attr.value()).ok().flatten(),
                gimli::DW_AT_high_pc => match attr.value() {
                    AttributeValue::Addr(a) => high = Some(a),
                    v => {
                        high = v.udata_value();
                        high_is_len = true;
                    }
                },
                gimli::DW_AT_ranges => ranges = Some(attr.value()),
                gimli::DW_AT_abstract_origin => origin = Some(attr.value()),
                gimli::DW_AT_call_file => call_file = attr.udata_value().unwrap_or(0),
                gimli::DW_AT_call_line => {
                    call_line = attr.udata_value().unwrap_or(0).min(u64::from(u32::MAX)) as u32
                }
                _ => {}
            }
        }
        let mut spans = Vec::new();
        if let (Some(low), Some(high)) = (low, high) {
            spans.push((
                low,
                if high_is_len {
                    low.saturating_add(high)
                } else {
                    high
                },
            ));
        } else if let Some(Ok(Some(mut list))) = ranges.map(|v| dwarf.attr_ranges(unit, v)) {
            while let Ok(Some(r)) = list.next() {
                spans.push((r.begin, r.end));
            }
        }
        let name = origin.and_then(|o| name(dwarf, names, unit, o, 0));
        out.push(Inline {
            ranges: spans,
            name,
            call_file,
            call_line,
        });
    }
    out
}

/// The raw name of the entry `value` refers to: its linkage name, else the linkage name or
/// name of what it specifies or abstracts, else its own name. Cached by entry.
fn name(
    dwarf: &gimli::Dwarf<R>,
    names: &mut Names,
    unit: &gimli::Unit<R>,
    value: AttributeValue<R>,
    depth: u8,
) -> Option<&'static str> {
    let at = match value {
        AttributeValue::UnitRef(offset) => offset,
        AttributeValue::DebugInfoRef(offset) if depth < 8 => {
            return other_unit_name(dwarf, names, offset, depth + 1);
        }
        _ => return None,
    };
    // Units here are all in `.debug_info`: their offsets are that section's.
    let key = unit.header.offset().0.saturating_add(at.0);
    if let Some(found) = names.names.get(&key) {
        return *found;
    }
    let found = entry_name(dwarf, names, unit, at, depth);
    names.names.insert(key, found);
    found
}

fn entry_name(
    dwarf: &gimli::Dwarf<R>,
    names: &mut Names,
    unit: &gimli::Unit<R>,
    at: UnitOffset,
    depth: u8,
) -> Option<&'static str> {
    let entry = unit.entry(at).ok()?;
    let string = |v| {
        dwarf
            .attr_string(unit, v)
            .ok()
            .and_then(|s| std::str::from_utf8(s.slice()).ok())
    };
    for at in [gimli::DW_AT_linkage_name, gimli::DW_AT_MIPS_linkage_name] {
        if let Some(s) = entry.attr_value(at).and_then(string) {
            return Some(s);
        }
    }
    if depth < 8 {
        for at in [gimli::DW_AT_specification, gimli::DW_AT_abstract_origin] {
            if let Some(s) = entry
                .attr_value(at)
                .and_then(|v| name(dwarf, names, unit, v, depth + 1))
            {
                return Some(s);
            }
        }
    }
    entry.attr_value(gimli::DW_AT_name).and_then(string)
}

/// [`name`] of an entry in another unit (`DW_FORM_ref_addr`: LTO, compiler-builtins and
/// optimised code inlined across codegen units): its unit found among the sorted unit
/// offsets and parsed once.
fn other_unit_name(
    dwarf: &gimli::Dwarf<R>,
    names: &mut Names,
    offset: gimli::DebugInfoOffset,
    depth: u8,
) -> Option<&'static str> {
    if let Some(found) = names.names.get(&offset.0) {
        return *found;
    }
    let starts = names.starts.get_or_insert_with(|| {
        let mut starts = Vec::new();
        each_unit_header(dwarf, |header| starts.push(header.offset().0));
        starts
    });
    let start = *starts.get(starts.partition_point(|&s| s <= offset.0).checked_sub(1)?)?;
    let unit = names
        .units
        .entry(start)
        .or_insert_with(|| parse_unit(dwarf, start).map(Arc::new))
        .clone()?;
    let at = offset.to_unit_offset(&unit.header)?;
    name(dwarf, names, &unit, AttributeValue::UnitRef(at), depth)
}

/// LEB128 at `pos`: its low 64 bits, how many bits it had, and the position after it.
#[inline(always)]
fn leb(b: &[u8], mut pos: usize) -> Option<(u64, u32, usize)> {
    let (mut value, mut bits) = (0u64, 0u32);
    loop {
        let byte = *b.get(pos)?;
        pos += 1;
        if bits < 64 {
            value |= u64::from(byte & 0x7f) << bits;
        }
        bits += 7;
        if byte & 0x80 == 0 {
            return Some((value, bits, pos));
        }
    }
}

/// Unsigned LEB128 at `pos`: the value and the position after it.
#[inline(always)]
fn uleb(b: &[u8], pos: usize) -> Option<(u64, usize)> {
    leb(b, pos).map(|(value, _, at)| (value, at))
}

/// Signed LEB128 at `pos`: sign-extended from its last bit.
#[inline(always)]
fn sleb(b: &[u8], pos: usize) -> Option<(i64, usize)> {
    let (value, bits, at) = leb(b, pos)?;
    let negative = bits < 64 && (value >> (bits - 1)) & 1 == 1;
    let value = if negative {
        value | (!0u64 << bits)
    } else {
        value
    };
    Some((value as i64, at))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn leb128_as_the_dwarf_standard_encodes_it() {
        for (bytes, value) in [
            (&[2u8][..], 2u64),
            (&[127], 127),
            (&[0x80, 1], 128),
            (&[0x81, 1], 129),
            (&[0xe5, 0x8e, 0x26], 624_485),
        ] {
            assert_eq!(uleb(bytes, 0), Some((value, bytes.len())));
        }
        for (bytes, value) in [
            (&[2u8][..], 2i64),
            (&[0x7e], -2),
            (&[0xff, 0], 127),
            (&[0x81, 0x7f], -127),
            (&[0x80, 1], 128),
            (&[0x80, 0x7f], -128),
        ] {
            assert_eq!(sleb(bytes, 0), Some((value, bytes.len())));
        }
        assert_eq!(uleb(&[0x80], 0), None, "truncated");
    }

    /// The fallback for objects without `.debug_aranges` (each unit's own ranges) finds the
    /// same unit as the aranges index for every function of this test binary.
    #[test]
    fn unit_ranges_agree_with_aranges() {
        use object::{Object as _, ObjectSymbol};
        let exe = std::env::current_exe().unwrap();
        let elf = Elf::open(&exe).unwrap();
        let dwarf = Dwarf::new(&elf, &exe).unwrap();
        let from_aranges = aranges(elf.section(".debug_aranges"), true).unwrap();
        let from_units = unit_ranges(&dwarf.dwarf, &HashSet::default());
        let data = std::fs::read(&exe).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let mut both = 0;
        for sym in file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text)
        {
            let a = unit_at(&from_aranges, sym.address());
            let u = unit_at(&from_units, sym.address());
            if let (Some(a), Some(u)) = (a, u) {
                assert_eq!(a, u, "{:?} at {:#x}", sym.name(), sym.address());
                both += 1;
            }
        }
        assert!(both > 1000, "{both} functions found by both");
    }
}
