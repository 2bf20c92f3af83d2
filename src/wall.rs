//! Wall-clock profiles (`PROFILE=wall`): every thread of a test, running or not, sampled
//! on wall time, each sample labelled `state=running` or `state=waiting`. Go has no such
//! profile (fgprof fills the gap there); a CPU profile cannot see time spent waiting.
//!
//! One sampler thread per process ticks at the fastest session's `wall_freq`. Each tick,
//! for each session's threads (the one that started it and those it spawned, which join
//! through the heap module's thread tags at `pthread_create`; every thread for
//! `threads=all`), it reads /proc for the thread's state and the system call it is in. A
//! thread still blocked in the same system call at the same place as at its previous tick
//! keeps its previous stack: it is not interrupted again. Any other is asked for its stack
//! by the signal the `/debug/pprof/threads` dump uses (`sys::stacks_of`), whose handler is
//! installed with `SA_RESTART`, so blocked reads, accepts and lock waits go on as if
//! nothing happened. Each sample weighs the wall time since the tick before.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustc_hash::FxBuildHasher;

use crate::config::{Config, Threads};
use crate::error::{Error, Repr};
use crate::kind::{self, Controls, Figures, Finished, Format, Kind, Row, Samples, Trim, ValueType};
use crate::membership::{self, Tag};
use crate::stack::Thread;

/// Every thread of a test on wall time, running or waiting (fgprof's profile for Go):
/// `samples/count`, `wall/nanoseconds`, with a `state` label.
pub(crate) const WALL: Format = Format {
    name: "wall",
    sample_types: &[
        ValueType {
            kind: "samples",
            unit: "count",
        },
        ValueType {
            kind: "wall",
            unit: "nanoseconds",
        },
    ],
    period_type: ValueType {
        kind: "wall",
        unit: "nanoseconds",
    },
    main: 1,
    default: 1,
    folded_divisor: 1000,
    trim: Trim::NONE,
    headline,
};

/// `wall 1.20s over 120 samples`.
fn headline(f: &Figures<'_>) -> String {
    format!(
        "wall {:.2}s over {} samples",
        Duration::from_nanos(f.total("wall").max(0) as u64).as_secs_f64(),
        f.count
    )
}

/// How long the sampler waits for a thread's answer: one that does not answer (it blocks
/// the signal, is stopped, or is exiting) is left out of that tick, and its time goes to
/// its next sample; short, since every thread of the tick waits with it.
const PATIENCE: Duration = Duration::from_millis(5);

/// Sessions running: 0 lets a spawned thread skip the lookup.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// One thread of a session and what the sampler last saw of it.
struct Member {
    tid: i32,
    /// `/proc/self/task/<tid>/syscall` at its last stack, and that stack.
    last: Option<(String, Thread, Box<[u64]>)>,
    /// When its last sample was taken: the next one weighs the time since, so that a tick
    /// it missed is not lost.
    at: Option<Instant>,
}

type Buckets = HashMap<(Thread, Box<[u64]>, bool), (i64, i64), FxBuildHasher>;

struct Recording {
    members: Vec<Member>,
    all: bool,
    period: Duration,
    paused: u32,
    /// (thread, stack, waiting) -> (samples, wall ns).
    buckets: Buckets,
}

struct Sampler {
    sessions: Mutex<HashMap<u64, Recording, FxBuildHasher>>,
    wake: Condvar,
}

static SAMPLER: Sampler = Sampler {
    sessions: Mutex::new(HashMap::with_hasher(FxBuildHasher)),
    wake: Condvar::new(),
};
static STARTED: std::sync::Once = std::sync::Once::new();
/// The sampler thread's id: never a member.
static SAMPLER_TID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

