//! Locks that outlive a panic elsewhere.
//!
//! A `std` lock is poisoned when a thread panics while holding it, and every
//! later `unwrap()` of its `lock()` then panics too: one bug would take `status`,
//! `lock` and every token request down with it. Product code takes its locks
//! through [`MutexExt::locked`] and [`RwLockExt`] instead, which hand back the
//! guard of a poisoned lock. The data behind our locks stays well-formed at
//! every step (maps, flags and counters, each updated in one statement), so
//! going on is safe. A test below keeps unwrapped locks out of the product
//! code of the agent, the shim and this library.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub trait MutexExt<T: ?Sized> {
    /// Lock, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub trait RwLockExt<T: ?Sized> {
    /// Read-lock, poisoned or not.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// Write-lock, poisoned or not.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_still_locks() {
        let m = Arc::new(Mutex::new(1));
        let rw = Arc::new(RwLock::new(1));
        let (m2, rw2) = (m.clone(), rw.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            let _w = rw2.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(m.is_poisoned() && rw.is_poisoned());
        *m.locked() += 1;
        *rw.write_locked() += 1;
        assert_eq!((*m.locked(), *rw.read_locked()), (2, 2));
    }

    /// Product code (everything before a file's `#[cfg(test)]`) of the agent,
    /// the shim and this library never unwraps a lock.
    #[test]
    fn no_product_code_unwraps_a_lock() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = vec![];
        for krate in [
            "agent/src",
            "shim/src",
            "client/src",
            "client/cli/src",
            "client/generate/src",
        ] {
            let mut stack = vec![root.join(krate)];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                        continue;
                    }
                    if p.extension().is_none_or(|x| x != "rs") {
                        continue;
                    }
                    let text = std::fs::read_to_string(&p).unwrap();
                    let product = text.split("#[cfg(test)]").next().unwrap_or("");
                    let flat: String = product.split_whitespace().collect();
                    for call in ["lock()", "read()", "write()"] {
                        for then in [".unwrap()", ".expect("] {
                            if flat.contains(&format!(".{call}{then}")) {
                                found.push(format!("{}: .{call}{then}", p.display()));
                            }
                        }
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "use touchgate::sync::{{MutexExt, RwLockExt}} instead: {found:#?}"
        );
    }
}
