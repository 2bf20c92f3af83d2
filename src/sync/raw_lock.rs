//! [`Watched`], the raw lock under `profiled::sync::parking_lot`'s locks. lock_api's raw
//! lock traits are unsafe to implement (an impl promises real mutual exclusion), so this
//! lives here with the rest of the crate's `unsafe`: every method forwards to the wrapped
//! lock, which keeps that promise, and adds only the bookkeeping of `crate::sync` (a wait
//! timed, an unlock blamed), which touches nothing the lock guards.

use parking_lot::lock_api::{
    RawMutex, RawMutexFair, RawMutexTimed, RawRwLock, RawRwLockDowngrade, RawRwLockFair,
    RawRwLockRecursive, RawRwLockRecursiveTimed, RawRwLockTimed, RawRwLockUpgrade,
    RawRwLockUpgradeDowngrade, RawRwLockUpgradeFair, RawRwLockUpgradeTimed,
};

use crate::contention;
use crate::sync::{Wait, unlocked};

/// Any [`lock_api`](parking_lot::lock_api) raw lock `R` (parking_lot's `RawMutex`,
/// `RawFairMutex`, `RawRwLock`, or another crate's), seen by block and mutex profiles: a
/// lock that has to wait times the wait for the block profile, and an unlock that ends
/// others' waiting is blamed for it in the mutex profile. With neither profile running it
/// costs what `R` costs plus one relaxed load on lock and one on unlock.
///
/// The lock's key in the profiles' bookkeeping is its own address, so none is stored.
///
/// ```
/// use profiled::sync::parking_lot::{lock_api, Watched};
///
/// // What `profiled::sync::parking_lot::Mutex` is, spelt out.
/// type Mutex<T> = lock_api::Mutex<Watched<parking_lot::RawMutex>, T>;
/// let m = Mutex::new(1);
/// *m.lock() += 1;
/// assert_eq!(m.into_inner(), 2);
/// ```
#[derive(Debug, Default)]
pub struct Watched<R>(R);

impl<R> Watched<R> {
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Takes the lock through `wait`; while a contention profile runs, through `attempt`
    /// first, which gives `got` if the lock was free, the wait timed otherwise.
    #[inline]
    fn take<T>(&self, attempt: impl FnOnce(&R) -> bool, got: T, wait: impl FnOnce(&R) -> T) -> T {
        if contention::on() {
            self.take_watched(attempt, got, wait)
        } else {
            wait(&self.0)
        }
    }

    #[inline(never)]
    fn take_watched<T>(
        &self,
        attempt: impl FnOnce(&R) -> bool,
        got: T,
        wait: impl FnOnce(&R) -> T,
    ) -> T {
        if attempt(&self.0) {
            return got;
        }
        let timed = Wait::at(self.key());
        let r = wait(&self.0);
        timed.end();
        r
    }

    /// Before an unlock (or a downgrade, which lets waiters in): the waiting it ends is
    /// blamed on the calling stack.
    #[inline]
    fn releasing(&self) {
        unlocked(self.key());
    }
}

// SAFETY: mutual exclusion is `R`'s: every locking method forwards to `R`'s, in the same
// order, and an unlock is called on `R` exactly when it is called on `Watched` (the
// caller's contract, passed on unchanged).
unsafe impl<R: RawMutex> RawMutex for Watched<R> {
    #[allow(clippy::declare_interior_mutable_const)] // as lock_api's own raw locks
    const INIT: Watched<R> = Watched(R::INIT);
    type GuardMarker = R::GuardMarker;

    #[inline]
    fn lock(&self) {
        self.take(R::try_lock, (), R::lock);
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.0.try_lock()
    }

    #[inline]
    unsafe fn unlock(&self) {
        self.releasing();
        // SAFETY: the caller holds the lock (this method's contract), hence holds `R`'s.
        unsafe { self.0.unlock() }
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.0.is_locked()
    }
}

// SAFETY: as for `RawMutex` above.
unsafe impl<R: RawMutexFair> RawMutexFair for Watched<R> {
    #[inline]
    unsafe fn unlock_fair(&self) {
        self.releasing();
        // SAFETY: the caller holds the lock, hence `R`'s.
        unsafe { self.0.unlock_fair() }
    }

    #[inline]
    unsafe fn bump(&self) {
        if contention::on() {
            // Through the watched unlock and lock, so the handover is seen.
            // SAFETY: the caller holds the lock.
            unsafe { self.unlock_fair() };
            self.lock();
        } else {
            // SAFETY: the caller holds the lock, hence `R`'s.
            unsafe { self.0.bump() }
        }
    }
}