fn sessions() -> std::sync::MutexGuard<'static, HashMap<u64, Recording, FxBuildHasher>> {
    SAMPLER
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A thread spawned with `tags` starts: it joins the wall sessions among them.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))),
    allow(dead_code)
)]
fn adopted(tags: &[Tag]) {
    if ACTIVE.load(Ordering::Relaxed) == 0 {
        return;
    }
    let tid = crate::sampler::current_tid();
    let mut sessions = sessions();
    for tag in tags.iter().filter(|t| t.sid != 0) {
        if let Some(rec) = sessions.get_mut(&tag.sid) {
            rec.members.push(Member {
                tid,
                last: None,
                at: None,
            });
        }
    }
}

/// A wall-clock profile being recorded.
pub(crate) struct Session {
    slot: usize,
    sid: u64,
    frequency: u32,
    start: SystemTime,
    started: Instant,
}

/// One row of a wall profile: thread, stack, waiting, samples, wall ns.
pub(crate) type WallRow = (Thread, Box<[u64]>, bool, i64, i64);

/// What a finished session hands the encoder's caller.
pub(crate) struct Recorded {
    pub rows: Vec<WallRow>,
    pub frequency: u32,
    pub start: SystemTime,
    pub duration: Duration,
}

impl Session {
    /// Starts sampling the calling thread and the threads it spawns from now on (`all`:
    /// every thread of the process) at `frequency` Hz of wall time.
    pub(crate) fn start(frequency: u32, all: bool) -> Result<Session, Error> {
        if !crate::sys::STACKS {
            return Err(Error::from(Repr::Unsupported {
                what: format!(
                    "wall-clock profiles are not supported on this platform ({}-{}); \
                     profiled takes stacks on Linux x86_64",
                    std::env::consts::OS,
                    std::env::consts::ARCH
                ),
            }));
        }
        // The signal handler and unwinder, set up now rather than at the first tick.
        crate::sampler::stacks_of(&[], PATIENCE)?;
        membership::on_adopt(adopted);
        let (slot, sid) = membership::claim(all, |_, _| {})?;
        if !all {
            membership::join(Tag {
                slot: slot as u8,
                sid,
            });
        }
        let me = crate::sampler::current_tid();
        sessions().insert(
            sid,
            Recording {
                members: if all {
                    Vec::new()
                } else {
                    vec![Member {
                        tid: me,
                        last: None,
                        at: None,
                    }]
                },
                all,
                period: Duration::from_nanos(1_000_000_000 / u64::from(frequency.max(1))),
                paused: 0,
                buckets: Buckets::default(),
            },
        );
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        start_sampler()?;
        SAMPLER.wake.notify_all();
        Ok(Session {
            slot,
            sid,
            frequency,
            start: SystemTime::now(),
            started: Instant::now(),
        })
    }

    /// Stops sampling and takes what was recorded.
    pub(crate) fn finish(self) -> Recorded {
        let duration = self.started.elapsed();
        let rec = self.stop();
        let mut rows: Vec<_> = rec
            .map(|r| r.buckets)
            .unwrap_or_default()
            .into_iter()
            .map(|((thread, stack, waiting), (n, ns))| (thread, stack, waiting, n, ns))
            .collect();
        rows.sort_by(|a, b| b.4.cmp(&a.4).then_with(|| a.1.cmp(&b.1)));
        let recorded = Recorded {
            rows,
            frequency: self.frequency,
            start: self.start,
            duration,
        };
        std::mem::forget(self);
        recorded
    }

    fn stop(&self) -> Option<Recording> {
        membership::leave(self.sid);
        membership::release(self.slot, self.sid, || {});
        let rec = sessions().remove(&self.sid);
        if rec.is_some() {
            ACTIVE.fetch_sub(1, Ordering::Relaxed);
        }
        rec
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stop());
    }
}

/// Pauses wall session `sid` (nested pauses count).
pub(crate) fn pause(sid: u64) {
    if let Some(r) = sessions().get_mut(&sid) {
        r.paused += 1;
    }
}

/// Ends one [`pause`].
pub(crate) fn resume(sid: u64) {
    if let Some(r) = sessions().get_mut(&sid) {
        r.paused = r.paused.saturating_sub(1);
    }
}

