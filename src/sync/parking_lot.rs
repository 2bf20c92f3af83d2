//! parking_lot's locks, seen by block and mutex profiles (feature `parking_lot`): switch
//! with one line, `use profiled::sync::parking_lot::Mutex;` in place of
//! `use parking_lot::Mutex;`.
//!
//! The locks are parking_lot's own, through lock_api as parking_lot builds them, over a
//! [`Watched`] raw lock: the whole API (`lock`, `try_lock_for`, `map`, upgradable reads,
//! `unlock_fair`, `const fn new`, ...) is parking_lot's, and waits and the unlocks that end
//! them are recorded as for [`super::Mutex`]. parking_lot's `Condvar` works only with its
//! own mutex, so [`Condvar`] here is one for these locks, with the same API.
//!
//! ```
//! use profiled::sync::parking_lot::{Condvar, Mutex};
//! use std::sync::Arc;
//!
//! let queue = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
//! let q = Arc::clone(&queue);
//! let producer = std::thread::spawn(move || {
//!     q.0.lock().push(42);
//!     q.1.notify_one();
//! });
//! let (items, ready) = &*queue;
//! let mut items = items.lock();
//! ready.wait_while(&mut items, |v| v.is_empty());
//! assert_eq!(*items, [42]);
//! # drop(items);
//! producer.join().unwrap();
//! ```

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

pub use crate::sync::raw_lock::Watched;
pub use parking_lot::lock_api;

use crate::contention::{self, now};

/// parking_lot's raw mutex, watched: what [`Mutex`] is built on.
///
/// ```
/// use profiled::sync::parking_lot::{lock_api::RawMutex as _, RawMutex};
/// let raw = RawMutex::INIT;
/// assert!(raw.try_lock());
/// ```
pub type RawMutex = Watched<parking_lot::RawMutex>;

/// parking_lot's raw fair mutex, watched: what [`FairMutex`] is built on.
///
/// ```
/// use profiled::sync::parking_lot::{lock_api::RawMutex as _, RawFairMutex};
/// let raw = RawFairMutex::INIT;
/// assert!(raw.try_lock());
/// ```
pub type RawFairMutex = Watched<parking_lot::RawFairMutex>;

/// parking_lot's raw reader-writer lock, watched: what [`RwLock`] is built on.
///
/// ```
/// use profiled::sync::parking_lot::{lock_api::RawRwLock as _, RawRwLock};
/// let raw = RawRwLock::INIT;
/// assert!(raw.try_lock_shared() && raw.try_lock_shared());
/// ```
pub type RawRwLock = Watched<parking_lot::RawRwLock>;

/// [`parking_lot::Mutex`], seen by block and mutex profiles.
///
/// ```
/// static COUNT: profiled::sync::parking_lot::Mutex<u32> =
///     profiled::sync::parking_lot::Mutex::new(0);
/// *COUNT.lock() += 1;
/// assert_eq!(*COUNT.lock(), 1);
/// ```
pub type Mutex<T> = lock_api::Mutex<RawMutex, T>;

/// The guard of a [`Mutex`], as [`parking_lot::MutexGuard`].
///
/// ```
/// let m = profiled::sync::parking_lot::Mutex::new(String::new());
/// let mut guard: profiled::sync::parking_lot::MutexGuard<'_, String> = m.lock();
/// guard.push('x');
/// assert_eq!(*guard, "x");
/// ```
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawMutex, T>;

/// A [`MutexGuard`] mapped to part of the data, as [`parking_lot::MappedMutexGuard`].
///
/// ```
/// use profiled::sync::parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
/// let m = Mutex::new((1, 2));
/// let second: MappedMutexGuard<'_, i32> = MutexGuard::map(m.lock(), |p| &mut p.1);
/// assert_eq!(*second, 2);
/// ```
pub type MappedMutexGuard<'a, T> = lock_api::MappedMutexGuard<'a, RawMutex, T>;

