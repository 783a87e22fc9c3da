//! Facts about another process of the same machine, for naming callers: its
//! executable, its parent, its arguments and a few environment variables.
//!
//! Linux reads `/proc/PID/{exe,stat,cmdline,environ}`. macOS has no `/proc`: it
//! asks the kernel with `proc_pidpath`, `proc_pidinfo(PROC_PIDT_SHORTBSDINFO)` and
//! `sysctl(KERN_PROCARGS2)`. Every function answers `None` for a process that is
//! gone or not ours to read, never an error: a caller without a name is still a
//! caller (its uid was already checked by the kernel).
//!
//! [`script_of`] names the script behind an interpreter (see [`script_in`]).

use std::path::PathBuf;

mod script;
pub use script::{script_in, Interpreter};

/// The executable of `pid`.
pub fn exe_of(pid: u32) -> Option<PathBuf> {
    sys::exe_of(pid)
}

/// The current directory of `pid`.
pub fn cwd_of(pid: u32) -> Option<PathBuf> {
    sys::cwd_of(pid)
}

/// The script `pid` runs when its executable is an interpreter (`python3
/// …/gcloud.py`): see [`script_in`] for which argument that is.
pub fn script_of(pid: u32) -> Option<PathBuf> {
    let exe = exe_of(pid)?;
    Interpreter::of(&exe)?;
    script_in(&exe, &args_of(pid)?, cwd_of(pid).as_deref())
}

/// The parent process id of `pid` (`None` for init/launchd and the unreadable).
pub fn parent_of(pid: u32) -> Option<u32> {
    sys::parent_of(pid).filter(|p| *p > 1)
}

/// The argument vector of `pid`, `argv[0]` first.
pub fn args_of(pid: u32) -> Option<Vec<String>> {
    sys::args_and_env(pid).map(|(args, _)| args)
}

/// The environment of `pid` as `NAME=value` strings (only our own user's processes).
pub fn env_of(pid: u32) -> Option<Vec<String>> {
    sys::args_and_env(pid).map(|(_, env)| env)
}

