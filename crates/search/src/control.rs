//! What every driver — a search's ([`crate::driver`]) and a sweep's ([`crate::sweep::driver`]) —
//! needs around its loop: a lock that keeps a second driver out of its directory, and the flag
//! through which SIGINT / SIGTERM ask it to stop its trials and save its state.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Result, SearchError};

/// Set by SIGINT / SIGTERM once [`install_interrupt_handler`] ran; a driver's loop then stops
/// its trials, saves its state and returns [`SearchError::Interrupted`].
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns Ctrl-C and SIGTERM into a clean stop of the driver (trials stopped, state saved).
pub fn install_interrupt_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Whether SIGINT or SIGTERM arrived since [`install_interrupt_handler`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Holds a directory's lock for as long as it lives; the kernel drops it when its process dies,
/// so a driver killed by SIGKILL leaves no stale lock behind.
pub struct DirLock(#[allow(dead_code)] std::fs::File);

/// Takes `dir/.lock` (`flock`), or says that another driver (`what`: "search", "sweep") holds it.
pub fn lock_dir(dir: &Path, what: &str) -> Result<DirLock> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| SearchError::io(&path, e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(SearchError::Invalid(format!("{}: another {what} driver is running in this directory", dir.display())));
    }
    Ok(DirLock(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_directory_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("plastic-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = lock_dir(&dir, "sweep").unwrap();
        let e = lock_dir(&dir, "sweep").err().expect("the second lock is refused").to_string();
        assert!(e.contains("another sweep driver is running"), "{e}");
        drop(first);
        assert!(lock_dir(&dir, "sweep").is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