/// [`parking_lot::FairMutex`], seen by block and mutex profiles.
///
/// ```
/// let m = profiled::sync::parking_lot::FairMutex::new(1);
/// assert_eq!(*m.lock(), 1);
/// ```
pub type FairMutex<T> = lock_api::Mutex<RawFairMutex, T>;

/// The guard of a [`FairMutex`], as [`parking_lot::FairMutexGuard`].
///
/// ```
/// let m = profiled::sync::parking_lot::FairMutex::new(1);
/// let guard: profiled::sync::parking_lot::FairMutexGuard<'_, i32> = m.lock();
/// assert_eq!(*guard, 1);
/// ```
pub type FairMutexGuard<'a, T> = lock_api::MutexGuard<'a, RawFairMutex, T>;

/// [`parking_lot::ReentrantMutex`], seen by block and mutex profiles: only the outermost
/// lock of a thread can wait, and only its last unlock is blamed.
///
/// ```
/// let m = profiled::sync::parking_lot::ReentrantMutex::new(1);
/// let outer = m.lock();
/// let inner = m.lock();
/// assert_eq!(*outer + *inner, 2);
/// ```
pub type ReentrantMutex<T> = lock_api::ReentrantMutex<RawMutex, parking_lot::RawThreadId, T>;

/// The guard of a [`ReentrantMutex`], as [`parking_lot::ReentrantMutexGuard`].
///
/// ```
/// let m = profiled::sync::parking_lot::ReentrantMutex::new(1);
/// let guard: profiled::sync::parking_lot::ReentrantMutexGuard<'_, i32> = m.lock();
/// assert_eq!(*guard, 1);
/// ```
pub type ReentrantMutexGuard<'a, T> =
    lock_api::ReentrantMutexGuard<'a, RawMutex, parking_lot::RawThreadId, T>;

/// [`parking_lot::RwLock`], seen by block and mutex profiles: waits for read, write and
/// upgradable locks and for upgrades are recorded, and an unlock or downgrade that ends
/// them is blamed.
///
/// ```
/// let lock = profiled::sync::parking_lot::RwLock::new(vec![1]);
/// assert_eq!(lock.read().len(), 1);
/// lock.write().push(2);
/// assert_eq!(*lock.read(), [1, 2]);
/// ```
pub type RwLock<T> = lock_api::RwLock<RawRwLock, T>;

/// A read guard of an [`RwLock`], as [`parking_lot::RwLockReadGuard`].
///
/// ```
/// let lock = profiled::sync::parking_lot::RwLock::new(1);
/// let guard: profiled::sync::parking_lot::RwLockReadGuard<'_, i32> = lock.read();
/// assert_eq!(*guard, 1);
/// ```
pub type RwLockReadGuard<'a, T> = lock_api::RwLockReadGuard<'a, RawRwLock, T>;

/// The write guard of an [`RwLock`], as [`parking_lot::RwLockWriteGuard`].
///
/// ```
/// let lock = profiled::sync::parking_lot::RwLock::new(1);
/// let mut guard: profiled::sync::parking_lot::RwLockWriteGuard<'_, i32> = lock.write();
/// *guard = 2;
/// ```
pub type RwLockWriteGuard<'a, T> = lock_api::RwLockWriteGuard<'a, RawRwLock, T>;

/// An upgradable read guard of an [`RwLock`], as
/// [`parking_lot::RwLockUpgradableReadGuard`].
///
/// ```
/// use profiled::sync::parking_lot::{RwLock, RwLockUpgradableReadGuard};
/// let lock = RwLock::new(1);
/// let read = lock.upgradable_read();
/// let mut write = RwLockUpgradableReadGuard::upgrade(read);
/// *write = 2;
/// ```
pub type RwLockUpgradableReadGuard<'a, T> = lock_api::RwLockUpgradableReadGuard<'a, RawRwLock, T>;

