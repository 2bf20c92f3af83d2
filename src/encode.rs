//! Stacks with values (any kind's [`Samples`]) + symbols -> pprof `profile.proto`, gzipped.
//!
//! The message types are written out with prost's derive (no build-time codegen): they are
//! the subset of google/pprof's profile.proto that we write, with its field numbers.

#![forbid(unsafe_code)]

use rustc_hash::FxHashMap as HashMap;
use std::io::Write;
use std::sync::Arc;

use crate::kind::Samples;
use crate::stack::{TRUNCATED, TRUNCATED_FUNCTION, Thread};
use crate::symbolize::{Line as SymLine, Symbolizer};

/// google/pprof proto/profile.proto, the fields we use, as prost messages.
///
/// ```
/// use profiled::pprof::proto::{Profile, ValueType};
/// let p = Profile { string_table: vec!["".into()], sample_type: vec![ValueType::default()], ..Default::default() };
/// let bytes = prost::Message::encode_to_vec(&p);
/// assert_eq!(profiled::pprof::decode(&bytes).unwrap(), p);
/// ```
pub mod proto {
    #![allow(missing_docs)]
    use prost::Message;

    #[derive(Clone, PartialEq, Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// Figures for the summary line, computed while encoding.
pub(crate) struct Encoded {
    pub gz: Vec<u8>,
    /// Sum of each sample type's values, placeholders included, in the kind's order.
    pub totals: Vec<i64>,
    /// Function with the most of the kind's main value (flat), and its share of the total.
    pub top: Option<(String, f64)>,
    /// Folded stacks (`outer;...;leaf`, inlined frames included) with the main value (over
    /// the kind's `folded_divisor`), for flamegraphs.
    pub folded: Vec<(String, u64)>,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.get("");
        s
    }
    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Builds the profile of one finished session and gzips it.
/// Encoded profiles smaller than this are stored in the gzip stream, not deflated.
const STORE_BELOW: usize = 64 << 10;

/// A pprof function: name, linkage name, file.
type FunctionKey = (Arc<str>, Arc<str>, Arc<str>);

pub(crate) fn encode(input: &Samples<'_>, comments: &[String], sym: &mut Symbolizer) -> Encoded {
    use proto::*;
    let kind = input.format;
    let main = kind.main;
    let mut strings = Strings::new();
    let value_type = |t: &crate::kind::ValueType, strings: &mut Strings| ValueType {
        r#type: strings.get(t.kind),
        unit: strings.get(t.unit),
    };
    let mut profile = Profile {
        sample_type: kind
            .sample_types
            .iter()
            .map(|t| value_type(t, &mut strings))
            .collect(),
        period_type: Some(value_type(&kind.period_type, &mut strings)),
        period: input.period,
        time_nanos: input
            .start
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0),
        duration_nanos: input.duration.as_nanos() as i64,
        ..Default::default()
    };

    // Locations by probe address; functions by (name, linkage name, file), so that each
    // instantiation of a generic function stays its own (`-list`, `-peek`) while `-top`,
    // which groups by name, shows them as one; mappings by module index.
    let mut locations: HashMap<u64, u64> = HashMap::default();
    let mut functions: HashMap<FunctionKey, u64> = HashMap::default();
    let mut mappings: HashMap<Option<usize>, (u64, bool)> = HashMap::default();
    let mut flat: HashMap<Arc<str>, i64> = HashMap::default();
    let totals = input.totals();
    let mut folded = Vec::new();

    let mut function_id = |line: &SymLine, strings: &mut Strings, profile: &mut Profile| -> u64 {
        let key = (
            line.function.clone(),
            line.system_name.clone(),
            line.file.clone(),
        );
        if let Some(&id) = functions.get(&key) {
            return id;
        }
        let id = profile.function.len() as u64 + 1;
        profile.function.push(Function {
            id,
            name: strings.get(&line.function),
            system_name: strings.get(if line.system_name.is_empty() {
                &line.function
            } else {
                &line.system_name
            }),
            filename: strings.get(&line.file),
            start_line: 0,
        });
        functions.insert(key, id);
        id
    };

