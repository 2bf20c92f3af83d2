//! The loaded objects of this process, read with `dl_iterate_phdr`.
//!
//! Read directly rather than through findshlibs, because profile mappings need each
//! segment's file offset and the unwinder needs the `PT_GNU_EH_FRAME` address, and
//! findshlibs exposes neither. Never called from the signal handler.

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::modules::{Module, gnu_build_id};

/// All executable segments of all loaded objects, the main executable first. The vDSO
/// (`clock_gettime` and friends) is one of them, as `[vdso]`: its unwind tables and its
/// symbol table are in memory (see [`vdso_image`]), though it has no file.
pub(crate) fn loaded() -> Vec<Module> {
    let mut out: Vec<Module> = Vec::new();
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Vec<Module>` passed below; `info` is valid for the
        // duration of the callback, as dl_iterate_phdr promises.
        let (out, info) = unsafe { (&mut *(data as *mut Vec<Module>), &*info) };
        // SAFETY: as above, the callback's arguments are valid for its duration.
        unsafe { collect(info, out) };
        0
    }
    // SAFETY: `each` only reads the phdr info it is given and pushes to `out`.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut out as *mut Vec<Module> as *mut _) };
    out.sort_by_key(|m| !m.is_main);
    out
}

/// Every object seen loaded since the process started profiling, unloaded ones included.
static SEEN: Mutex<Vec<Module>> = Mutex::new(Vec::new());

/// Notes `modules` (a fresh [`loaded`] list) as seen: an object unloaded before its
/// profile is symbolized is still named, from its file, as long as the file exists.
pub(crate) fn remember(modules: &[Module]) {
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    for m in modules {
        if !seen.iter().any(|s| same(s, m)) {
            seen.push(m.clone());
        }
    }
}

fn same(a: &Module, b: &Module) -> bool {
    a.text == b.text && a.path == b.path && a.build_id == b.build_id
}

/// The loaded objects, then those seen earlier and since unloaded whose addresses no loaded
/// object has taken over (for addresses sampled while they were loaded).
pub(crate) fn known() -> Vec<Module> {
    let mut out = loaded();
    remember(&out);
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let gone: Vec<Module> = seen
        .iter()
        .filter(|s| {
            !out.iter()
                .any(|m| m.text.start < s.text.end && s.text.start < m.text.end)
        })
        .cloned()
        .collect();
    out.extend(gone);
    out
}

/// Counts of objects loaded and unloaded so far (glibc's `dlpi_adds`/`dlpi_subs`), to tell
/// whether a module snapshot is stale.
pub(crate) fn generation() -> u64 {
    #[cfg(target_env = "gnu")]
    {
        unsafe extern "C" fn first(
            info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            data: *mut libc::c_void,
        ) -> libc::c_int {
            // SAFETY: valid for the callback's duration; data is the `&mut u64` below.
            unsafe {
                *(data as *mut u64) = (*info).dlpi_adds.wrapping_add((*info).dlpi_subs << 32)
            };
            1
        }
        let mut g = 0u64;
        // SAFETY: `first` writes one u64 through `data` and stops the iteration.
        unsafe { libc::dl_iterate_phdr(Some(first), &mut g as *mut u64 as *mut _) };
        g
    }
    #[cfg(not(target_env = "gnu"))]
    {
        0
    }
}

/// # Safety
/// `info` must come from `dl_iterate_phdr`, inside its callback.
unsafe fn collect(info: &libc::dl_phdr_info, out: &mut Vec<Module>) {
    let bias = info.dlpi_addr;
    // SAFETY: dl_iterate_phdr gives `dlpi_phnum` headers at `dlpi_phdr`.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let name: &[u8] = if info.dlpi_name.is_null() {
        b""
    } else {
        // SAFETY: a NUL-terminated string owned by the dynamic loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    // glibc names the main program "" (any other object by the path it was opened with,
    // which need not be UTF-8).
    let is_main = name.is_empty();
    let is_vdso = !is_main && name.starts_with(b"linux-vdso");
    let loads = || phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD);
    let path = if is_vdso {
        PathBuf::from("[vdso]")
    } else if is_main {
        std::env::current_exe().unwrap_or_default()
    } else {
        let given = Path::new(OsStr::from_bytes(name));
        if given.is_absolute() {
            given.to_path_buf()
        } else {
            // `dlopen("./lib.so")` keeps the path as given, relative to the directory of
            // that moment: the kernel's view of the mapping has the real one.
            let Some(real) = mapped_path(bias + loads().next().map_or(0, |p| p.p_vaddr)) else {
                return;
            };
            real
        }
    };
    let mut build_id = String::new();
    let mut eh_frame_hdr = None;
    let mut eh_frame = None;
    for p in phdrs {
        match p.p_type {
            libc::PT_NOTE => {
                // SAFETY: PT_NOTE segments are loaded (inside a PT_LOAD) and readable.
                let notes = unsafe {
                    std::slice::from_raw_parts((bias + p.p_vaddr) as *const u8, p.p_memsz as usize)
                };
                if let Some(id) = gnu_build_id(notes) {
                    build_id = id;
                }
            }
            libc::PT_GNU_EH_FRAME => {
                let hdr = bias + p.p_vaddr;
                eh_frame_hdr = Some(hdr..hdr + p.p_memsz);
                // SAFETY: the eh_frame_hdr segment is mapped readable for the unwinder.
                let start = unsafe { eh_frame_from_hdr(hdr) };
                if let Some(start) = start {
                    // The section ends somewhere in its PT_LOAD segment; framehop finds FDEs
                    // through the hdr's table, so the segment end is a safe upper bound.
                    let end = loads()
                        .map(|l| bias + l.p_vaddr..bias + l.p_vaddr + l.p_memsz)
                        .find(|r| r.contains(&start))
                        .map(|r| r.end);
                    if let Some(end) = end {
                        eh_frame = Some(start..end);
                    }
                }
            }
            _ => {}
        }
    }
    for p in loads().filter(|p| p.p_flags & libc::PF_X != 0) {
        out.push(Module {
            path: path.clone(),
            build_id: build_id.clone(),
            bias,
            text: bias + p.p_vaddr..bias + p.p_vaddr + p.p_memsz,
            file_offset: p.p_offset,
            eh_frame_hdr: eh_frame_hdr.clone(),
            eh_frame: eh_frame.clone(),
            is_main,
        });
    }
}

/// A copy of the vDSO's image (an ELF object the kernel maps into every process, with no
/// file behind it), for its symbol table: `clock_gettime` and friends are named from it.
/// Copied once, from the mapping at `AT_SYSINFO_EHDR` as /proc/self/maps bounds it.
pub(crate) fn vdso_image() -> Option<&'static [u8]> {
    static IMAGE: std::sync::OnceLock<Option<&'static [u8]>> = std::sync::OnceLock::new();
    *IMAGE.get_or_init(|| {
        // SAFETY: getauxval has no preconditions; 0 means the kernel gave no vDSO.
        let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
        if base == 0 {
            return None;
        }
        let (range, name) = mapping_at(base)?;
        if range.start != base || name != b"[vdso]" {
            return None;
        }
        let len = usize::try_from(range.end - base).ok()?;
        // SAFETY: the kernel maps the vDSO readable for the process's life, and these are
        // the bounds of that mapping.
        let image = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
        Some(Vec::leak(image.to_vec()) as &'static [u8])
    })
}

/// The file mapped at `addr`, from /proc/self/maps (`start-end perms offset dev inode path`).
fn mapped_path(addr: u64) -> Option<PathBuf> {
    let (_, path) = mapping_at(addr)?;
    (path.first() == Some(&b'/')).then(|| PathBuf::from(OsStr::from_bytes(&path)))
}

/// The mapping holding `addr`, from /proc/self/maps (`start-end perms offset dev inode
/// path`): its address range and its path (or pseudo-name such as `[vdso]`; empty for
/// anonymous memory).
fn mapping_at(addr: u64) -> Option<(std::ops::Range<u64>, Vec<u8>)> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    maps.split(|&b| b == b'\n').find_map(|line| {
        let mut fields = line.splitn(6, |&b| b == b' ');
        let range = fields.next()?;
        let dash = range.iter().position(|&b| b == b'-')?;
        let hex = |b: &[u8]| u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok();
        let (start, end) = (hex(&range[..dash])?, hex(&range[dash + 1..])?);
        let path = fields.nth(4).unwrap_or_default().trim_ascii_start();
        (start <= addr && addr < end).then(|| (start..end, path.to_vec()))
    })
}

