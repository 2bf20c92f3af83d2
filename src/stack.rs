//! What a stack is, for every kind: the thread it was taken on, its depth limit and the
//! markers that stand in for frames. The bottom of the house: samplers, kinds, aggregation
//! and the encoder all use it, and it uses nothing.

#![forbid(unsafe_code)]

/// The thread a sample was taken on: its kernel id and its name (`comm`, at most 15 bytes,
/// NUL-padded), both read once per thread in the handler.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Thread {
    pub tid: u32,
    pub name: [u8; 16],
}

impl Thread {
    /// The name as text (lossy), without the padding.
    pub(crate) fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(self.name.get(..end).unwrap_or_default()).into_owned()
    }
}

/// Deepest stack a sample holds; deeper stacks keep their innermost and outermost frames
/// around a [`TRUNCATED`] marker.
pub(crate) const MAX_DEPTH: usize = 128;
/// Stands for the frames a deep stack lost; the encoder names it [`TRUNCATED_FUNCTION`].
pub(crate) const TRUNCATED: u64 = u64::MAX;

/// Pseudo-function that carries samples the engine could not keep, as Go's
/// `runtime/pprof.lostProfileEvent` does, so totals stay right and the loss is visible.
///
/// ```
/// assert_eq!(profiled::pprof::LOST_FUNCTION, "profiled::lost_samples");
/// ```
pub const LOST_FUNCTION: &str = "profiled::lost_samples";

/// The pseudo-function that stands for the frames left out of a stack deeper than a sample
/// holds: its innermost frames are below it, its outermost ones (which name the test) above.
///
/// ```
/// assert_eq!(profiled::pprof::TRUNCATED_FUNCTION, "[truncated]");
/// ```
pub const TRUNCATED_FUNCTION: &str = "[truncated]";
