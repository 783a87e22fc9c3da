//! The program a caller rule is about: an executable and, when that is an
//! interpreter, the script it runs (`python3` running `…/lib/gcloud.py`).
//!
//! The agent builds a [`Subject`] from a running process ([`Subject::of_process`]);
//! `touchgate-agent policy check` builds the same from a pid, or from a file the
//! way the kernel would start it ([`Subject::of_file`]: a `#!` line names the
//! interpreter and the file becomes its script). [`crate::policy::decide`] then
//! matches `callers` globs against either path.
//!
//! Invariants: both paths are canonical, as the kernel reports an executable;
//! a script is only ever named behind an interpreter (`touchgate::process::script_in`).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use touchgate::process::{self, Interpreter};

/// An executable and the script it runs, as far as either is known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    pub exe: Option<PathBuf>,
    pub script: Option<PathBuf>,
}

/// A [`Subject::of_file`] whose `#!` line names a shell: the file is probably a
/// launcher, and what it starts is what the agent will see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellLauncher;

impl ShellLauncher {
    /// The note `policy check` prints for a launcher at `file`.
    pub fn note(&self, file: &Path) -> String {
        format!(
            "note: {} is a shell script; a launcher like it may start another program, which is what the agent sees \
             (gcloud runs python on its lib/gcloud.py: write \"*/google-cloud-sdk/lib/gcloud.py\"); \
             check a running program with --pid PID",
            file.display()
        )
    }
}

impl Subject {
    /// What the agent sees of process `pid`.
    pub fn of_process(pid: u32) -> Subject {
        Subject {
            exe: process::exe_of(pid),
            script: process::script_of(pid),
        }
    }

    /// An executable given by path, followed through symlinks as the kernel would.
    pub fn of_exe(exe: &Path) -> Subject {
        Subject {
            exe: Some(canonical(exe)),
            script: None,
        }
    }

    /// An interpreter `exe` running `script`: an error (one line) when `exe` is no
    /// interpreter the agent names scripts for, or `script` is no file.
    pub fn of_exe_and_script(exe: &Path, script: &Path) -> Result<Subject, String> {
        let exe = canonical(exe);
        if Interpreter::of(&exe).is_none() {
            return Err(format!(
                "--script needs --exe to be an interpreter (python, node, ruby, perl, php, sh, bash, dash, zsh), not {}: \
                 the agent names a script only behind one",
                exe.display()
            ));
        }
        let script = std::fs::canonicalize(script)
            .ok()
            .filter(|p| p.is_file())
            .ok_or_else(|| format!("--script {}: no such file", script.display()))?;
        Ok(Subject {
            exe: Some(exe),
            script: Some(script),
        })
    }

    /// `file` as the kernel would run it: a file starting with `#!` runs its
    /// interpreter with the file as the script; anything else runs itself.
    /// Also says when that interpreter is a shell (see [`ShellLauncher`]).
    pub fn of_file(file: &Path) -> (Subject, Option<ShellLauncher>) {
        let Some((interpreter, arg)) = read_shebang(file) else {
            return (Subject::of_exe(file), None);
        };
        let mut args = Vec::new();
        let exe = if interpreter.file_name().is_some_and(|n| n == "env") {
            // `#!/usr/bin/env python3`: env runs the program it finds on PATH.
            let words = arg.as_deref().unwrap_or("");
            let words = words.strip_prefix("-S").unwrap_or(words);
            let mut words = words.split_whitespace().map(str::to_owned);
            let Some(program) = words.next() else {
                return (Subject::of_exe(&interpreter), None);
            };
            let exe = on_path(&program).unwrap_or_else(|| PathBuf::from(&program));
            args.push(program);
            args.extend(words);
            canonical(&exe)
        } else {
            args.push(interpreter.display().to_string());
            args.extend(arg);
            canonical(&interpreter)
        };
        args.push(file.display().to_string());
        let cwd = std::env::current_dir().ok();
        let script = process::script_in(&exe, &args, cwd.as_deref());
        let launcher = (Interpreter::of(&exe) == Some(Interpreter::Shell)).then_some(ShellLauncher);
        (
            Subject {
                exe: Some(exe),
                script,
            },
            launcher,
        )
    }

    /// The paths a `callers` glob may match: the executable, then the script.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.exe
            .iter()
            .chain(self.script.iter())
            .map(PathBuf::as_path)
    }

    /// What to add to `callers` to allow this program: its script if it has one,
    /// else its executable. gcloud's script becomes a glob that holds wherever
    /// the SDK is installed. Nothing for a shell: a shell mostly starts the
    /// program that asks (a launcher), so its own path would be the wrong fix.
    pub fn suggestion(&self) -> Option<String> {
        let exe = self.exe.as_deref();
        if exe.and_then(Interpreter::of) == Some(Interpreter::Shell) {
            return None;
        }
        let path = self
            .script
            .as_ref()
            .or(self.exe.as_ref())?
            .display()
            .to_string();
        Some(match path.find("/google-cloud-sdk/") {
            Some(i) => format!("*{}", &path[i..]),
            None => path,
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.exe, &self.script) {
            (Some(exe), Some(script)) => {
                write!(f, "{} running {}", exe.display(), script.display())
            }
            (Some(exe), None) => write!(f, "{}", exe.display()),
            (None, _) => f.write_str("an unknown program"),
        }
    }
}