// SAFETY: as for `RawMutex` above.
unsafe impl<R: RawMutexTimed> RawMutexTimed for Watched<R> {
    type Duration = R::Duration;
    type Instant = R::Instant;

    fn try_lock_for(&self, timeout: R::Duration) -> bool {
        self.take(R::try_lock, true, |r| r.try_lock_for(timeout))
    }

    fn try_lock_until(&self, timeout: R::Instant) -> bool {
        self.take(R::try_lock, true, |r| r.try_lock_until(timeout))
    }
}

// SAFETY: as for `RawMutex` above: shared and exclusive locking are `R`'s.
unsafe impl<R: RawRwLock> RawRwLock for Watched<R> {
    #[allow(clippy::declare_interior_mutable_const)] // as lock_api's own raw locks
    const INIT: Watched<R> = Watched(R::INIT);
    type GuardMarker = R::GuardMarker;

    #[inline]
    fn lock_shared(&self) {
        self.take(R::try_lock_shared, (), R::lock_shared);
    }

    #[inline]
    fn try_lock_shared(&self) -> bool {
        self.0.try_lock_shared()
    }

    #[inline]
    unsafe fn unlock_shared(&self) {
        self.releasing();
        // SAFETY: the caller holds a shared lock, hence one of `R`'s.
        unsafe { self.0.unlock_shared() }
    }

    #[inline]
    fn lock_exclusive(&self) {
        self.take(R::try_lock_exclusive, (), R::lock_exclusive);
    }

    #[inline]
    fn try_lock_exclusive(&self) -> bool {
        self.0.try_lock_exclusive()
    }

    #[inline]
    unsafe fn unlock_exclusive(&self) {
        self.releasing();
        // SAFETY: the caller holds the exclusive lock, hence `R`'s.
        unsafe { self.0.unlock_exclusive() }
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.0.is_locked()
    }

    #[inline]
    fn is_locked_exclusive(&self) -> bool {
        self.0.is_locked_exclusive()
    }
}

// SAFETY: as for `RawRwLock` above.
unsafe impl<R: RawRwLockFair> RawRwLockFair for Watched<R> {
    unsafe fn unlock_shared_fair(&self) {
        self.releasing();
        // SAFETY: the caller holds a shared lock, hence one of `R`'s.
        unsafe { self.0.unlock_shared_fair() }
    }

    unsafe fn unlock_exclusive_fair(&self) {
        self.releasing();
        // SAFETY: the caller holds the exclusive lock, hence `R`'s.
        unsafe { self.0.unlock_exclusive_fair() }
    }

    unsafe fn bump_shared(&self) {
        if contention::on() {
            // SAFETY: the caller holds a shared lock.
            unsafe { self.unlock_shared_fair() };
            self.lock_shared();
        } else {
            // SAFETY: the caller holds a shared lock, hence one of `R`'s.
            unsafe { self.0.bump_shared() }
        }
    }

    unsafe fn bump_exclusive(&self) {
        if contention::on() {
            // SAFETY: the caller holds the exclusive lock.
            unsafe { self.unlock_exclusive_fair() };
            self.lock_exclusive();
        } else {
            // SAFETY: the caller holds the exclusive lock, hence `R`'s.
            unsafe { self.0.bump_exclusive() }
        }
    }
}

// SAFETY: as for `RawRwLock` above.
unsafe impl<R: RawRwLockDowngrade> RawRwLockDowngrade for Watched<R> {
    unsafe fn downgrade(&self) {
        self.releasing();
        // SAFETY: the caller holds the exclusive lock, hence `R`'s.
        unsafe { self.0.downgrade() }
    }
}

// SAFETY: as for `RawRwLock` above.
unsafe impl<R: RawRwLockTimed> RawRwLockTimed for Watched<R> {
    type Duration = R::Duration;
    type Instant = R::Instant;

    fn try_lock_shared_for(&self, timeout: R::Duration) -> bool {
        self.take(R::try_lock_shared, true, |r| r.try_lock_shared_for(timeout))
    }

    fn try_lock_shared_until(&self, timeout: R::Instant) -> bool {
        self.take(R::try_lock_shared, true, |r| {
            r.try_lock_shared_until(timeout)
        })
    }

    fn try_lock_exclusive_for(&self, timeout: R::Duration) -> bool {
        self.take(R::try_lock_exclusive, true, |r| {
            r.try_lock_exclusive_for(timeout)
        })
    }

    fn try_lock_exclusive_until(&self, timeout: R::Instant) -> bool {
        self.take(R::try_lock_exclusive, true, |r| {
            r.try_lock_exclusive_until(timeout)
        })
    }
}

// SAFETY: as for `RawRwLock` above.
unsafe impl<R: RawRwLockRecursive> RawRwLockRecursive for Watched<R> {
    fn lock_shared_recursive(&self) {
        self.take(R::try_lock_shared_recursive, (), R::lock_shared_recursive);
    }

