//! How the process gets its memory from the C allocator.
//!
//! A training step allocates and frees the same few hundred tensors every time, most of them
//! larger than glibc's default `mmap` threshold (128 KiB, raised dynamically only up to the
//! largest block freed so far, and reset by any trim). Each such tensor is then a fresh `mmap`
//! whose pages fault in one by one, zero-filled by the kernel, and whose `munmap` flushes the
//! TLBs of every thread of the pool; freed heap tops are returned to the kernel the same way.
//! On a 2-core CPU this was a fifth of the step (`perf`: page faults, `clear_page`, TLB
//! shoot-downs) and more on models with many mid-sized activations. [`keep_freed_memory`]
//! keeps freed blocks in the heap for the next step instead, as PyTorch's users get from
//! jemalloc or tcmalloc.

/// Keeps freed memory in the process's heap for reuse (glibc: blocks up to 1 GiB come from the
/// heap, the heap is never trimmed, and all threads share one arena). Call once,
/// at the start of `main`, before other threads exist. A no-op on other C libraries.
///
/// The process's resident set then stays at its peak instead of shrinking between steps;
/// [`release_freed_memory`] gives the free part back on demand (the benchmark's memory
/// measurement calls it, so that retained blocks are not mistaken for live ones).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it takes the allocator's own locks.
    unsafe {
        // glibc refuses thresholds above half its heap size (32 MiB on 64-bit builds) in some
        // versions: ask for 1 GiB, then for the documented maximum.
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // One arena for all threads: with one per thread, a block freed by one thread's arena
        // cannot serve another's request, and each grows to its own peak (AlexNet at 32 px,
        // batch 64: 416 MiB peak with per-thread arenas, 373 with one, 319 trimming as
        // before). Large blocks are few per step, so the shared lock is not contended.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the heap's free memory to the kernel (glibc's `malloc_trim`); a no-op elsewhere.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; live allocations are untouched.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Bytes in blocks glibc serves by `mmap` (each a fresh mapping, paged in on first touch).
    fn mapped_bytes() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.hblkhd
    }

    #[test]
    fn a_tensor_sized_block_comes_from_the_heap_and_stays_there() {
        keep_freed_memory();
        let before = mapped_bytes();
        // 8 MiB: an activation of batch 64 × 32 channels × 32², which glibc's default threshold
        // (128 KiB) would map. (Not larger: this test thread's arena existed before the call
        // above, and a thread arena's heaps hold at most 64 MiB; `main` calls it before any
        // thread exists, so there every thread shares the main heap.)
        let block = std::hint::black_box(vec![1.0f32; 2 << 20]);
        assert_eq!(mapped_bytes(), before, "an 8 MiB block was mapped, not taken from the heap");
        drop(block);
        // SAFETY: as above.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        assert!(free >= 8 << 20, "the freed block was returned to the kernel ({free} bytes free in the heap)");
    }
}
