//! Locks that outlive a panic.
//!
//! The mount daemon serves every request on shared tables (open files, the id index, the stat
//! cache, each queue's listing and cached settings). With `lock().unwrap()`, one request that
//! panicked while holding a lock (a bug) would poison it, and every later request touching that
//! table would panic in turn: the whole mount dead for one bad request. Each of these tables is
//! changed by whole-entry inserts, removes and replacements, or is a cache that is read again
//! from disk, so what a panicking holder left behind is still usable.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// [`Mutex::lock`], taking the data over from a holder that panicked.
pub trait LockRecovering<T: ?Sized> {
    fn lock_recovering(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockRecovering<T> for Mutex<T> {
    fn lock_recovering(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_taken_over_with_its_data() {
        let m = Mutex::new(vec![1]);
        let _ = std::panic::catch_unwind(|| {
            let mut v = m.lock().unwrap();
            v.push(2);
            panic!("a request's bug");
        });
        assert!(m.is_poisoned());
        m.lock_recovering().push(3);
        assert_eq!(*m.lock_recovering(), [1, 2, 3]);
    }
}