    fn try_lock_shared_recursive(&self) -> bool {
        self.0.try_lock_shared_recursive()
    }
}

// SAFETY: as for `RawRwLock` above.
unsafe impl<R: RawRwLockRecursiveTimed> RawRwLockRecursiveTimed for Watched<R> {
    fn try_lock_shared_recursive_for(&self, timeout: R::Duration) -> bool {
        self.take(R::try_lock_shared_recursive, true, |r| {
            r.try_lock_shared_recursive_for(timeout)
        })
    }

    fn try_lock_shared_recursive_until(&self, timeout: R::Instant) -> bool {
        self.take(R::try_lock_shared_recursive, true, |r| {
            r.try_lock_shared_recursive_until(timeout)
        })
    }
}

// SAFETY: as for `RawRwLock` above: upgradable locking and upgrades are `R`'s.
unsafe impl<R: RawRwLockUpgrade> RawRwLockUpgrade for Watched<R> {
    fn lock_upgradable(&self) {
        self.take(R::try_lock_upgradable, (), R::lock_upgradable);
    }

    fn try_lock_upgradable(&self) -> bool {
        self.0.try_lock_upgradable()
    }

    unsafe fn unlock_upgradable(&self) {
        self.releasing();
        // SAFETY: the caller holds an upgradable lock, hence `R`'s.
        unsafe { self.0.unlock_upgradable() }
    }

    unsafe fn upgrade(&self) {
        // Waiting for the readers to leave is a wait like any other.
        self.take(
            // SAFETY: the caller holds an upgradable lock, hence `R`'s.
            |r| unsafe { r.try_upgrade() },
            (),
            // SAFETY: as above.
            |r| unsafe { r.upgrade() },
        );
    }

    unsafe fn try_upgrade(&self) -> bool {
        // SAFETY: the caller holds an upgradable lock, hence `R`'s.
        unsafe { self.0.try_upgrade() }
    }
}

// SAFETY: as for `RawRwLock` above.
unsafe impl<R: RawRwLockUpgradeFair> RawRwLockUpgradeFair for Watched<R> {
    unsafe fn unlock_upgradable_fair(&self) {
        self.releasing();
        // SAFETY: the caller holds an upgradable lock, hence `R`'s.
        unsafe { self.0.unlock_upgradable_fair() }
    }

    unsafe fn bump_upgradable(&self) {
        if contention::on() {
            // SAFETY: the caller holds an upgradable lock.
            unsafe { self.unlock_upgradable_fair() };
            self.lock_upgradable();
        } else {
            // SAFETY: the caller holds an upgradable lock, hence `R`'s.
            unsafe { self.0.bump_upgradable() }
        }
    }
}

// SAFETY: as for `RawRwLock` above.
unsafe impl<R: RawRwLockUpgradeDowngrade> RawRwLockUpgradeDowngrade for Watched<R> {
    unsafe fn downgrade_upgradable(&self) {
        self.releasing();
        // SAFETY: the caller holds an upgradable lock, hence `R`'s.
        unsafe { self.0.downgrade_upgradable() }
    }

    unsafe fn downgrade_to_upgradable(&self) {
        self.releasing();
        // SAFETY: the caller holds the exclusive lock, hence `R`'s.
        unsafe { self.0.downgrade_to_upgradable() }
    }
}

// SAFETY: as for `RawRwLock` above.
unsafe impl<R: RawRwLockUpgradeTimed> RawRwLockUpgradeTimed for Watched<R> {
    fn try_lock_upgradable_for(&self, timeout: R::Duration) -> bool {
        self.take(R::try_lock_upgradable, true, |r| {
            r.try_lock_upgradable_for(timeout)
        })
    }

    fn try_lock_upgradable_until(&self, timeout: R::Instant) -> bool {
        self.take(R::try_lock_upgradable, true, |r| {
            r.try_lock_upgradable_until(timeout)
        })
    }

    unsafe fn try_upgrade_for(&self, timeout: R::Duration) -> bool {
        self.take(
            // SAFETY: the caller holds an upgradable lock, hence `R`'s.
            |r| unsafe { r.try_upgrade() },
            true,
            // SAFETY: as above.
            |r| unsafe { r.try_upgrade_for(timeout) },
        )
    }

    unsafe fn try_upgrade_until(&self, timeout: R::Instant) -> bool {
        self.take(
            // SAFETY: the caller holds an upgradable lock, hence `R`'s.
            |r| unsafe { r.try_upgrade() },
            true,
            // SAFETY: as above.
            |r| unsafe { r.try_upgrade_until(timeout) },
        )
    }
}