/// Drops what wall session `sid` recorded so far.
pub(crate) fn reset(sid: u64) {
    if let Some(r) = sessions().get_mut(&sid) {
        r.buckets.clear();
    }
}

/// Whether wall session `sid` is running.
pub(crate) fn is_live(sid: u64) -> bool {
    sessions().contains_key(&sid)
}

fn start_sampler() -> Result<(), Error> {
    let mut failed = None;
    STARTED.call_once(|| {
        if let Err(e) = std::thread::Builder::new()
            .name("profiled-wall".into())
            .spawn(sampler_loop)
        {
            failed = Some(e);
        }
    });
    match failed {
        Some(e) => Err(Error::from(Repr::Sampler {
            what: "starting the wall-clock sampler thread",
            source: e,
        })),
        None => Ok(()),
    }
}

fn sampler_loop() {
    membership::own_thread();
    SAMPLER_TID.store(crate::sampler::current_tid(), Ordering::Relaxed);
    let mut last = Instant::now();
    loop {
        // The fastest session's period; asleep while there is none.
        let period = {
            let mut guard = sessions();
            while guard.is_empty() {
                guard = SAMPLER
                    .wake
                    .wait(guard)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                last = Instant::now();
            }
            guard.values().map(|r| r.period).min().unwrap_or_default()
        };
        let next = last + period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let now = Instant::now();
        let elapsed = now.duration_since(last);
        last = now;
        tick(elapsed);
    }
}

/// One tick: a sample of every member thread of every session, weighing `elapsed`.
fn tick(elapsed: Duration) {
    let me = SAMPLER_TID.load(Ordering::Relaxed);
    // Who to look at, outside the lock: the members, and every thread for `all` sessions.
    let (mut tids, all) = {
        let s = sessions();
        let all = s.values().any(|r| r.all && r.paused == 0);
        let tids: Vec<i32> = s
            .values()
            .filter(|r| r.paused == 0)
            .flat_map(|r| r.members.iter().map(|m| m.tid))
            .collect();
        (tids, all)
    };
    if all {
        tids.extend(crate::sys::thread_ids().unwrap_or_default());
    }
    tids.retain(|&t| t != me && t != 0);
    tids.sort_unstable();
    tids.dedup();
    // State and system call of each; a thread still in the same blocking call keeps its
    // previous stack (looked up below), the others are asked.
    let looked = Instant::now();
    let mut states: HashMap<i32, (bool, String), FxBuildHasher> = HashMap::default();
    for &tid in &tids {
        if let Some(state) = crate::sampler::thread_state(tid) {
            states.insert(tid, state);
        }
    }
    let unchanged = |tid: i32, last: &Option<(String, Thread, Box<[u64]>)>| {
        let Some((running, syscall)) = states.get(&tid) else {
            return false;
        };
        !running
            && syscall.split_whitespace().count() > 3
            && last.as_ref().is_some_and(|(s, _, _)| s == syscall)
    };
    let to_ask: Vec<i32> = {
        let s = sessions();
        let mut ask: Vec<i32> = tids
            .iter()
            .copied()
            .filter(|tid| states.contains_key(tid))
            .filter(|&tid| {
                // Asked unless every session that has it as a member has it unchanged.
                let member_of: Vec<&Member> = s
                    .values()
                    .flat_map(|r| r.members.iter().filter(|m| m.tid == tid))
                    .collect();
                member_of.is_empty() || member_of.iter().any(|m| !unchanged(tid, &m.last))
            })
            .collect();
        ask.sort_unstable();
        ask
    };
    let answers: HashMap<i32, (Thread, Vec<u64>), FxBuildHasher> =
        crate::sampler::stacks_of(&to_ask, PATIENCE)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(thread, stack)| Some((thread.tid as i32, (thread, stack?))))
            .collect();
    let ns = |d: Duration| d.as_nanos().min(i64::MAX as u128) as i64;
    let mut s = sessions();
    for rec in s.values_mut().filter(|r| r.paused == 0) {
        // Threads found gone leave (not those that joined since the list was made);
        // `all` sessions sample whoever is there.
        rec.members
            .retain(|m| states.contains_key(&m.tid) || tids.binary_search(&m.tid).is_err());
        let mut sample = |tid: i32,
                          last: &mut Option<(String, Thread, Box<[u64]>)>,
                          at: &mut Option<Instant>| {
            let Some((running, syscall)) = states.get(&tid) else {
                return;
            };
            let (thread, stack) = match answers.get(&tid) {
                Some((thread, stack)) => {
                    let stack: Box<[u64]> = stack.as_slice().into();
                    *last = Some((syscall.clone(), *thread, stack.clone()));
                    (*thread, stack)
                }
                // Still blocked where it was: its last stack, as `to_ask` decided.
                None if unchanged(tid, last) => match last {
                    Some((_, thread, stack)) => (*thread, stack.clone()),
                    None => return,
                },
                None => return,
            };
            let weight = at.map_or(elapsed, |t| looked.saturating_duration_since(t));
            *at = Some(looked);
            let v = rec.buckets.entry((thread, stack, !running)).or_default();
            v.0 += 1;
            v.1 = v.1.saturating_add(ns(weight));
        };
        if rec.all {
            for &tid in &tids {
                sample(tid, &mut None, &mut None);
            }
        } else {
            for m in rec.members.iter_mut() {
                sample(m.tid, &mut m.last, &mut m.at);
            }
        }
    }
}

