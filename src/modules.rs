//! What profiles and the unwinder know of a loaded object (executable or shared library):
//! address ranges, file offset, build id, in-memory unwind tables. The list of them comes
//! from the platform (`sys::known_modules`).

#![forbid(unsafe_code)]

use std::ops::Range;
use std::path::PathBuf;

/// One executable segment of one loaded object.
#[derive(Clone, Debug)]
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))),
    allow(dead_code) // only a sampler makes these (src/sys)
)]
pub(crate) struct Module {
    /// Path of the file the object was loaded from.
    pub path: PathBuf,
    /// GNU build id, lower-case hex; empty when the object has none.
    pub build_id: String,
    /// Load bias: actual address = stated address + bias.
    pub bias: u64,
    /// Actual addresses of the executable segment.
    pub text: Range<u64>,
    /// File offset of the executable segment.
    pub file_offset: u64,
    /// Actual addresses of `.eh_frame_hdr` and of `.eh_frame` (up to the end of its segment).
    pub eh_frame_hdr: Option<Range<u64>>,
    pub eh_frame: Option<Range<u64>>,
    /// Whether this is the main executable.
    pub is_main: bool,
}

/// The NT_GNU_BUILD_ID note in a note segment, as hex.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))),
    allow(dead_code) // only a sampler makes these (src/sys)
)]
pub(crate) fn gnu_build_id(mut notes: &[u8]) -> Option<String> {
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let (namesz, descsz, kind) = (word(notes), word(&notes[4..]), word(&notes[8..]));
        let name_end = 12 + align4(namesz);
        let desc_end = name_end + align4(descsz);
        if desc_end > notes.len() {
            return None;
        }
        if kind == 3 && namesz == 4 && &notes[12..16] == b"GNU\0" {
            let desc = &notes[name_end..name_end + descsz];
            return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
        }
        notes = &notes[desc_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_build_id_note() {
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_ne_bytes());
        note.extend_from_slice(&3u32.to_ne_bytes());
        note.extend_from_slice(&3u32.to_ne_bytes());
        note.extend_from_slice(b"GNU\0");
        note.extend_from_slice(&[0xab, 0x01, 0xff, 0]);
        assert_eq!(gnu_build_id(&note).as_deref(), Some("ab01ff"));
    }
}