/// Whether a timed [`Condvar`] wait returned because its time ran out, as
/// [`parking_lot::WaitTimeoutResult`].
///
/// ```
/// use profiled::sync::parking_lot::{Condvar, Mutex};
/// use std::time::Duration;
/// let (m, cv) = (Mutex::new(()), Condvar::new());
/// assert!(cv.wait_for(&mut m.lock(), Duration::from_millis(1)).timed_out());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// Whether the wait ended because its time ran out.
    ///
    /// ```
    /// use profiled::sync::parking_lot::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(()), Condvar::new());
    /// let r = cv.wait_for(&mut m.lock(), std::time::Duration::ZERO);
    /// assert!(r.timed_out());
    /// ```
    pub fn timed_out(self) -> bool {
        self.0
    }
}

/// A condition variable for [`Mutex`], with [`parking_lot::Condvar`]'s API: a wait on it is
/// recorded by block profiles (as Go records `sync.Cond.Wait`), and releasing the mutex to
/// wait ends others' waiting like an unlock.
///
/// Built as C++'s `condition_variable_any` is, since parking_lot's condition variable takes
/// only its own mutex's guard: a waiter takes an inner gate before it releases the mutex,
/// and a notifier takes the gate to notify, so no notification falls between the release
/// and the wait. Re-taking the mutex after the wait is a lock like any other, recorded if it
/// has to wait.
///
/// ```
/// use profiled::sync::parking_lot::{Condvar, Mutex};
/// use std::sync::Arc;
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let p = Arc::clone(&pair);
/// std::thread::spawn(move || {
///     *p.0.lock() = true;
///     p.1.notify_all();
/// });
/// let mut ready = pair.0.lock();
/// while !*ready {
///     pair.1.wait(&mut ready);
/// }
/// ```
#[derive(Debug, Default)]
pub struct Condvar {
    inner: parking_lot::Condvar,
    gate: parking_lot::Mutex<()>,
}

impl Condvar {
    /// A new condition variable.
    ///
    /// ```
    /// static READY: profiled::sync::parking_lot::Condvar =
    ///     profiled::sync::parking_lot::Condvar::new();
    /// assert!(!READY.notify_one());
    /// ```
    pub const fn new() -> Condvar {
        Condvar {
            inner: parking_lot::Condvar::new(),
            gate: parking_lot::Mutex::new(()),
        }
    }

    /// Wakes one waiting thread; whether there was one.
    ///
    /// ```
    /// let cv = profiled::sync::parking_lot::Condvar::new();
    /// assert!(!cv.notify_one());
    /// ```
    pub fn notify_one(&self) -> bool {
        let _gate = self.gate.lock();
        self.inner.notify_one()
    }

    /// Wakes every waiting thread; how many there were.
    ///
    /// ```
    /// let cv = profiled::sync::parking_lot::Condvar::new();
    /// assert_eq!(cv.notify_all(), 0);
    /// ```
    pub fn notify_all(&self) -> usize {
        let _gate = self.gate.lock();
        self.inner.notify_all()
    }

    /// Releases the guard's mutex, runs `wait` on the gate, records the wait and takes the
    /// mutex again.
    fn waiting<T: ?Sized>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        wait: impl FnOnce(&parking_lot::Condvar, &mut parking_lot::MutexGuard<'_, ()>) -> bool,
    ) -> WaitTimeoutResult {
        let mut gate = self.gate.lock();
        let start = contention::on().then(now);
        let timed_out = MutexGuard::unlocked(guard, move || {
            let timed_out = wait(&self.inner, &mut gate);
            drop(gate);
            if let Some(start) = start {
                contention::blocked(now().saturating_sub(start));
            }
            timed_out
        });
        WaitTimeoutResult(timed_out)
    }

