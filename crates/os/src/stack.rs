//! Giving a thread's unused stack pages back to the kernel (`madvise`).
//!
//! A call into AWS (TLS, signing, JSON) touches ~40 KiB of stack; a cache hit
//! needs a few KiB. Without this, every thread that ever fetched keeps those
//! pages resident for as long as it lives.

/// Gives the pages of the calling thread's stack below the current frame back
/// to the kernel. Later calls that reach deeper get fresh zeroed pages, so
/// this is invisible to the program. For spawned threads (the main thread's
/// stack bounds are only a guess).
#[cfg(target_os = "linux")]
pub fn release_unused() {
    let page = page_size();
    let here = &page as *const usize as usize;
    let Some(low) = lowest_address() else {
        return;
    };
    // One page of room for this function's own frame and the madvise call.
    let end = here.saturating_sub(page) & !(page - 1);
    let start = (low + page - 1) & !(page - 1);
    if end > start {
        // SAFETY: [start, end) lies inside this thread's own stack mapping,
        // below the deepest frame that is live now (the current one, minus a
        // margin for the call below), so no live data is there. MADV_DONTNEED
        // on private anonymous memory only drops the pages; touching them
        // again maps zero pages.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn release_unused() {}

/// The kernel's page size (4 KiB on x86_64; 16 or 64 KiB on some arm64).
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: plain sysconf query.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

/// The lowest address of the calling thread's stack.
#[cfg(target_os = "linux")]
fn lowest_address() -> Option<usize> {
    // SAFETY: `attr` is initialised by pthread_getattr_np before it is read
    // and destroyed once; the out-pointers are valid locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if got != 0 || addr.is_null() {
            return None;
        }
        Some(addr as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[cfg(target_os = "linux")]
    #[test]
    fn unused_stack_goes_back_to_the_kernel() {
        fn touch(depth: usize) -> u8 {
            let mut pad = [0u8; 1024];
            pad[depth % 1024] = depth as u8;
            if depth == 0 {
                std::hint::black_box(pad)[0]
            } else {
                touch(depth - 1).wrapping_add(std::hint::black_box(pad)[depth % 1024])
            }
        }
        fn resident_pages(low: usize, high: usize) -> usize {
            let page = page_size();
            let mut vec = vec![0u8; (high - low) / page];
            // SAFETY: [low, high) is this thread's stack mapping; `vec` has one
            // byte per page.
            let ok =
                unsafe { libc::mincore(low as *mut libc::c_void, high - low, vec.as_mut_ptr()) };
            assert_eq!(ok, 0, "mincore: {}", std::io::Error::last_os_error());
            vec.iter().filter(|&&b| b & 1 == 1).count()
        }
        // Room for 200 frames of a debug build (~5 KiB each); with 1 MiB the
        // test passed only when glibc reused a larger cached stack.
        let counts = thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(|| {
                let page = page_size();
                let low = lowest_address().expect("stack bounds");
                let low = (low + page - 1) & !(page - 1);
                let here = (&low as *const usize as usize) & !(page - 1);
                std::hint::black_box(touch(200));
                let before = resident_pages(low, here - 16 * page);
                release_unused();
                let after = resident_pages(low, here - 16 * page);
                // The stack still works, and reaches deep again.
                std::hint::black_box(touch(200));
                (before, after)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            counts.0 >= 30,
            "the deep call should have touched pages: {counts:?}"
        );
        assert_eq!(counts.1, 0, "{counts:?}");
    }
}
