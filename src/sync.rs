//! Drop-in `Mutex`, `RwLock` and `Condvar` with std's API that block and mutex profiles see
//! (`PROFILE=block`, `PROFILE=mutex`): switch with one line,
//! `use profiled::sync::Mutex;` in place of `use std::sync::Mutex;`.
//!
//! With no block or mutex profile running, a lock costs what std's costs plus one relaxed
//! load (BENCHMARKS.md measures it). With one running, a lock that is free is taken as
//! std's is; one that is held is waited for with the wait timed and, when the wait ends,
//! recorded on the waiting stack (block profile). An unlock that ends others' waiting is
//! blamed for it on the unlocking stack (mutex profile): each unlock is charged the waiting
//! of every waiter since the previous unlock, so the blame adds up to the waiting and goes
//! to the holders that caused it (Go since 1.22 scales by the number of waiters the same
//! way).
//!
//! ```
//! use profiled::sync::{Condvar, Mutex};
//! use std::sync::Arc;
//!
//! let queue = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
//! let q = Arc::clone(&queue);
//! let producer = std::thread::spawn(move || {
//!     q.0.lock().unwrap().push(42);
//!     q.1.notify_one();
//! });
//! let (items, ready) = &*queue;
//! let items = ready.wait_while(items.lock().unwrap(), |v| v.is_empty()).unwrap();
//! assert_eq!(*items, [42]);
//! # drop(items);
//! producer.join().unwrap();
//! ```

// Denied, not forbidden: the watched raw lock implements unsafe traits and is allowed it.
#![deny(unsafe_code)]

#[cfg(feature = "parking_lot")]
pub mod parking_lot;
// lock_api's raw lock traits are unsafe to implement: the watched raw lock under
// `parking_lot`'s locks, and nothing else here, may say `unsafe`.
#[cfg(feature = "parking_lot")]
#[allow(unsafe_code)]
mod raw_lock;
#[cfg(feature = "tokio")]
pub mod tokio;

use std::cell::Cell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::Duration;

pub use std::sync::WaitTimeoutResult;

pub use crate::contention::{set_block_profile_rate, set_mutex_profile_fraction};

use crate::contention::Padded;
use crate::contention::{self, now};

/// Blame bookkeeping of one contended lock: the threads waiting for it and the sum of
/// their waits' starts, each counted from the previous unlock at the latest.
struct Acct {
    key: usize,
    waiting: u64,
    starts: u128,
    last_unlock: u64,
}

impl Acct {
    /// `n` threads begin to wait at `start`.
    fn join(&mut self, n: u64, start: u64) {
        self.waiting += n;
        self.starts += u128::from(n) * u128::from(start.max(self.last_unlock));
    }

    /// A thread that began to wait at `start` holds the lock.
    fn leave(&mut self, start: u64) {
        self.waiting = self.waiting.saturating_sub(1);
        self.starts = self
            .starts
            .saturating_sub(u128::from(start.max(self.last_unlock)));
    }
}

/// The locks being waited for while a mutex profile runs, by key, striped so that
/// unrelated locks rarely meet. Only waiters and the unlocks that end their wait come here.
static ACCTS: [std::sync::Mutex<Vec<Acct>>; 16] = [const { std::sync::Mutex::new(Vec::new()) }; 16];

/// Waiters registered in [`ACCTS`], over every lock: 0 lets an unlock skip the table. A
/// count per lock would need the guard to point back at its lock, and a guard one word
/// larger than std's makes every lock and unlock several times slower (BENCHMARKS.md).
/// On a cache line of its own: read on every unlock, it cost contended locks 15 % when a
/// neighbour written often made each read a miss.
static WAITING: Padded<AtomicU32> = Padded(AtomicU32::new(0));

/// Runs `f` on lock `key`'s bookkeeping; `create`: start one if there is none.
fn acct<R>(key: usize, create: bool, f: impl FnOnce(&mut Acct) -> R) -> Option<R> {
    let stripe = &ACCTS[(key >> 4) % ACCTS.len()];
    let mut accts = stripe
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let i = match accts.iter().position(|a| a.key == key) {
        Some(i) => i,
        None if create => {
            accts.push(Acct {
                key,
                waiting: 0,
                starts: 0,
                last_unlock: 0,
            });
            accts.len() - 1
        }
        None => return None,
    };
    let r = f(&mut accts[i]);
    if accts[i].waiting == 0 {
        accts.swap_remove(i);
    }
    Some(r)
}