impl Recorded {
    /// The recording as the wall kind's samples, each with its `state` label.
    pub(crate) fn samples(&self) -> Samples<'_> {
        let rows = self
            .rows
            .iter()
            .map(|(thread, stack, waiting, n, ns)| Row {
                thread: Some(thread),
                stack,
                values: vec![*n, *ns],
                num_labels: Vec::new(),
                str_labels: vec![("state", if *waiting { "waiting" } else { "running" })],
            })
            .collect();
        Samples {
            format: &WALL,
            rows,
            placeholders: Vec::new(),
            period: 1_000_000_000 / i64::from(self.frequency.max(1)),
            start: self.start,
            duration: self.duration,
        }
    }

    /// Wall nanoseconds of samples whose thread was waiting, and of all.
    pub(crate) fn waiting_and_total(&self) -> (i64, i64) {
        self.rows
            .iter()
            .fold((0, 0), |(w, t), r| (if r.2 { w + r.4 } else { w }, t + r.4))
    }
}

/// What `reset()` and `pause()` reach of a wall session.
static CONTROLS: Controls = Controls {
    reset,
    pause,
    resume,
    is_live,
};

/// Starts the wall source as `config` asks.
pub(crate) fn start(config: &Config) -> Result<Box<dyn kind::Running>, Error> {
    Ok(Box::new(Session::start(
        config.wall_frequency,
        config.threads == Threads::All,
    )?))
}

impl kind::Running for Session {
    fn sid(&self) -> u64 {
        self.sid
    }

    fn controls(&self) -> &'static Controls {
        &CONTROLS
    }

    fn finish(self: Box<Self>) -> Box<dyn kind::Recorded> {
        Box::new(Session::finish(*self))
    }
}

impl kind::Recorded for Recorded {
    fn finished(&self, _: Kind) -> Finished<'_> {
        let comments = vec![format!(
            "wall: every thread of the test sampled {} times a second of wall time, running \
             or not; label state=running|waiting (go tool pprof -tagfocus=state=waiting)",
            self.frequency
        )];
        let (waiting, total) = self.waiting_and_total();
        let note = (total > 0).then(|| {
            format!(
                "{:.0}% of the sampled threads' wall time was spent waiting (state=waiting)",
                100.0 * waiting as f64 / total as f64
            )
        });
        let count = self.rows.iter().map(|r| r.3.max(0) as u64).sum();
        Finished {
            comments,
            note,
            ..Finished::new(self.samples(), count)
        }
    }
}