/// The parent pid in the text of `/proc/PID/stat`. The command name may hold
/// spaces and parentheses: the fields after the last `)` are `state ppid …`.
pub fn ppid_from_stat(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// NUL-separated strings (`/proc/PID/cmdline`, `/proc/PID/environ`), empty ones dropped.
pub fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The buffer of macOS `sysctl(KERN_PROCARGS2)`: a native-endian `argc`, the
/// executable path, NUL padding, then `argc` NUL-terminated arguments, then the
/// environment strings up to an empty string. Returns (arguments, environment).
pub fn parse_procargs2(buf: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    let argc = i32::from_ne_bytes(buf.get(..4)?.try_into().ok()?);
    let argc = usize::try_from(argc).ok()?;
    let rest = buf.get(4..)?;
    // Skip the executable path and the NULs that pad it.
    let path_end = rest.iter().position(|b| *b == 0)?;
    let mut i = path_end;
    while rest.get(i) == Some(&0) {
        i += 1;
    }
    let mut strings = rest.get(i..)?.split(|b| *b == 0);
    let mut args = Vec::with_capacity(argc.min(256));
    for _ in 0..argc {
        let a = strings.next()?;
        args.push(String::from_utf8_lossy(a).into_owned());
    }
    let env = strings
        .take_while(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    Some((args, env))
}

#[cfg(not(target_os = "macos"))]
mod sys {
    use std::path::PathBuf;

    pub fn exe_of(pid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/exe")).ok()
    }

    pub fn cwd_of(pid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
    }

    pub fn parent_of(pid: u32) -> Option<u32> {
        super::ppid_from_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    pub fn args_and_env(pid: u32) -> Option<(Vec<String>, Vec<String>)> {
        let args = super::split_nul(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?);
        let env = std::fs::read(format!("/proc/{pid}/environ"))
            .map(|b| super::split_nul(&b))
            .unwrap_or_default();
        Some((args, env))
    }
}

#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
mod sys {
    use std::ffi::{c_int, c_void, OsStr};
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    pub fn exe_of(pid: u32) -> Option<PathBuf> {
        let pid = c_int::try_from(pid).ok()?;
        let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
        // SAFETY: the buffer is writable for the length we pass; the kernel writes
        // at most that many bytes and returns how many.
        let n =
            unsafe { libc::proc_pidpath(pid, buf.as_mut_ptr().cast::<c_void>(), buf.len() as u32) };
        let n = usize::try_from(n).ok().filter(|n| *n > 0)?;
        Some(PathBuf::from(OsStr::from_bytes(&buf[..n.min(buf.len())])))
    }

    pub fn cwd_of(pid: u32) -> Option<PathBuf> {
        let pid = c_int::try_from(pid).ok()?;
        let size = std::mem::size_of::<libc::proc_vnodepathinfo>();
        // SAFETY: proc_vnodepathinfo is plain old data; all-zero is a valid value.
        let mut info: libc::proc_vnodepathinfo = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is writable for `size` bytes, the size we pass.
        let n = unsafe {
            libc::proc_pidinfo(
                pid,
                libc::PROC_PIDVNODEPATHINFO,
                0,
                (&mut info as *mut libc::proc_vnodepathinfo).cast::<c_void>(),
                c_int::try_from(size).ok()?,
            )
        };
        if usize::try_from(n).ok()? != size {
            return None;
        }
        // The path is a NUL-terminated C string in a fixed MAXPATHLEN buffer.
        let bytes: Vec<u8> = info
            .pvi_cdir
            .vip_path
            .iter()
            .flatten()
            .map(|c| c.to_ne_bytes()[0])
            .take_while(|b| *b != 0)
            .collect();
        (!bytes.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(&bytes)))
    }

    pub fn parent_of(pid: u32) -> Option<u32> {
        let pid = c_int::try_from(pid).ok()?;
        let size = std::mem::size_of::<libc::proc_bsdshortinfo>();
        // SAFETY: proc_bsdshortinfo is plain old data; all-zero is a valid value.
        let mut info: libc::proc_bsdshortinfo = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is writable for `size` bytes, the size we pass.
        let n = unsafe {
            libc::proc_pidinfo(
                pid,
                libc::PROC_PIDT_SHORTBSDINFO,
                0,
                (&mut info as *mut libc::proc_bsdshortinfo).cast::<c_void>(),
                c_int::try_from(size).ok()?,
            )
        };
        (usize::try_from(n).ok()? == size).then_some(info.pbsi_ppid)
    }

    pub fn args_and_env(pid: u32) -> Option<(Vec<String>, Vec<String>)> {
        let pid = c_int::try_from(pid).ok()?;
        let mut argmax: c_int = 0;
        let mut len = std::mem::size_of::<c_int>();
        let mut mib = [libc::CTL_KERN, libc::KERN_ARGMAX];
        // SAFETY: `argmax` is writable for `len` bytes; no new value is set.
        let rc = unsafe {
            libc::sysctl(
                mib.as_mut_ptr(),
                2,
                (&mut argmax as *mut c_int).cast::<c_void>(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 || argmax <= 0 {
            return None;
        }
        let mut buf = vec![0u8; argmax as usize];
        let mut len = buf.len();
        let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, pid];
        // SAFETY: `buf` is writable for `len` bytes; the kernel updates `len` to
        // what it wrote.
        let rc = unsafe {
            libc::sysctl(
                mib.as_mut_ptr(),
                3,
                buf.as_mut_ptr().cast::<c_void>(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            return None;
        }
        super::parse_procargs2(&buf[..len.min(buf.len())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let exe = exe_of(me).expect("our own executable");
        assert_eq!(exe, std::env::current_exe().unwrap());
        let args = args_of(me).expect("our own arguments");
        assert_eq!(args, std::env::args().collect::<Vec<_>>());
        // The parent the kernel reports matches the one std asks for.
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
        assert_eq!(cwd_of(me), Some(std::env::current_dir().unwrap()));
        assert_eq!(script_of(me), None, "a test binary is no interpreter");
        let env = env_of(me).expect("our own environment");
        let path = std::env::var("PATH").unwrap();
        assert!(env.contains(&format!("PATH={path}")), "{env:?}");
    }

    #[test]
    fn the_script_a_running_shell_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wait.sh"), "echo ready\nread line\n").unwrap();
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-e", "wait.sh"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // `spawn` may return before the kernel has laid out the new program's
        // arguments (a vfork parent resumes mid-exec): wait for the script to speak.
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready, "ready\n");
        let script = script_of(child.id());
        drop(child.stdin.take());
        child.wait().unwrap();
        let want = std::fs::canonicalize(dir.path().join("wait.sh")).unwrap();
        assert_eq!(script, Some(want));
    }

    #[test]
    fn a_gone_process_has_no_facts() {
        // pid_max on Linux is at most 2^22; macOS pids stay below 100000.
        let gone = 4_194_304 + 17;
        assert_eq!(exe_of(gone), None);
        assert_eq!(parent_of(gone), None);
        assert_eq!(args_of(gone), None);
        assert_eq!(cwd_of(gone), None);
        assert_eq!(script_of(gone), None);
    }

    #[test]
    fn stat_with_parentheses_in_the_name() {
        assert_eq!(ppid_from_stat("42 (a) b) (c) S 77 42 42 0"), Some(77));
        assert_eq!(ppid_from_stat("42 (x) S"), None);
        assert_eq!(ppid_from_stat("garbage"), None);
    }

    #[test]
    fn procargs2_layout() {
        let mut buf = 3i32.to_ne_bytes().to_vec();
        buf.extend_from_slice(b"/usr/bin/python3\0\0\0\0");
        buf.extend_from_slice(b"python3\0-m\0pip\0");
        buf.extend_from_slice(b"TERM=xterm\0DISPLAY=:1\0\0junk after the end\0");
        let (args, env) = parse_procargs2(&buf).unwrap();
        assert_eq!(args, ["python3", "-m", "pip"]);
        assert_eq!(env, ["TERM=xterm", "DISPLAY=:1"]);
    }

    #[test]
    fn procargs2_truncated_or_lying() {
        assert_eq!(parse_procargs2(&[1, 0]), None, "shorter than argc");
        let mut buf = 5i32.to_ne_bytes().to_vec();
        buf.extend_from_slice(b"/bin/sh\0sh\0-c\0");
        assert_eq!(parse_procargs2(&buf), None, "argc larger than the strings");
        let mut buf = (-1i32).to_ne_bytes().to_vec();
        buf.extend_from_slice(b"/bin/sh\0sh\0");
        assert_eq!(parse_procargs2(&buf), None, "negative argc");
        let mut buf = 0i32.to_ne_bytes().to_vec();
        buf.extend_from_slice(b"/bin/sh");
        assert_eq!(parse_procargs2(&buf), None, "no NUL after the path");
    }

    #[test]
    fn nul_separated() {
        assert_eq!(split_nul(b"a\0\0b c\0"), ["a", "b c"]);
        assert!(split_nul(b"").is_empty());
    }
}