/// A lock's key: the address of its data, which the guard knows without pointing back at
/// the lock, and the lock learns (`hint`) each time it is taken while a profile runs.
fn key<T: ?Sized>(data: &T) -> usize {
    (data as *const T).cast::<()>() as usize
}

/// Remembers the key of the lock whose data is `data` for its next waiters.
fn learn<T: ?Sized>(hint: &AtomicUsize, data: &T) {
    let k = key(data);
    if hint.load(Ordering::Relaxed) != k {
        hint.store(k, Ordering::Relaxed);
    }
}

/// A wait for a held lock, from its start.
pub(crate) struct Wait {
    /// The lock's key when registered for the unlock's blame (a mutex profile was running
    /// and the lock's key known); 0 otherwise.
    key: usize,
    start: u64,
}

impl Wait {
    fn begin(hint: &AtomicUsize) -> Wait {
        Wait::at(hint.load(Ordering::Relaxed))
    }

    /// A wait for the lock with key `key` (0: not known).
    pub(crate) fn at(key: usize) -> Wait {
        let start = now();
        let key = if contention::mutex_on() { key } else { 0 };
        if key != 0 {
            acct(key, true, |a| a.join(1, start));
            WAITING.0.fetch_add(1, Ordering::Relaxed);
        }
        Wait { key, start }
    }

    /// The lock is ours: the wait goes to the block profile.
    pub(crate) fn end(self) {
        if self.key != 0 {
            acct(self.key, false, |a| a.leave(self.start));
            WAITING.0.fetch_sub(1, Ordering::Relaxed);
        }
        contention::blocked(now().saturating_sub(self.start));
    }
}

/// The unlock of the lock whose data is `data`: blamed when threads wait for it.
#[inline]
fn unlocking<T: ?Sized>(data: &T) {
    unlocked(key(data));
}

/// The unlock (or release) of the lock with key `key`: blamed when threads wait for it.
#[inline]
pub(crate) fn unlocked(key: usize) {
    if WAITING.0.load(Ordering::Relaxed) != 0 {
        blame(key);
    }
}

/// An unlock while some lock has waiters: if they wait for this one, charges it their
/// waiting since its previous unlock.
#[cold]
#[inline(never)]
fn blame(key: usize) {
    let delay = acct(key, false, |a| {
        let t = now();
        let owed = (u128::from(a.waiting) * u128::from(t)).saturating_sub(a.starts);
        a.starts = u128::from(a.waiting) * u128::from(t);
        a.last_unlock = t;
        owed
    });
    if let Some(delay) = delay.filter(|&d| d > 0) {
        contention::unlocked(u64::try_from(delay).unwrap_or(u64::MAX));
    }
}

/// Maps std's lock result onto ours: the same guard, poisoned or not, wrapped.
fn map<G, H>(r: LockResult<G>, wrap: impl FnOnce(G) -> H) -> LockResult<H> {
    match r {
        Ok(g) => Ok(wrap(g)),
        Err(p) => Err(PoisonError::new(wrap(p.into_inner()))),
    }
}

/// A lock's result from its guard and whether it was poisoned when taken, which nobody can
/// change while it is held (only a holder's panic poisons). The watched paths return the
/// guard alone: two words come back in registers, where a whole `LockResult` (three)
/// comes back through memory, and the unwatched path then stores its guard there too, in
/// the critical section (a contended lock measured 5-8 % slower for it).
#[inline]
fn poisoned<G>(poisoned: bool, guard: G) -> LockResult<G> {
    if poisoned {
        Err(PoisonError::new(guard))
    } else {
        Ok(guard)
    }
}

fn map_try<G, H>(r: TryLockResult<G>, wrap: impl FnOnce(G) -> H) -> TryLockResult<H> {
    match r {
        Ok(g) => Ok(wrap(g)),
        Err(TryLockError::Poisoned(p)) => Err(TryLockError::Poisoned(PoisonError::new(wrap(
            p.into_inner(),
        )))),
        Err(TryLockError::WouldBlock) => Err(TryLockError::WouldBlock),
    }
}