    // Deterministic output: stacks sorted by main value, then addresses, then thread.
    let thread_key = |t: Option<&Thread>| t.map(|t| (t.tid, t.name));
    let mut rows: Vec<&crate::kind::Row<'_>> = input.rows.iter().collect();
    rows.sort_by(|a, b| {
        (b.values.get(main).cmp(&a.values.get(main)))
            .then_with(|| a.stack.cmp(b.stack))
            .then_with(|| thread_key(a.thread).cmp(&thread_key(b.thread)))
    });
    let (thread_key_s, tid_key) = (strings.get("thread"), strings.get("tid"));
    let mut folded_weights: HashMap<String, i64> = HashMap::default();
    // The object each location is in, for the summary's headline rule.
    let mut location_module: Vec<Option<usize>> = Vec::new();
    // Locations with their leading allocator frames dropped, by the original's id.
    let mut trimmed: HashMap<u64, u64> = HashMap::default();
    for row in rows {
        let (stack, weight) = (row.stack, row.values.get(main).copied().unwrap_or(0));
        let mut ids = Vec::with_capacity(stack.len());
        for (depth, &addr) in stack.iter().enumerate() {
            if addr == TRUNCATED {
                let id = *locations.entry(TRUNCATED).or_insert_with(|| {
                    let line = SymLine::named(TRUNCATED_FUNCTION, TRUNCATED_FUNCTION);
                    let fid = function_id(&line, &mut strings, &mut profile);
                    let mapping_id = pseudo_mapping(&mut mappings);
                    location_module.push(None);
                    pseudo_location(&mut profile, mapping_id, fid)
                });
                ids.push(id);
                continue;
            }
            let is_return = depth > 0;
            let probe = if is_return {
                addr.saturating_sub(1)
            } else {
                addr
            };
            let id = match locations.get(&probe) {
                Some(&id) => id,
                None => {
                    let resolved = sym.resolve(addr, is_return);
                    let mapping_id = match mappings.get_mut(&resolved.module) {
                        Some((id, complete)) => {
                            *complete &= resolved.complete;
                            *id
                        }
                        None => {
                            let id = mappings.len() as u64 + 1;
                            mappings.insert(resolved.module, (id, resolved.complete));
                            id
                        }
                    };
                    let lines = resolved
                        .lines
                        .iter()
                        .map(|l| proto::Line {
                            function_id: function_id(l, &mut strings, &mut profile),
                            line: i64::from(l.line),
                        })
                        .collect();
                    let id = profile.location.len() as u64 + 1;
                    profile.location.push(Location {
                        id,
                        mapping_id,
                        address: probe,
                        line: lines,
                        is_folded: false,
                    });
                    location_module.push(resolved.module);
                    locations.insert(probe, id);
                    id
                }
            };
            ids.push(id);
        }
        if !kind.trim.is_empty() {
            ids = trim(
                ids,
                kind,
                &mut profile,
                &strings,
                &mut location_module,
                &mut trimmed,
            );
        }
        *folded_weights
            .entry(fold(&ids, &profile, &strings))
            .or_default() += weight;
        let objects = Objects {
            of_location: &location_module,
            modules: &sym.modules,
        };
        let waiting = row.str_labels.contains(&("state", "waiting"));
        if let Some(name) = headline_function(&ids, &profile, &strings, &objects, waiting) {
            *flat.entry(name).or_default() += weight;
        }
        let label = row.thread.map(|thread| {
            let name = match thread.name() {
                n if n.is_empty() => format!("thread {}", thread.tid),
                n => n,
            };
            vec![
                Label {
                    key: thread_key_s,
                    str: strings.get(&name),
                    ..Default::default()
                },
                Label {
                    key: tid_key,
                    num: i64::from(thread.tid),
                    ..Default::default()
                },
            ]
        });
        let mut label = label.unwrap_or_default();
        for &(key, num) in &row.num_labels {
            label.push(Label {
                key: strings.get(key),
                num,
                ..Default::default()
            });
        }
        for &(key, text) in &row.str_labels {
            label.push(Label {
                key: strings.get(key),
                str: strings.get(text),
                ..Default::default()
            });
        }
        profile.sample.push(Sample {
            location_id: ids,
            value: row.values.clone(),
            label,
        });
    }
    let divisor = kind.folded_divisor.max(1);
    let mut merged: Vec<(String, i64)> = folded_weights.into_iter().collect();
    merged.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let width = |v: i64| u64::try_from(v / divisor).unwrap_or(0);
    folded.extend(merged.into_iter().map(|(stack, w)| (stack, width(w))));

    for (name, values) in &input.placeholders {
        let line = SymLine::named(*name, *name);
        let fid = function_id(&line, &mut strings, &mut profile);
        let mapping_id = pseudo_mapping(&mut mappings);
        let id = pseudo_location(&mut profile, mapping_id, fid);
        profile.sample.push(Sample {
            location_id: vec![id],
            value: values.clone(),
            label: vec![],
        });
        folded.push((
            name.to_string(),
            width(values.get(main).copied().unwrap_or(0)),
        ));
    }