/// `path` with symlinks resolved when it exists, else as given.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The interpreter and its one optional argument from `file`'s `#!` line, as
/// the kernel reads it: the first line of at most 256 bytes, the interpreter
/// up to the first blank, everything after it (trimmed) one argument.
fn read_shebang(file: &Path) -> Option<(PathBuf, Option<String>)> {
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(file)
        .ok()?
        .take(256)
        .read_to_end(&mut head)
        .ok()?;
    parse_shebang(&head)
}

fn parse_shebang(head: &[u8]) -> Option<(PathBuf, Option<String>)> {
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let line = line.trim_matches([' ', '\t', '\r']);
    let (interpreter, arg) = match line.split_once([' ', '\t']) {
        Some((i, a)) => (i, Some(a.trim_matches([' ', '\t']).to_owned())),
        None => (line, None),
    };
    if interpreter.is_empty() {
        return None;
    }
    Some((PathBuf::from(interpreter), arg.filter(|a| !a.is_empty())))
}

/// The first executable file `name` on this process's PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines() {
        assert_eq!(
            parse_shebang(b"#!/bin/sh\n#\n"),
            Some(("/bin/sh".into(), None))
        );
        assert_eq!(
            parse_shebang(b"#! /usr/bin/python3 -Es  \nimport x"),
            Some(("/usr/bin/python3".into(), Some("-Es".into())))
        );
        assert_eq!(
            parse_shebang(b"#!/usr/bin/env -S python3 -u\r\n"),
            Some(("/usr/bin/env".into(), Some("-S python3 -u".into())))
        );
        assert_eq!(parse_shebang(b"\x7fELF\x02\x01"), None);
        assert_eq!(parse_shebang(b"#!\n"), None);
        assert_eq!(parse_shebang(b""), None);
    }

    #[test]
    fn a_shell_launcher_is_the_shell_running_it() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = dir.path().join("gcloud");
        std::fs::write(&launcher, "#!/bin/sh\nexec python3 \"$0.py\" \"$@\"\n").unwrap();
        let (s, note) = Subject::of_file(&launcher);
        assert_eq!(s.exe, Some(std::fs::canonicalize("/bin/sh").unwrap()));
        assert_eq!(s.script, Some(std::fs::canonicalize(&launcher).unwrap()));
        let note = note.expect("a shell launcher gets a note").note(&launcher);
        assert!(
            note.contains("*/google-cloud-sdk/lib/gcloud.py") && note.contains("--pid"),
            "{note}"
        );
    }

    #[test]
    fn an_env_shebang_finds_the_interpreter_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/usr/bin/env python3\n").unwrap();
        let (s, note) = Subject::of_file(&tool);
        let python = on_path("python3").expect("python3 on PATH: install python3");
        assert_eq!(s.exe, Some(std::fs::canonicalize(python).unwrap()));
        assert_eq!(s.script, Some(std::fs::canonicalize(&tool).unwrap()));
        assert_eq!(note, None);
    }

    #[test]
    fn a_binary_is_itself() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(Subject::of_file(&me), (Subject::of_exe(&me), None));
        assert_eq!(Subject::of_exe(&me).to_string(), me.display().to_string());
    }

    #[test]
    fn a_script_needs_an_interpreter() {
        let me = std::env::current_exe().unwrap();
        let e = Subject::of_exe_and_script(&me, &me).unwrap_err();
        assert!(
            e.contains("--script needs --exe to be an interpreter"),
            "{e}"
        );
        let e = Subject::of_exe_and_script(Path::new("/bin/sh"), Path::new("/nonexistent/x.sh"))
            .unwrap_err();
        assert_eq!(e, "--script /nonexistent/x.sh: no such file");
    }

    #[test]
    fn suggestions_name_the_script_and_gclouds_anywhere() {
        let s = Subject {
            exe: Some("/usr/lib/google-cloud-sdk/platform/bundledpythonunix/bin/python3".into()),
            script: Some("/usr/lib/google-cloud-sdk/lib/gcloud.py".into()),
        };
        assert_eq!(
            s.suggestion().as_deref(),
            Some("*/google-cloud-sdk/lib/gcloud.py")
        );
        assert_eq!(
            s.to_string(),
            "/usr/lib/google-cloud-sdk/platform/bundledpythonunix/bin/python3 running /usr/lib/google-cloud-sdk/lib/gcloud.py"
        );
        let s = Subject {
            exe: Some("/usr/bin/python3.11".into()),
            script: Some("/home/u/train.py".into()),
        };
        assert_eq!(s.suggestion().as_deref(), Some("/home/u/train.py"));
        assert_eq!(Subject::default().suggestion(), None);
        let launcher = Subject {
            exe: Some("/usr/bin/dash".into()),
            script: Some("/usr/lib/google-cloud-sdk/bin/gcloud".into()),
        };
        assert_eq!(launcher.suggestion(), None);
        assert_eq!(Subject::default().to_string(), "an unknown program");
    }
}