/// [`std::sync::Mutex`], seen by block and mutex profiles.
///
/// ```
/// let counter = profiled::sync::Mutex::new(0);
/// *counter.lock().unwrap() += 1;
/// assert_eq!(counter.into_inner().unwrap(), 1);
/// ```
#[derive(Default)]
pub struct Mutex<T: ?Sized> {
    /// The lock's key, learnt when taken while a profile runs (see [`key`]).
    hint: AtomicUsize,
    inner: std::sync::Mutex<T>,
}

/// The guard of a [`Mutex`], as [`std::sync::MutexGuard`].
///
/// ```
/// let m = profiled::sync::Mutex::new(String::new());
/// let mut guard: profiled::sync::MutexGuard<'_, String> = m.lock().unwrap();
/// guard.push('x');
/// assert_eq!(*guard, "x");
/// ```
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized + 'a> {
    /// Always set but while a condition variable waits with it. Nothing else: a guard the
    /// size of std's is returned in registers.
    inner: Option<std::sync::MutexGuard<'a, T>>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    ///
    /// ```
    /// static M: profiled::sync::Mutex<u32> = profiled::sync::Mutex::new(0);
    /// assert_eq!(*M.lock().unwrap(), 0);
    /// ```
    pub const fn new(t: T) -> Mutex<T> {
        Mutex {
            hint: AtomicUsize::new(0),
            inner: std::sync::Mutex::new(t),
        }
    }

    /// Consumes the mutex, returning the data.
    ///
    /// ```
    /// assert_eq!(profiled::sync::Mutex::new(5).into_inner().unwrap(), 5);
    /// ```
    pub fn into_inner(self) -> LockResult<T> {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, waiting while another thread holds it; a wait is what block profiles record.
    ///
    /// ```
    /// let m = profiled::sync::Mutex::new(1);
    /// assert_eq!(*m.lock().unwrap(), 1);
    /// ```
    #[inline]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        if contention::on() {
            let g = guard(self.lock_watched());
            return poisoned(self.inner.is_poisoned(), g);
        }
        map(self.inner.lock(), guard)
    }

    /// The guard alone (see [`poisoned`]).
    #[inline(never)]
    fn lock_watched(&self) -> std::sync::MutexGuard<'_, T> {
        watched(&self.hint, self.inner.try_lock(), || self.inner.lock())
    }

    /// Locks if free, without waiting.
    ///
    /// ```
    /// let m = profiled::sync::Mutex::new(1);
    /// let held = m.lock().unwrap();
    /// assert!(m.try_lock().is_err());
    /// drop(held);
    /// assert!(m.try_lock().is_ok());
    /// ```
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        map_try(self.inner.try_lock(), guard)
    }

    /// Whether a thread panicked holding the lock.
    ///
    /// ```
    /// assert!(!profiled::sync::Mutex::new(()).is_poisoned());
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Clears the poisoned state.
    ///
    /// ```
    /// let m = profiled::sync::Mutex::new(());
    /// m.clear_poison();
    /// assert!(!m.is_poisoned());
    /// ```
    pub fn clear_poison(&self) {
        self.inner.clear_poison();
    }

    /// The data, through a unique borrow (no locking).
    ///
    /// ```
    /// let mut m = profiled::sync::Mutex::new(1);
    /// *m.get_mut().unwrap() = 2;
    /// assert_eq!(*m.lock().unwrap(), 2);
    /// ```
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.inner.get_mut()
    }
}

#[inline]
fn guard<T: ?Sized>(g: std::sync::MutexGuard<'_, T>) -> MutexGuard<'_, T> {
    MutexGuard { inner: Some(g) }
}

/// A lock's path while a contention profile runs: `attempt`'s guard if it did not have to
/// wait, else `wait()`'s, the wait timed; either way the lock's key is learnt for its next
/// waiters. The guard alone, poisoned or not: callers read the poisoning after (see
/// [`poisoned`]).
fn watched<G: Deref>(
    hint: &AtomicUsize,
    attempt: TryLockResult<G>,
    wait: impl FnOnce() -> LockResult<G>,
) -> G {
    let g = match attempt {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            let timed = Wait::begin(hint);
            let g = wait().unwrap_or_else(PoisonError::into_inner);
            timed.end();
            g
        }
    };
    learn(hint, &*g);
    g
}