    // Mapping ids: the main executable first (go tool pprof takes mapping 1 as the main
    // binary), then other objects in load order, unknown addresses last.
    let mut keys: Vec<(Option<usize>, bool)> = mappings
        .iter()
        .map(|(m, (_, complete))| (*m, *complete))
        .collect();
    keys.sort_by_key(|(m, _)| m.map_or(usize::MAX, |i| i));
    let renumber: HashMap<u64, u64> = keys
        .iter()
        .enumerate()
        .map(|(i, (m, _))| (mappings[m].0, i as u64 + 1))
        .collect();
    for loc in &mut profile.location {
        loc.mapping_id = renumber[&loc.mapping_id];
    }
    for (i, (module, complete)) in keys.into_iter().enumerate() {
        let m = module.map(|i| &sym.modules[i]);
        profile.mapping.push(Mapping {
            id: i as u64 + 1,
            memory_start: m.map_or(0, |m| m.text.start),
            memory_limit: m.map_or(0, |m| m.text.end),
            file_offset: m.map_or(0, |m| m.file_offset),
            filename: strings.get(&m.map_or(String::new(), |m| m.path.display().to_string())),
            build_id: strings.get(m.map_or("", |m| m.build_id.as_str())),
            // Every location carries its function names (from DWARF or the symbol table, or a
            // placeholder), so pprof must not try to symbolize again.
            has_functions: true,
            has_filenames: complete,
            has_line_numbers: complete,
            has_inline_frames: complete,
        });
    }

    for c in comments {
        let i = strings.get(c);
        profile.comment.push(i);
    }
    profile.default_sample_type = kind
        .sample_types
        .get(kind.default)
        .map_or(0, |t| strings.get(t.kind));
    profile.string_table = strings.table;

    let total = totals.get(main).copied().unwrap_or(0);
    let top = flat
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .filter(|_| total > 0)
        .map(|(name, w)| (name.to_string(), w as f64 / total as f64));

    Encoded {
        gz: gzip(&prost::Message::encode_to_vec(&profile)),
        totals,
        top,
        folded,
    }
}

/// `ids` (leaf first) without the leading frames `kind` trims (`Format::trims`): whole
/// locations, and the leading inlined frames of the first location kept,
/// which becomes a location of its own (made once, remembered in `trimmed`). A stack made
/// of nothing else is kept whole.
fn trim(
    ids: Vec<u64>,
    kind: &crate::kind::Format,
    profile: &mut proto::Profile,
    strings: &Strings,
    location_module: &mut Vec<Option<usize>>,
    trimmed: &mut HashMap<u64, u64>,
) -> Vec<u64> {
    let trims = |function_id: u64| {
        let function = profile.function.get(function_id as usize - 1);
        let string = |index: Option<i64>| {
            index
                .and_then(|i| strings.table.get(i as usize))
                .map_or("", String::as_str)
        };
        kind.trims(
            string(function.map(|f| f.name)),
            string(function.map(|f| f.filename)),
        )
    };
    for (depth, &id) in ids.iter().enumerate() {
        let lines = &profile.location[id as usize - 1].line;
        let Some(keep) = lines.iter().position(|l| !trims(l.function_id)) else {
            continue;
        };
        let mut out = Vec::with_capacity(ids.len() - depth);
        if keep == 0 {
            out.push(id);
        } else {
            let new = match trimmed.get(&id) {
                Some(&new) => new,
                None => {
                    let original = &profile.location[id as usize - 1];
                    let new = profile.location.len() as u64 + 1;
                    let location = proto::Location {
                        id: new,
                        line: original.line[keep..].to_vec(),
                        ..original.clone()
                    };
                    profile.location.push(location);
                    location_module.push(location_module[id as usize - 1]);
                    trimmed.insert(id, new);
                    new
                }
            };
            out.push(new);
        }
        out.extend_from_slice(&ids[depth + 1..]);
        return out;
    }
    ids
}

/// The mapping of addresses outside every known object (and of pseudo-frames).
fn pseudo_mapping(mappings: &mut HashMap<Option<usize>, (u64, bool)>) -> u64 {
    let next = mappings.len() as u64 + 1;
    mappings.entry(None).or_insert((next, false)).0
}