/// Address of `.eh_frame` from the `eh_frame_ptr` field of `.eh_frame_hdr`.
///
/// # Safety
/// `hdr` must point to a readable `.eh_frame_hdr`.
unsafe fn eh_frame_from_hdr(hdr: u64) -> Option<u64> {
    let p = hdr as *const u8;
    // SAFETY: the header's first 8 bytes are readable per the caller's contract.
    let (version, enc) = unsafe { (*p, *p.add(1)) };
    if version != 1 {
        return None;
    }
    // DW_EH_PE_pcrel | DW_EH_PE_sdata4 is what every linker writes; accept absolute too.
    let field = hdr + 4;
    match enc {
        0x1b => {
            // SAFETY: as above.
            let off = unsafe { (field as *const i32).read_unaligned() };
            Some(field.wrapping_add_signed(off as i64))
        }
        0x03 | 0x0b => {
            // SAFETY: as above.
            Some(unsafe { (field as *const u32).read_unaligned() } as u64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_executable_comes_first_and_contains_this_code() {
        let mods = loaded();
        let main = &mods[0];
        assert!(main.is_main);
        let here = main_executable_comes_first_and_contains_this_code as *const () as usize as u64;
        assert!(
            mods.iter().any(|m| m.is_main && m.text.contains(&here)),
            "{mods:#?}"
        );
        assert!(main.eh_frame_hdr.is_some() && main.eh_frame.is_some());
        assert_eq!(
            main.build_id.len(),
            40,
            "rustc links with a 20-byte GNU build id"
        );
    }
}