impl<T> From<T> for Mutex<T> {
    fn from(t: T) -> Mutex<T> {
        Mutex::new(t)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: ?Sized> MutexGuard<'_, T> {
    fn std(&self) -> &std::sync::MutexGuard<'_, T> {
        match &self.inner {
            Some(g) => g,
            None => unreachable!("a guard is only empty inside Condvar::wait"),
        }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.std()
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.inner {
            Some(g) => g,
            None => unreachable!("a guard is only empty inside Condvar::wait"),
        }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // Before the std guard (a field) unlocks: the waiting ends with this unlock.
        if let Some(g) = &self.inner {
            unlocking(&**g);
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// [`std::sync::RwLock`], seen by block and mutex profiles: waits for a read or a write
/// lock are recorded on the waiting stack, and the unlock (read or write) that ends them is
/// blamed.
///
/// ```
/// let lock = profiled::sync::RwLock::new(vec![1]);
/// assert_eq!(lock.read().unwrap().len(), 1);
/// lock.write().unwrap().push(2);
/// assert_eq!(*lock.read().unwrap(), [1, 2]);
/// ```
#[derive(Default)]
pub struct RwLock<T: ?Sized> {
    hint: AtomicUsize,
    inner: std::sync::RwLock<T>,
}

/// A shared guard of a [`RwLock`], as [`std::sync::RwLockReadGuard`].
///
/// ```
/// let lock = profiled::sync::RwLock::new(1);
/// let r: profiled::sync::RwLockReadGuard<'_, i32> = lock.read().unwrap();
/// assert_eq!(*r, 1);
/// ```
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized + 'a> {
    inner: std::sync::RwLockReadGuard<'a, T>,
}

/// The exclusive guard of a [`RwLock`], as [`std::sync::RwLockWriteGuard`].
///
/// ```
/// let lock = profiled::sync::RwLock::new(1);
/// let mut w: profiled::sync::RwLockWriteGuard<'_, i32> = lock.write().unwrap();
/// *w += 1;
/// assert_eq!(*w, 2);
/// ```
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized + 'a> {
    inner: std::sync::RwLockWriteGuard<'a, T>,
}

impl<T> RwLock<T> {
    /// A new unlocked lock.
    ///
    /// ```
    /// static L: profiled::sync::RwLock<u32> = profiled::sync::RwLock::new(0);
    /// assert_eq!(*L.read().unwrap(), 0);
    /// ```
    pub const fn new(t: T) -> RwLock<T> {
        RwLock {
            hint: AtomicUsize::new(0),
            inner: std::sync::RwLock::new(t),
        }
    }

    /// Consumes the lock, returning the data.
    ///
    /// ```
    /// assert_eq!(profiled::sync::RwLock::new(3).into_inner().unwrap(), 3);
    /// ```
    pub fn into_inner(self) -> LockResult<T> {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading, waiting while a writer holds it.
    ///
    /// ```
    /// let lock = profiled::sync::RwLock::new(1);
    /// let (a, b) = (lock.read().unwrap(), lock.read().unwrap());
    /// assert_eq!(*a + *b, 2);
    /// ```
    #[inline]
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        if contention::on() {
            let inner = self.read_watched();
            return poisoned(self.inner.is_poisoned(), RwLockReadGuard { inner });
        }
        map(self.inner.read(), |inner| RwLockReadGuard { inner })
    }

    #[inline(never)]
    fn read_watched(&self) -> std::sync::RwLockReadGuard<'_, T> {
        watched(&self.hint, self.inner.try_read(), || self.inner.read())
    }

