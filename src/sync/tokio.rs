//! tokio's `Mutex`, `RwLock` and `Semaphore`, seen by block and mutex profiles (feature
//! `tokio`): `use profiled::sync::tokio::Mutex;` in place of `use tokio::sync::Mutex;`.
//!
//! A wait is the time a task spent in `lock().await` (or `read`, `write`, `acquire`) for a
//! lock it could not take at once; its stack is the task's as it resumes with the lock,
//! which runs through the `async fn`s that awaited it. The unlock (or the permit's release)
//! that ends others' waiting is blamed as for [`super::Mutex`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let m = profiled::sync::tokio::Mutex::new(0);
//! *m.lock().await += 1;
//! assert_eq!(*m.lock().await, 1);
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicUsize;

pub use ::tokio::sync::{AcquireError, TryAcquireError, TryLockError};

use super::{Wait, key, learn, unlocked};
use crate::contention;

/// A lock's path while a contention profile runs, as `super::watched` for std's: the
/// try's guard if it did not have to wait, else `wait`'s, the wait timed; either way the
/// lock's key is learnt for its next waiters.
async fn watched<G: Deref, E, F: Future<Output = G>>(
    hint: &AtomicUsize,
    attempt: Result<G, E>,
    wait: impl FnOnce() -> F,
) -> G {
    let g = match attempt {
        Ok(g) => g,
        Err(_) => {
            let timed = Wait::begin(hint);
            let g = wait().await;
            timed.end();
            g
        }
    };
    learn(hint, &*g);
    g
}

/// [`tokio::sync::Mutex`], seen by block and mutex profiles.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let m = profiled::sync::tokio::Mutex::new(vec![1]);
/// m.lock().await.push(2);
/// assert_eq!(m.into_inner(), [1, 2]);
/// # });
/// ```
#[derive(Default)]
pub struct Mutex<T: ?Sized> {
    hint: AtomicUsize,
    inner: ::tokio::sync::Mutex<T>,
}

/// The guard of a tokio [`Mutex`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let m = profiled::sync::tokio::Mutex::new(1);
/// let g: profiled::sync::tokio::MutexGuard<'_, i32> = m.lock().await;
/// assert_eq!(*g, 1);
/// # });
/// ```
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    inner: ::tokio::sync::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    ///
    /// ```
    /// let m = profiled::sync::tokio::Mutex::new(5);
    /// assert_eq!(m.into_inner(), 5);
    /// ```
    pub fn new(t: T) -> Mutex<T> {
        Mutex {
            hint: AtomicUsize::new(0),
            inner: ::tokio::sync::Mutex::new(t),
        }
    }

    /// Consumes the mutex, returning the data.
    ///
    /// ```
    /// assert_eq!(profiled::sync::tokio::Mutex::new(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, waiting (asynchronously) while another task holds it; a wait is what block
    /// profiles record.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let m = profiled::sync::tokio::Mutex::new(1);
    /// assert_eq!(*m.lock().await, 1);
    /// # });
    /// ```
    pub async fn lock(&self) -> MutexGuard<'_, T> {
        if !contention::on() {
            return MutexGuard {
                inner: self.inner.lock().await,
            };
        }
        let inner = watched(&self.hint, self.inner.try_lock(), || self.inner.lock()).await;
        MutexGuard { inner }
    }

    /// Locks if free, without waiting.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let m = profiled::sync::tokio::Mutex::new(1);
    /// let held = m.lock().await;
    /// assert!(m.try_lock().is_err());
    /// # drop(held);
    /// # });
    /// ```
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, TryLockError> {
        self.inner.try_lock().map(|inner| MutexGuard { inner })
    }

    /// The data, through a unique borrow (no locking).
    ///
    /// ```
    /// let mut m = profiled::sync::tokio::Mutex::new(1);
    /// *m.get_mut() = 2;
    /// assert_eq!(m.into_inner(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        unlocked(key(&*self.inner));
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// [`tokio::sync::RwLock`], seen by block and mutex profiles.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let l = profiled::sync::tokio::RwLock::new(1);
/// *l.write().await += 1;
/// assert_eq!(*l.read().await, 2);
/// # });
/// ```
#[derive(Default)]
pub struct RwLock<T: ?Sized> {
    hint: AtomicUsize,
    inner: ::tokio::sync::RwLock<T>,
}