/// A location for a frame that stands for something else (lost samples, left-out frames).
fn pseudo_location(profile: &mut proto::Profile, mapping_id: u64, function_id: u64) -> u64 {
    let id = profile.location.len() as u64 + 1;
    profile.location.push(proto::Location {
        id,
        mapping_id,
        address: 0,
        line: vec![proto::Line {
            function_id,
            line: 0,
        }],
        is_folded: false,
    });
    id
}

/// `raw` in a gzip stream. A test's profile is a few KiB, where deflate saves little and
/// costs most of encoding in an unoptimised build: below [`STORE_BELOW`] it is stored;
/// bigger ones are deflated fast, as Go's runtime/pprof does.
fn gzip(raw: &[u8]) -> Vec<u8> {
    if raw.len() < STORE_BELOW {
        return gzip_stored(raw);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(raw).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

/// `raw` in a gzip stream of stored deflate blocks (RFC 1951 §3.2.4, RFC 1952). Written
/// here rather than through flate2 at level 0: in a test's unoptimised build, miniz_oxide's
/// stored path cost about 80 µs of a later profile's 1 ms (`cargo xtask bench`), where this
/// is a copy and a CRC.
fn gzip_stored(raw: &[u8]) -> Vec<u8> {
    const BLOCK: usize = u16::MAX as usize;
    let blocks = raw.len().div_ceil(BLOCK).max(1);
    let mut out = Vec::with_capacity(10 + raw.len() + 5 * blocks + 8);
    // Magic, deflate, no flags, no mtime, no extra flags, OS unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut chunks = raw.chunks(BLOCK).peekable();
    if chunks.peek().is_none() {
        // One final, empty block.
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = flate2::Crc::new();
    crc.update(raw);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out
}

/// A stack as one folded line, outermost frame first, inlined frames expanded. The frames
/// that only run the test (thread start, libtest, profiled's harness, criterion, the C
/// runtime) are left out at the root, so a flamegraph starts at the test's own code. A
/// stack with nothing else keeps what an async runtime was doing, from its first frame on
/// (an idle tokio worker parked, in a wall profile), or else its leaf (a sample as a
/// thread starts or ends, or inside profiled).
fn fold(ids: &[u64], profile: &proto::Profile, strings: &Strings) -> String {
    let frames: Vec<(&str, &str)> = ids
        .iter()
        .rev()
        .flat_map(|&id| profile.location[id as usize - 1].line.iter().rev())
        .map(|line| {
            let f = &profile.function[line.function_id as usize - 1];
            (
                strings.table[f.name as usize].as_str(),
                strings.table[f.filename as usize].as_str(),
            )
        })
        .collect();
    let start = frames
        .iter()
        .position(|&(name, file)| !runs_the_test(name, file))
        .or_else(|| {
            frames
                .iter()
                .position(|&(name, _)| name.trim_start_matches('<').starts_with("tokio::"))
        })
        .unwrap_or(frames.len().saturating_sub(1));
    let mut out = String::new();
    for (name, _) in &frames[start..] {
        if !out.is_empty() {
            out.push(';');
        }
        // ';' separates frames in the folded format.
        out.push_str(&name.replace(';', ":"));
    }
    out
}

/// Frames between a thread's start and the test's code: std and libtest (sources under
/// `/rustc/`), the C runtime (no source), and the harnesses that call tests.
/// Crates whose frames run tests (and tasks) rather than being the test's code.
const RUNNERS: &[&str] = &["profiled::", "libtest_mimic::", "criterion::", "tokio::"];

fn runs_the_test(name: &str, file: &str) -> bool {
    let name = name.trim_start_matches('<');
    file.is_empty()
        || crate::kind::is_std_source(file)
        || RUNNERS.iter().any(|r| name.starts_with(r))
}

/// Which object each location is in.
struct Objects<'a> {
    /// By location id - 1.
    of_location: &'a [Option<usize>],
    modules: &'a [crate::modules::Module],
}

impl Objects<'_> {
    /// The file name of the shared library location `id` is in, unless it is the main
    /// executable or part of the C runtime (whose time belongs to the code that called it,
    /// as std's does).
    fn library(&self, id: u64) -> Option<String> {
        const RUNTIME: &[&str] = &[
            "libc.so",
            "libc-",
            "libm.so",
            "libpthread",
            "ld-linux",
            "libgcc_s",
            "libdl",
            "librt",
        ];
        let module = (*self.of_location.get(id as usize - 1)?)?;
        if module == 0 {
            return None;
        }
        let name = self
            .modules
            .get(module)?
            .path
            .file_name()?
            .to_string_lossy();
        (!RUNTIME.iter().any(|r| name.starts_with(r))).then(|| name.into_owned())
    }
}

/// What a sample is charged to in the summary line's `top:`: the innermost frame of the
/// user's own code. Frames of Rust's standard library ([`is_std_source`](crate::kind::is_std_source):
/// std's own and the crates it vendors, such as its hashbrown) and of the
/// C runtime are folded into their caller, because in test builds iterator and arithmetic
/// helpers are not inlined and would otherwise top every summary; so are profiled's own
/// (a thread waiting in a `profiled::sync` lock or condition variable is charged to the
/// code that waits, not to the wrapper). Time in another shared library without debug
/// info (libz, libssl) is charged to that library, by file name.
///
/// A `waiting` sample (a wall profile's `state=waiting`) also names the call it waited in,
/// the outermost of the frames folded into the code's (`app::load waiting in
/// std::thread::sleep`): what the code waited for is the point of a wall profile, and the
/// code alone cannot tell a wait from work.
fn headline_function(
    ids: &[u64],
    profile: &proto::Profile,
    strings: &Strings,
    objects: &Objects<'_>,
    waiting: bool,
) -> Option<Arc<str>> {
    let headline = |name: &str, callee: Option<&str>| -> Arc<str> {
        match (waiting, callee) {
            (false, _) => name.into(),
            (true, Some(callee)) => format!("{name} waiting in {callee}").into(),
            (true, None) => format!("{name} waiting").into(),
        }
    };
    let mut innermost: Option<&str> = None;
    let mut callee: Option<&str> = None;
    for &id in ids {
        for line in &profile.location[id as usize - 1].line {
            let f = &profile.function[line.function_id as usize - 1];
            let (name, file) = (
                &strings.table[f.name as usize],
                &strings.table[f.filename as usize],
            );
            if file.is_empty() {
                if let Some(library) = objects.library(id) {
                    return Some(headline(&library, callee));
                }
            }
            innermost.get_or_insert(name.as_str());
            if !file.is_empty()
                && !crate::kind::is_std_source(file)
                && !file.starts_with(crate::kind::PROFILED_SOURCES)
            {
                return Some(headline(name, callee));
            }
            callee = Some(name.as_str());
        }
    }
    innermost.map(|name| headline(name, None))
}

/// Decodes a (gzipped or raw) profile; for tests and tools that inspect what we wrote.
///
/// ```
/// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
/// let profile = profiled::Profile::start("docs", &profiled::Config::default()).unwrap();
/// let report = profile.finish().unwrap().remove(0);
/// let decoded = profiled::pprof::decode(report.pprof_gz()).unwrap();
/// assert_eq!(decoded.string_table[0], "");
/// assert_eq!(decoded.sample_type.len(), 2);
/// # }
/// ```
#[cfg(any(test, feature = "decode"))]
pub fn decode(bytes: &[u8]) -> std::io::Result<proto::Profile> {
    use std::io::Read;
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        out
    } else {
        bytes.to_vec()
    };
    <proto::Profile as prost::Message>::decode(raw.as_slice())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{Format, Row, ValueType};

    /// Stored gzip streams read back whole, at every block boundary, with gzip's own
    /// decoder (flate2's, which checks the CRC and the length).
    #[test]
    fn stored_gzip_reads_back() {
        for len in [0usize, 1, 1000, 65_534, 65_535, 65_536, 131_070, 200_001] {
            let raw: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let gz = gzip_stored(&raw);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, raw, "{len} bytes");
            assert_eq!(
                gz.len(),
                18 + len + 5 * len.div_ceil(65_535).max(1),
                "{len}"
            );
        }
    }

    /// A kind of sample types no real kind has.
    static BYTES: Format = Format {
        name: "test",
        sample_types: &[
            ValueType {
                kind: "objects",
                unit: "count",
            },
            ValueType {
                kind: "space",
                unit: "bytes",
            },
        ],
        period_type: ValueType {
            kind: "space",
            unit: "bytes",
        },
        main: 1,
        default: 1,
        folded_divisor: 1,
        trim: crate::kind::Trim::NONE,
        headline: |_| String::new(),
    };
    use std::io::Read;

    /// A kind with other sample types goes through the same encoder: its types, its period,
    /// its default value, totals per type, the top function and flamegraph widths by its
    /// main value, and placeholders.
    #[test]
    fn any_kind_is_encoded_with_its_own_sample_types() {
        let here = any_kind_is_encoded_with_its_own_sample_types as *const () as u64;
        let (a, b) = ([here], [here + 1, here]);
        let input = Samples {
            format: &BYTES,
            rows: vec![
                Row {
                    thread: None,
                    stack: &a,
                    values: vec![1, 100],
                    num_labels: vec![],
                    str_labels: Vec::new(),
                },
                Row {
                    thread: None,
                    stack: &b,
                    values: vec![3, 300],
                    num_labels: vec![],
                    str_labels: Vec::new(),
                },
            ],
            placeholders: vec![("[elsewhere]", vec![1, 600])],
            period: 512,
            start: std::time::UNIX_EPOCH,
            duration: std::time::Duration::from_secs(1),
        };
        let encoded = crate::symbolize::with(|sym| encode(&input, &[], sym));
        assert_eq!(encoded.totals, [5, 1000]);
        let p = decode(&encoded.gz).unwrap();
        let name = |i: i64| p.string_table[i as usize].as_str();
        let types: Vec<_> = p
            .sample_type
            .iter()
            .map(|t| (name(t.r#type), name(t.unit)))
            .collect();
        assert_eq!(types, [("objects", "count"), ("space", "bytes")]);
        assert_eq!(name(p.default_sample_type), "space");
        assert_eq!(p.period, 512);
        let period_type = p.period_type.as_ref().unwrap();
        assert_eq!(name(period_type.r#type), "space");
        assert_eq!(p.sample.len(), 3);
        assert!(p.sample.iter().all(|s| s.label.is_empty()));
        // Sorted by the main value: the placeholder last, as it is added after the stacks.
        assert_eq!(p.sample[0].value, [3, 300]);
        assert_eq!(p.sample[2].value, [1, 600]);
        // Widths are bytes (divisor 1); the placeholder is its own frame.
        assert!(encoded.folded.contains(&("[elsewhere]".to_string(), 600)));
        assert_eq!(encoded.folded.iter().map(|f| f.1).sum::<u64>(), 1000);
        // All 400 stack bytes end in this test function.
        let (top, share) = encoded.top.unwrap();
        assert!(top.contains("any_kind_is_encoded"), "{top}");
        assert!((share - 0.4).abs() < 1e-9, "{share}");
    }

    #[inline(never)]
    fn instantiated<T: Copy>(x: T) -> T {
        std::hint::black_box(x)
    }

    /// Two instantiations of one generic function share a demangled name (the hash that
    /// tells them apart is dropped) but are two pprof functions, told apart by their
    /// linkage names.
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported)))]
    #[test]
    fn each_instantiation_of_a_generic_function_is_its_own_function() {
        assert_eq!(instantiated(1u32) as u64, instantiated(1u64));
        let (a, b) = (
            [instantiated::<u32> as *const () as u64],
            [instantiated::<u64> as *const () as u64],
        );
        let row = |stack| Row {
            thread: None,
            stack,
            values: vec![1, 1000],
            num_labels: vec![],
            str_labels: Vec::new(),
        };
        let input = Samples {
            format: &BYTES,
            rows: vec![row(&a), row(&b)],
            placeholders: Vec::new(),
            period: 1000,
            start: std::time::UNIX_EPOCH,
            duration: std::time::Duration::from_secs(1),
        };
        let encoded = crate::symbolize::with(|sym| encode(&input, &[], sym));
        let p = decode(&encoded.gz).unwrap();
        let s = |i: i64| p.string_table[i as usize].as_str();
        let functions: Vec<_> = p
            .function
            .iter()
            .filter(|f| s(f.name).contains("instantiated"))
            .map(|f| (s(f.name), s(f.system_name)))
            .collect();
        assert_eq!(functions.len(), 2, "{functions:?}");
        assert_ne!(functions[0].1, functions[1].1, "{functions:?}");
    }

    #[test]
    fn small_profiles_are_stored_and_big_ones_deflated() {
        let unzip = |gz: &[u8]| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(gz)
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let small: Vec<u8> = b"samples count cpu nanoseconds ".repeat(100);
        let gz = gzip(&small);
        assert!(
            gz.len() > small.len(),
            "stored: {} of {}",
            gz.len(),
            small.len()
        );
        assert_eq!(unzip(&gz), small);
        let big: Vec<u8> = b"samples count cpu nanoseconds ".repeat(10_000);
        assert!(big.len() >= STORE_BELOW);
        let gz = gzip(&big);
        assert!(
            gz.len() * 10 < big.len(),
            "deflated: {} of {}",
            gz.len(),
            big.len()
        );
        assert_eq!(unzip(&gz), big);
    }
}