    /// Locks for writing, waiting while anyone holds it.
    ///
    /// ```
    /// let lock = profiled::sync::RwLock::new(1);
    /// *lock.write().unwrap() = 2;
    /// assert_eq!(*lock.read().unwrap(), 2);
    /// ```
    #[inline]
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        if contention::on() {
            let inner = self.write_watched();
            return poisoned(self.inner.is_poisoned(), RwLockWriteGuard { inner });
        }
        map(self.inner.write(), |inner| RwLockWriteGuard { inner })
    }

    #[inline(never)]
    fn write_watched(&self) -> std::sync::RwLockWriteGuard<'_, T> {
        watched(&self.hint, self.inner.try_write(), || self.inner.write())
    }

    /// Locks for reading if no writer holds it, without waiting.
    ///
    /// ```
    /// let lock = profiled::sync::RwLock::new(1);
    /// let w = lock.write().unwrap();
    /// assert!(lock.try_read().is_err());
    /// # drop(w);
    /// ```
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        map_try(self.inner.try_read(), |inner| RwLockReadGuard { inner })
    }

    /// Locks for writing if free, without waiting.
    ///
    /// ```
    /// let lock = profiled::sync::RwLock::new(1);
    /// let r = lock.read().unwrap();
    /// assert!(lock.try_write().is_err());
    /// # drop(r);
    /// ```
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        map_try(self.inner.try_write(), |inner| RwLockWriteGuard { inner })
    }

    /// Whether a thread panicked holding the write lock.
    ///
    /// ```
    /// assert!(!profiled::sync::RwLock::new(()).is_poisoned());
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Clears the poisoned state.
    ///
    /// ```
    /// let l = profiled::sync::RwLock::new(());
    /// l.clear_poison();
    /// assert!(!l.is_poisoned());
    /// ```
    pub fn clear_poison(&self) {
        self.inner.clear_poison();
    }

    /// The data, through a unique borrow (no locking).
    ///
    /// ```
    /// let mut l = profiled::sync::RwLock::new(1);
    /// *l.get_mut().unwrap() = 2;
    /// assert_eq!(*l.read().unwrap(), 2);
    /// ```
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.inner.get_mut()
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(t: T) -> RwLock<T> {
        RwLock::new(t)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        unlocking(&*self.inner);
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        unlocking(&*self.inner);
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// [`std::sync::Condvar`] for profiled's [`Mutex`]: a wait on it is recorded by block
/// profiles (as Go records `sync.Cond.Wait`), releasing the mutex to wait ends others'
/// waiting like an unlock, and a thread a notify wakes waits for the mutex like any other
/// (the unlocks it waits for are blamed in mutex profiles, as Go blames those that keep
/// `Cond.Wait`'s `Lock` waiting).
///
/// ```
/// use profiled::sync::{Condvar, Mutex};
/// use std::time::Duration;
/// let (m, cv) = (Mutex::new(false), Condvar::new());
/// let (guard, timeout) = cv.wait_timeout(m.lock().unwrap(), Duration::from_millis(1)).unwrap();
/// assert!(timeout.timed_out() && !*guard);
/// ```
#[derive(Default)]
pub struct Condvar {
    inner: std::sync::Condvar,
    woken: Woken,
}

/// A condition variable's waiters, for mutex profiles. A thread that a notify wakes must
/// take the mutex back, and std's wait does that inside, where no wait can be timed: so the
/// notify registers the threads it wakes as waiters of the mutex (in [`ACCTS`], as a lock
/// that has to wait does), and each woken thread, once it holds the mutex again, ends one
/// registration. Only while a mutex profile runs; otherwise a notify reads one flag.
#[derive(Default)]
struct Woken {
    /// The mutex's key, from the latest wait.
    key: AtomicUsize,
    /// Threads inside a wait that counts here (high half) and registrations not ended yet
    /// (low half): one word, so that a notify never registers more threads than wait
    /// unwoken, and no registration outlives the threads that could end it.
    state: AtomicU64,
    /// When the latest registration began.
    at: AtomicU64,
}

const ONE_WAITER: u64 = 1 << 32;

/// A [`Woken::state`]'s threads inside a wait and registrations not ended.
fn waiters_and_woken(state: u64) -> (u64, u64) {
    (state >> 32, state & 0xffff_ffff)
}

impl Woken {
    const fn new() -> Woken {
        Woken {
            key: AtomicUsize::new(0),
            state: AtomicU64::new(0),
            at: AtomicU64::new(0),
        }
    }

    /// A thread begins to wait with the mutex of key `key`: whether it counts here (a
    /// mutex profile runs).
    fn enter(&self, key: usize) -> bool {
        if !contention::mutex_on() {
            return false;
        }
        self.key.store(key, Ordering::Relaxed);
        self.state.fetch_add(ONE_WAITER, Ordering::Relaxed);
        true
    }

    /// A thread that counted here holds the mutex again: it ends a registration if one is
    /// left (its own, or that of a thread woken with it that has not come back yet).
    fn leave(&self) {
        // The closure always gives a value: either way, `old` is the state before.
        let (Ok(old) | Err(old)) =
            self.state
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    let (waiters, woken) = waiters_and_woken(s);
                    Some(((waiters - 1) << 32) | woken.saturating_sub(1))
                });
        if waiters_and_woken(old).1 == 0 {
            return;
        }
        let start = self.at.load(Ordering::Relaxed);
        let ended = acct(self.key.load(Ordering::Relaxed), false, |a| a.leave(start));
        if ended.is_some() {
            WAITING.0.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A notify that wakes up to `n` threads: registers those not woken yet as waiters of
    /// the mutex, from now.
    fn notify(&self, n: u64) {
        if !contention::mutex_on() {
            return;
        }
        // Threads a notify can register: those waiting and not woken yet, at most `n`.
        let wakes = |s: u64| {
            let (waiters, woken) = waiters_and_woken(s);
            n.min(waiters - woken)
        };
        if wakes(self.state.load(Ordering::Relaxed)) == 0 {
            return;
        }
        let t = now();
        let mut added = 0;
        // Under the table's stripe lock, so that a woken thread finds its registration
        // there when it ends it.
        acct(self.key.load(Ordering::Relaxed), true, |a| {
            // The closure always gives a value: either way, `old` is the state before.
            let (Ok(old) | Err(old)) =
                self.state
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(s + wakes(s)));
            added = wakes(old);
            a.join(added, t);
        });
        if added > 0 {
            self.at.store(t, Ordering::Relaxed);
            WAITING.0.fetch_add(added as u32, Ordering::Relaxed);
        }
    }
}