/// A shared guard of a tokio [`RwLock`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let l = profiled::sync::tokio::RwLock::new(1);
/// let r: profiled::sync::tokio::RwLockReadGuard<'_, i32> = l.read().await;
/// assert_eq!(*r, 1);
/// # });
/// ```
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    inner: ::tokio::sync::RwLockReadGuard<'a, T>,
}

/// The exclusive guard of a tokio [`RwLock`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let l = profiled::sync::tokio::RwLock::new(1);
/// let mut w: profiled::sync::tokio::RwLockWriteGuard<'_, i32> = l.write().await;
/// *w = 2;
/// # });
/// ```
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    inner: ::tokio::sync::RwLockWriteGuard<'a, T>,
}

impl<T> RwLock<T> {
    /// A new unlocked lock.
    ///
    /// ```
    /// assert_eq!(profiled::sync::tokio::RwLock::new(4).into_inner(), 4);
    /// ```
    pub fn new(t: T) -> RwLock<T> {
        RwLock {
            hint: AtomicUsize::new(0),
            inner: ::tokio::sync::RwLock::new(t),
        }
    }

    /// Consumes the lock, returning the data.
    ///
    /// ```
    /// assert_eq!(profiled::sync::tokio::RwLock::new(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading, waiting while a writer holds it or waits.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let l = profiled::sync::tokio::RwLock::new(1);
    /// let (a, b) = (l.read().await, l.read().await);
    /// assert_eq!(*a + *b, 2);
    /// # });
    /// ```
    pub async fn read(&self) -> RwLockReadGuard<'_, T> {
        if !contention::on() {
            return RwLockReadGuard {
                inner: self.inner.read().await,
            };
        }
        let inner = watched(&self.hint, self.inner.try_read(), || self.inner.read()).await;
        RwLockReadGuard { inner }
    }

    /// Locks for writing, waiting while anyone holds it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let l = profiled::sync::tokio::RwLock::new(1);
    /// *l.write().await = 2;
    /// assert_eq!(*l.read().await, 2);
    /// # });
    /// ```
    pub async fn write(&self) -> RwLockWriteGuard<'_, T> {
        if !contention::on() {
            return RwLockWriteGuard {
                inner: self.inner.write().await,
            };
        }
        let inner = watched(&self.hint, self.inner.try_write(), || self.inner.write()).await;
        RwLockWriteGuard { inner }
    }

    /// Locks for reading if no writer holds it, without waiting.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let l = profiled::sync::tokio::RwLock::new(1);
    /// let w = l.write().await;
    /// assert!(l.try_read().is_err());
    /// # drop(w);
    /// # });
    /// ```
    pub fn try_read(&self) -> Result<RwLockReadGuard<'_, T>, TryLockError> {
        self.inner.try_read().map(|inner| RwLockReadGuard { inner })
    }

    /// Locks for writing if free, without waiting.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let l = profiled::sync::tokio::RwLock::new(1);
    /// let r = l.read().await;
    /// assert!(l.try_write().is_err());
    /// # drop(r);
    /// # });
    /// ```
    pub fn try_write(&self) -> Result<RwLockWriteGuard<'_, T>, TryLockError> {
        self.inner
            .try_write()
            .map(|inner| RwLockWriteGuard { inner })
    }

    /// The data, through a unique borrow (no locking).
    ///
    /// ```
    /// let mut l = profiled::sync::tokio::RwLock::new(1);
    /// *l.get_mut() = 2;
    /// assert_eq!(l.into_inner(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        unlocked(key(&*self.inner));
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        unlocked(key(&*self.inner));
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

