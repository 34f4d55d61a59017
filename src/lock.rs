//! The tracer's only lock: a test-and-test-and-set spin lock that yields when contended.
//!
//! Why not a futex mutex or parking_lot: holders never block, never allocate and never call into libc, so the
//! critical sections are a few dozen instructions; parking_lot's slow path parks threads through thread-locals
//! (the recursion we avoid), and std's Mutex poisons on panic. Every lock is taken around fork (see `fork.rs`) so
//! a child never inherits one held by a thread that no longer exists.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A spin lock protecting a `T`.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new unlocked lock.
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, spinning and then yielding the CPU while another thread holds it.
    #[inline]
    pub fn lock(&self) -> Guard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
        Guard { lock: self }
    }

    #[cold]
    fn lock_slow(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                spins += 1;
                if spins < 64 {
                    core::hint::spin_loop();
                } else {
                    crate::sys::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Takes the lock only if it is free (signal handlers, which must never wait).
    pub fn try_lock(&self) -> Option<Guard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Guard { lock: self })
    }

    /// Acquires without a guard; paired with [`SpinLock::force_unlock`] around fork.
    pub fn raw_lock(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken by [`SpinLock::raw_lock`].
    ///
    /// # Safety
    /// The caller must hold the lock through `raw_lock` (or be the only thread left, after fork).
    pub unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// The protected value without locking.
    ///
    /// # Safety
    /// Only for a crash handler that accepts a torn view, or code that otherwise owns the value.
    pub unsafe fn get_unlocked(&self) -> *mut T {
        self.value.get()
    }
}

/// Holds a [`SpinLock`] until dropped.
pub struct Guard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> core::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> core::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