impl Condvar {
    /// A new condition variable.
    ///
    /// ```
    /// static READY: profiled::sync::Condvar = profiled::sync::Condvar::new();
    /// READY.notify_all();
    /// ```
    pub const fn new() -> Condvar {
        Condvar {
            inner: std::sync::Condvar::new(),
            woken: Woken::new(),
        }
    }

    /// Runs a std wait on the guard's mutex and records it. `wait` calls the [`Sleep`]'s
    /// `release` before each time std's wait releases the mutex, and its `back` each time
    /// it holds it again (std's `*_while` waits loop inside, calling the condition between).
    fn waiting<'a, T, R>(
        &self,
        mut guard: MutexGuard<'a, T>,
        wait: impl FnOnce(
            &std::sync::Condvar,
            std::sync::MutexGuard<'a, T>,
            &Sleep<'_>,
        ) -> LockResult<(std::sync::MutexGuard<'a, T>, R)>,
    ) -> LockResult<(MutexGuard<'a, T>, R)> {
        let Some(inner) = guard.inner.take() else {
            unreachable!("a guard is only empty inside Condvar::wait")
        };
        let start = contention::on().then(now);
        let sleep = Sleep {
            woken: &self.woken,
            inside: Cell::new(false),
            waited: Cell::new(false),
        };
        let r = wait(&self.inner, inner, &sleep);
        sleep.back();
        if let (Some(start), true) = (start, sleep.waited.get()) {
            contention::blocked(now().saturating_sub(start));
        }
        map(r, |(g, extra)| (self::guard(g), extra))
    }

