//! Test support: a global allocator that counts this thread's heap
//! allocations, so a test can say what an operation costs beyond the value it
//! hands out (a frame round trip, a window hit). Only with the `testing`
//! feature (or in this crate's own tests); a test binary installs it with
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: touchgate::alloc_count::Counting = touchgate::alloc_count::Counting;
//! ```
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting allocations per thread.
pub struct Counting;

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}

/// Allocations made on this thread so far (0 unless [`Counting`] is the
/// global allocator).
pub fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}