    /// Releases the guard's mutex and waits for a notification, then locks it again.
    ///
    /// ```
    /// use profiled::sync::parking_lot::{Condvar, Mutex};
    /// use std::sync::Arc;
    /// let pair = Arc::new((Mutex::new(0), Condvar::new()));
    /// let p = Arc::clone(&pair);
    /// std::thread::spawn(move || {
    ///     *p.0.lock() = 7;
    ///     p.1.notify_one();
    /// });
    /// let mut n = pair.0.lock();
    /// while *n == 0 {
    ///     pair.1.wait(&mut n);
    /// }
    /// assert_eq!(*n, 7);
    /// ```
    pub fn wait<T: ?Sized>(&self, guard: &mut MutexGuard<'_, T>) {
        self.waiting(guard, |cv, gate| {
            cv.wait(gate);
            false
        });
    }

    /// Waits for a notification or until `timeout`.
    ///
    /// ```
    /// use profiled::sync::parking_lot::{Condvar, Mutex};
    /// use std::time::{Duration, Instant};
    /// let (m, cv) = (Mutex::new(()), Condvar::new());
    /// let r = cv.wait_until(&mut m.lock(), Instant::now() + Duration::from_millis(1));
    /// assert!(r.timed_out());
    /// ```
    pub fn wait_until<T: ?Sized>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Instant,
    ) -> WaitTimeoutResult {
        self.waiting(guard, |cv, gate| cv.wait_until(gate, timeout).timed_out())
    }

    /// Waits for a notification or until `timeout` has passed.
    ///
    /// ```
    /// use profiled::sync::parking_lot::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(()), Condvar::new());
    /// let r = cv.wait_for(&mut m.lock(), std::time::Duration::from_millis(1));
    /// assert!(r.timed_out());
    /// ```
    pub fn wait_for<T: ?Sized>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
    ) -> WaitTimeoutResult {
        self.waiting(guard, |cv, gate| cv.wait_for(gate, timeout).timed_out())
    }

    /// Waits while `condition` holds.
    ///
    /// ```
    /// use profiled::sync::parking_lot::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(3), Condvar::new());
    /// let mut n = m.lock();
    /// cv.wait_while(&mut n, |n| *n == 0); // returns at once: the condition is false
    /// assert_eq!(*n, 3);
    /// ```
    pub fn wait_while<T: ?Sized, F>(&self, guard: &mut MutexGuard<'_, T>, mut condition: F)
    where
        F: FnMut(&mut T) -> bool,
    {
        while condition(guard) {
            self.wait(guard);
        }
    }

    /// Waits while `condition` holds, until `timeout` at the latest.
    ///
    /// ```
    /// use profiled::sync::parking_lot::{Condvar, Mutex};
    /// use std::time::{Duration, Instant};
    /// let (m, cv) = (Mutex::new(0), Condvar::new());
    /// let deadline = Instant::now() + Duration::from_millis(1);
    /// assert!(cv.wait_while_until(&mut m.lock(), |n| *n == 0, deadline).timed_out());
    /// ```
    pub fn wait_while_until<T: ?Sized, F>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        mut condition: F,
        timeout: Instant,
    ) -> WaitTimeoutResult
    where
        F: FnMut(&mut T) -> bool,
    {
        let mut result = WaitTimeoutResult(false);
        while !result.timed_out() && condition(guard) {
            result = self.wait_until(guard, timeout);
        }
        result
    }

    /// Waits while `condition` holds, `timeout` at the most.
    ///
    /// ```
    /// use profiled::sync::parking_lot::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(0), Condvar::new());
    /// let r = cv.wait_while_for(&mut m.lock(), |n| *n == 0, std::time::Duration::from_millis(1));
    /// assert!(r.timed_out());
    /// ```
    pub fn wait_while_for<T: ?Sized, F>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        condition: F,
        timeout: Duration,
    ) -> WaitTimeoutResult
    where
        F: FnMut(&mut T) -> bool,
    {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_while_until(guard, condition, deadline),
            // As parking_lot: a timeout too far to represent is no timeout.
            None => {
                self.wait_while(guard, condition);
                WaitTimeoutResult(false)
            }
        }
    }
}