    /// Releases the guard's mutex and waits for a notification, then locks it again.
    ///
    /// ```
    /// use profiled::sync::{Condvar, Mutex};
    /// use std::sync::Arc;
    /// let pair = Arc::new((Mutex::new(false), Condvar::new()));
    /// let p = Arc::clone(&pair);
    /// std::thread::spawn(move || { *p.0.lock().unwrap() = true; p.1.notify_one(); });
    /// let mut done = pair.0.lock().unwrap();
    /// while !*done { done = pair.1.wait(done).unwrap(); }
    /// ```
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        let r = self.waiting(guard, |cv, g, sleep| {
            sleep.release(&*g);
            map(cv.wait(g), |g| (g, ()))
        });
        map(r, |(g, ())| g)
    }

    /// Waits while `condition` holds.
    ///
    /// ```
    /// use profiled::sync::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(3), Condvar::new());
    /// let g = cv.wait_while(m.lock().unwrap(), |n| *n == 0).unwrap();
    /// assert_eq!(*g, 3);
    /// ```
    pub fn wait_while<'a, T, F>(
        &self,
        guard: MutexGuard<'a, T>,
        condition: F,
    ) -> LockResult<MutexGuard<'a, T>>
    where
        F: FnMut(&mut T) -> bool,
    {
        let r = self.waiting(guard, |cv, g, sleep| {
            map(cv.wait_while(g, sleep.between(condition)), |g| (g, ()))
        });
        map(r, |(g, ())| g)
    }

    /// Waits for a notification or until `dur` has passed.
    ///
    /// ```
    /// use profiled::sync::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(()), Condvar::new());
    /// let (_g, t) = cv.wait_timeout(m.lock().unwrap(), std::time::Duration::ZERO).unwrap();
    /// assert!(t.timed_out());
    /// ```
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.waiting(guard, |cv, g, sleep| {
            sleep.release(&*g);
            cv.wait_timeout(g, dur)
        })
    }

    /// Waits while `condition` holds, at most `dur`.
    ///
    /// ```
    /// use profiled::sync::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(0), Condvar::new());
    /// let (g, t) = cv
    ///     .wait_timeout_while(m.lock().unwrap(), std::time::Duration::from_millis(1), |n| *n == 0)
    ///     .unwrap();
    /// assert!(t.timed_out() && *g == 0);
    /// ```
    pub fn wait_timeout_while<'a, T, F>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
        condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)>
    where
        F: FnMut(&mut T) -> bool,
    {
        self.waiting(guard, |cv, g, sleep| {
            cv.wait_timeout_while(g, dur, sleep.between(condition))
        })
    }

    /// Wakes one waiting thread.
    ///
    /// ```
    /// profiled::sync::Condvar::new().notify_one();
    /// ```
    pub fn notify_one(&self) {
        self.woken.notify(1);
        self.inner.notify_one();
    }

    /// Wakes every waiting thread.
    ///
    /// ```
    /// profiled::sync::Condvar::new().notify_all();
    /// ```
    pub fn notify_all(&self) {
        self.woken.notify(u64::from(u32::MAX));
        self.inner.notify_all();
    }
}

/// One call's waits on a [`Condvar`]: what each release of the mutex and each return to it
/// must tell the mutex's bookkeeping.
struct Sleep<'c> {
    woken: &'c Woken,
    /// Between a release counted in `woken` and the return to the mutex.
    inside: Cell<bool>,
    /// Whether the call released the mutex at all (a `*_while` whose condition is false
    /// from the start does not wait, and is no block event).
    waited: Cell<bool>,
}

impl Sleep<'_> {
    /// std's wait is about to release the mutex whose data is `data` and sleep: the
    /// release ends others' waiting like an unlock, and this thread becomes one a notify
    /// can wake.
    fn release<T: ?Sized>(&self, data: &T) {
        self.waited.set(true);
        unlocking(data);
        if !self.inside.get() {
            self.inside.set(self.woken.enter(key(data)));
        }
    }

    /// The thread holds the mutex again.
    fn back(&self) {
        if self.inside.replace(false) {
            self.woken.leave();
        }
    }

    /// `condition` as std's `*_while` waits call it: with the mutex held, after each
    /// wake-up, and before sleeping again when it holds.
    fn between<T: ?Sized>(
        &self,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> impl FnMut(&mut T) -> bool {
        move |data| {
            self.back();
            let sleeps = condition(data);
            if sleeps {
                self.release(data);
            }
            sleeps
        }
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}
