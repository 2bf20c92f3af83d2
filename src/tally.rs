//! A kind that exists only in this crate's unit tests, to show what adding a kind takes:
//! this module, its `Kind::Tally` variant and its entry in `SOURCES` (src/session.rs), and
//! nothing else. Its source records one sample of the calling function per `record` call,
//! on the thread that started it.

#![forbid(unsafe_code)]

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::error::Error;
use crate::kind::{self, Controls, Figures, Finished, Format, Kind, Row, Samples, Trim, ValueType};

/// `calls/count`.
pub(crate) const TALLY: Format = Format {
    name: "tally",
    sample_types: &[ValueType {
        kind: "calls",
        unit: "count",
    }],
    period_type: ValueType {
        kind: "calls",
        unit: "count",
    },
    main: 0,
    default: 0,
    folded_divisor: 1,
    trim: Trim::NONE,
    headline: |f: &Figures<'_>| format!("tally {} calls", f.total("calls")),
};

thread_local! {
    /// The running session's id and its calls so far (paused: not counted).
    static RUNNING: Cell<(u64, u64, bool)> = const { Cell::new((0, 0, false)) };
}

/// Counts one call, if a session runs on this thread and is not paused.
pub(crate) fn record() {
    RUNNING.with(|r| {
        let (sid, n, paused) = r.get();
        if sid != 0 && !paused {
            r.set((sid, n + 1, paused));
        }
    });
}

static CONTROLS: Controls = Controls {
    reset: |_| RUNNING.with(|r| r.set((r.get().0, 0, r.get().2))),
    pause: |_| RUNNING.with(|r| r.set((r.get().0, r.get().1, true))),
    resume: |_| RUNNING.with(|r| r.set((r.get().0, r.get().1, false))),
    is_live: |sid| RUNNING.with(|r| r.get().0 == sid),
};

struct Session;

/// Starts the tally on the calling thread.
pub(crate) fn start(_: &Config) -> Result<Box<dyn kind::Running>, Error> {
    RUNNING.with(|r| r.set((7, 0, false)));
    Ok(Box::new(Session))
}

impl kind::Running for Session {
    fn sid(&self) -> u64 {
        7
    }

    fn controls(&self) -> &'static Controls {
        &CONTROLS
    }

    fn finish(self: Box<Self>) -> Box<dyn kind::Recorded> {
        let (_, calls, _) = RUNNING.with(|r| r.replace((0, 0, false)));
        Box::new(Recorded {
            calls,
            stack: [record as *const () as u64 + 1],
        })
    }
}

struct Recorded {
    calls: u64,
    stack: [u64; 1],
}

impl kind::Recorded for Recorded {
    fn finished(&self, _: Kind) -> Finished<'_> {
        let rows = vec![Row {
            thread: None,
            stack: &self.stack,
            values: vec![self.calls as i64],
            num_labels: Vec::new(),
            str_labels: Vec::new(),
        }];
        let samples = Samples {
            format: &TALLY,
            rows,
            placeholders: Vec::new(),
            period: 1,
            start: SystemTime::now(),
            duration: Duration::ZERO,
        };
        Finished {
            comments: vec!["tally: one sample per call".into()],
            exact: true,
            ..Finished::new(samples, self.calls)
        }
    }
}
