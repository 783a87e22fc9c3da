//! Keep other processes of the same user out of the agent's memory, as
//! ssh-agent does: while an approval window is open the agent holds unsealed
//! credentials, and a process that could read them would no longer need the key.
//!
//! - Linux: `prctl(PR_SET_DUMPABLE, 0)`. Other processes of the same uid can no
//!   longer `ptrace` the agent or open its `/proc/PID/{mem,environ,fd,…}` (they
//!   become root's), and the kernel writes no core dump.
//! - macOS: `ptrace(PT_DENY_ATTACH)`: debuggers cannot attach.
//! - Everywhere: a core-size limit of 0.
//!
//! root can still read any process; that is out of any agent's reach.

/// Apply the protections; the error names the first one that failed.
pub fn deny_tracing() -> Result<(), String> {
    sys::no_core_dumps().map_err(|e| format!("cannot disable core dumps: {e}"))?;
    sys::not_traceable().map_err(|e| format!("cannot refuse tracing: {e}"))
}

#[allow(unsafe_code)]
mod sys {
    use std::io;

    pub fn no_core_dumps() -> io::Result<()> {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        match unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    #[cfg(target_os = "linux")]
    pub fn not_traceable() -> io::Result<()> {
        // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
        match unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    #[cfg(target_os = "macos")]
    pub fn not_traceable() -> io::Result<()> {
        // SAFETY: PT_DENY_ATTACH ignores the pid, address and data arguments.
        match unsafe { libc::ptrace(libc::PT_DENY_ATTACH, 0, std::ptr::null_mut(), 0) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    pub fn not_traceable() -> io::Result<()> {
        Ok(())
    }
}