/// [`tokio::sync::Semaphore`], seen by block and mutex profiles: a task waiting for a
/// permit is a block event; the release that ends others' waiting is blamed.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let s = profiled::sync::tokio::Semaphore::new(1);
/// let permit = s.acquire().await.unwrap();
/// assert_eq!(s.available_permits(), 0);
/// drop(permit);
/// assert_eq!(s.available_permits(), 1);
/// # });
/// ```
#[derive(Debug)]
pub struct Semaphore {
    hint: AtomicUsize,
    inner: ::tokio::sync::Semaphore,
}

/// A permit of a [`Semaphore`]; dropping it gives the permit back.
///
/// ```
/// let s = profiled::sync::tokio::Semaphore::new(2);
/// let p: profiled::sync::tokio::SemaphorePermit<'_> = s.try_acquire().unwrap();
/// assert_eq!(s.available_permits(), 1);
/// # drop(p);
/// ```
#[must_use]
#[derive(Debug)]
pub struct SemaphorePermit<'a> {
    key: usize,
    // Dropped after `Drop::drop` blames: the permit goes back just after.
    _inner: ::tokio::sync::SemaphorePermit<'a>,
}

impl Semaphore {
    /// A semaphore with `permits` permits.
    ///
    /// ```
    /// assert_eq!(profiled::sync::tokio::Semaphore::new(3).available_permits(), 3);
    /// ```
    pub fn new(permits: usize) -> Semaphore {
        Semaphore {
            hint: AtomicUsize::new(0),
            inner: ::tokio::sync::Semaphore::new(permits),
        }
    }

    /// The key waiters and releases share: this semaphore's address.
    fn key(&self) -> usize {
        key(&self.inner)
    }

    /// Takes a permit, waiting (asynchronously) while none is free.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let s = profiled::sync::tokio::Semaphore::new(1);
    /// let _p = s.acquire().await.unwrap();
    /// # });
    /// ```
    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>, AcquireError> {
        let key = self.key();
        if !contention::on() {
            return Ok(SemaphorePermit {
                key,
                _inner: self.inner.acquire().await?,
            });
        }
        let permit = match self.inner.try_acquire() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => {
                return self
                    .inner
                    .acquire()
                    .await
                    .map(|p| SemaphorePermit { key, _inner: p });
            }
            Err(TryAcquireError::NoPermits) => {
                learn(&self.hint, &self.inner);
                let wait = Wait::begin(&self.hint);
                let p = self.inner.acquire().await;
                wait.end();
                p?
            }
        };
        Ok(SemaphorePermit {
            key,
            _inner: permit,
        })
    }

    /// Takes a permit if one is free.
    ///
    /// ```
    /// let s = profiled::sync::tokio::Semaphore::new(0);
    /// assert!(s.try_acquire().is_err());
    /// ```
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        let key = self.key();
        self.inner
            .try_acquire()
            .map(|p| SemaphorePermit { key, _inner: p })
    }

    /// Permits free now.
    ///
    /// ```
    /// assert_eq!(profiled::sync::tokio::Semaphore::new(2).available_permits(), 2);
    /// ```
    pub fn available_permits(&self) -> usize {
        self.inner.available_permits()
    }

    /// Adds `n` permits.
    ///
    /// ```
    /// let s = profiled::sync::tokio::Semaphore::new(0);
    /// s.add_permits(2);
    /// assert_eq!(s.available_permits(), 2);
    /// ```
    pub fn add_permits(&self, n: usize) {
        self.inner.add_permits(n);
    }

    /// Closes the semaphore: waiting and later `acquire`s fail.
    ///
    /// ```
    /// let s = profiled::sync::tokio::Semaphore::new(1);
    /// s.close();
    /// assert!(s.is_closed());
    /// ```
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether [`Semaphore::close`] was called.
    ///
    /// ```
    /// assert!(!profiled::sync::tokio::Semaphore::new(1).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        unlocked(self.key);
    }
}
