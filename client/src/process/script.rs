//! The script an interpreter runs, read from its argument vector.
//!
//! `/usr/bin/gcloud` is a shell launcher that execs `python3 …/lib/gcloud.py`:
//! the kernel then reports the interpreter as the executable, and a rule about
//! gcloud has to name the script. This module says which executables are
//! interpreters and which file, if any, one of them was started on.
//!
//! Invariants:
//! - Options are read per interpreter family from a table. An option the table
//!   does not know (it might take a value and hide the real script behind it),
//!   code given inline (`-c`, `-m`, `-e`, …), standard input (`-`) and help or
//!   version flags all mean *no script*: a wrong answer here could only ever
//!   name the wrong file, so an unsure one names none.
//! - A script is an existing regular file, canonicalised (symlinks and `..`
//!   resolved), a relative path resolved against the process's current
//!   directory — which the process may have changed since it started, like
//!   anything else a process of the same user says about itself.

use std::path::{Path, PathBuf};

/// An interpreter family: they share how their command line reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpreter {
    Python,
    Node,
    Ruby,
    Perl,
    Php,
    /// sh, bash, dash, zsh.
    Shell,
}

impl Interpreter {
    /// The family of executable `exe` by its file name (`python3.11`, `bash`, …), if any.
    pub fn of(exe: &Path) -> Option<Interpreter> {
        let name = exe.file_name()?.to_str()?;
        let family = [
            ("python", Interpreter::Python),
            ("nodejs", Interpreter::Node),
            ("node", Interpreter::Node),
            ("ruby", Interpreter::Ruby),
            ("perl", Interpreter::Perl),
            ("php", Interpreter::Php),
        ];
        // A version may follow (`python3.11`, `perl5.36.0`), nothing else:
        // `node_exporter` or `python3-config` run no scripts.
        let versioned = |p: &str| {
            name.strip_prefix(p)
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        };
        if let Some((_, f)) = family.iter().find(|(p, _)| versioned(p)) {
            return Some(*f);
        }
        matches!(name, "sh" | "bash" | "dash" | "zsh").then_some(Interpreter::Shell)
    }

    fn options(self) -> &'static Options {
        match self {
            Interpreter::Python => &PYTHON,
            Interpreter::Node => &NODE,
            Interpreter::Ruby => &RUBY,
            Interpreter::Perl => &PERL,
            Interpreter::Php => &PHP,
            Interpreter::Shell => &SHELL,
        }
    }
}

/// How one family's options read. Anything not listed means "no script".
struct Options {
    /// Short options without a value (`-u`, `-OO`, clusters like `-Es`).
    flags: &'static str,
    /// Short options with a value: the rest of the cluster, else the next argument.
    with_value: &'static str,
    /// Short options whose value, if any, is attached (perl `-l`, `-0777`).
    attached: &'static str,
    /// The short option whose value is the script itself (php `-f FILE`).
    script_value: Option<char>,
    /// Long options (without `--`) that take no value.
    long_flags: &'static [&'static str],
    /// Long options whose value is the next argument (or attached with `=`).
    long_with_value: &'static [&'static str],
    /// Whether `--name=value` is one argument for any long option.
    long_equals: bool,
    /// Whether `+x` options exist besides `-x` (shells).
    plus: bool,
    /// Whether `--` ends the options, the next argument being the script.
    double_dash: bool,
}

// `c` (command) and `m` (module) are missing on purpose: no script then.
const PYTHON: Options = Options {
    flags: "bBdEiIOPqRsSux",
    with_value: "WX",
    attached: "",
    script_value: None,
    long_flags: &[],
    long_with_value: &["check-hash-based-pycs"],
    long_equals: false,
    plus: false,
    double_dash: true,
};

// `-e`/`--eval`, `-p`/`--print`, `-i`, `-c`/`--check`, `--test`, `--run`: no script.
const NODE: Options = Options {
    flags: "",
    with_value: "rC",
    attached: "",
    script_value: None,
    long_flags: &[
        "abort-on-uncaught-exception",
        "enable-source-maps",
        "experimental-vm-modules",
        "expose-gc",
        "inspect",
        "inspect-brk",
        "no-deprecation",
        "no-warnings",
        "preserve-symlinks",
        "preserve-symlinks-main",
        "throw-deprecation",
        "trace-deprecation",
        "trace-uncaught",
        "trace-warnings",
    ],
    long_with_value: &[
        "conditions",
        "env-file",
        "experimental-loader",
        "import",
        "input-type",
        "loader",
        "require",
        "title",
    ],
    long_equals: true,
    plus: false,
    double_dash: true,
};

// `-e` (code), `-S` (script from PATH) and `-C` (another directory): no script.
const RUBY: Options = Options {
    flags: "adlnpsvwy",
    with_value: "EIr",
    attached: "0FiKWx",
    script_value: None,
    long_flags: &["disable-gems", "jit", "verbose", "yjit"],
    long_with_value: &["encoding"],
    long_equals: true,
    plus: false,
    double_dash: true,
};

// `-e`/`-E` (code), `-S` (script from PATH), `-v`/`-V`/`-h`: no script.
const PERL: Options = Options {
    flags: "anpstTuUwWX",
    with_value: "IMm",
    attached: "0CdDilx",
    script_value: None,
    long_flags: &[],
    long_with_value: &[],
    long_equals: false,
    plus: false,
    double_dash: true,
};

// `-r` (code), `-B`/`-R`/`-F`/`-E` (per line), `-a`, `-S` (server): no script.
const PHP: Options = Options {
    flags: "eHnq",
    with_value: "cdfz",
    attached: "",
    script_value: Some('f'),
    long_flags: &[],
    long_with_value: &[],
    long_equals: false,
    plus: false,
    double_dash: false,
};

// `-c` (command), `-s` (standard input), `-D` (dump strings): no script.
const SHELL: Options = Options {
    flags: "abefhiklmnprtuvxBCEHPT",
    with_value: "oO",
    attached: "",
    script_value: None,
    long_flags: &[
        "debugger",
        "login",
        "noediting",
        "noprofile",
        "norc",
        "posix",
        "restricted",
        "verbose",
    ],
    long_with_value: &["init-file", "rcfile"],
    long_equals: false,
    plus: true,
    double_dash: true,
};

/// The script that `args` (`argv[0]` first) make interpreter `exe` run: the first
/// argument that is not an option, resolved against `cwd`, canonicalised, and
/// an existing regular file. `None` for a program that is no interpreter, for
/// code given inline, and whenever an option is not known (see the module doc).
pub fn script_in(exe: &Path, args: &[String], cwd: Option<&Path>) -> Option<PathBuf> {
    let opts = Interpreter::of(exe)?.options();
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if arg == "--" {
            return if opts.double_dash {
                resolve(rest.next()?, cwd)
            } else {
                None
            };
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, _)) if opts.long_equals => (n, true),
                _ => (long, false),
            };
            if opts.long_with_value.contains(&name) {
                if !value {
                    rest.next()?;
                }
            } else if !(opts.long_flags.contains(&name)
                || value && opts.long_equals && known_free(name))
            {
                return None;
            }
            continue;
        }
        let cluster = if let Some(c) = arg.strip_prefix('-') {
            c
        } else if let Some(c) = arg.strip_prefix('+').filter(|_| opts.plus) {
            c
        } else {
            return resolve(arg, cwd);
        };
        if cluster.is_empty() {
            return None; // `-`: the program comes from standard input.
        }
        for (i, ch) in cluster.char_indices() {
            if opts.flags.contains(ch) {
                continue;
            }
            if opts.attached.contains(ch) {
                break;
            }
            if !opts.with_value.contains(ch) {
                return None;
            }
            let attached = &cluster[i + ch.len_utf8()..];
            let value = if attached.is_empty() {
                rest.next()?.as_str()
            } else {
                attached
            };
            if opts.script_value == Some(ch) {
                return resolve(value, cwd);
            }
            break;
        }
    }
    None
}

/// Whether `--name=value` leaves the script where it is: every option but the
/// ones that give the program inline or from elsewhere (node `--eval=…`).
fn known_free(name: &str) -> bool {
    !matches!(
        name,
        "eval" | "print" | "interactive" | "check" | "test" | "run" | "help" | "version"
    )
}

/// `arg` as an existing regular file: relative to `cwd`, canonicalised.
fn resolve(arg: &str, cwd: Option<&Path>) -> Option<PathBuf> {
    let path = Path::new(arg);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd?.join(path)
    };
    let path = std::fs::canonicalize(path).ok()?;
    std::fs::metadata(&path).ok()?.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with `gcloud.py` and `tool.js` in it, and its canonical path.
    fn scripts() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        for f in ["gcloud.py", "tool.js", "run.sh", "x.rb", "x.pl", "x.php"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let canon = std::fs::canonicalize(dir.path()).unwrap();
        (dir, canon)
    }

    fn script(exe: &str, args: &[&str], cwd: &Path) -> Option<PathBuf> {
        let args: Vec<String> = std::iter::once(exe)
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        script_in(Path::new(exe), &args, Some(cwd))
    }

    #[test]
    fn interpreters_by_name() {
        for (exe, family) in [
            ("/usr/bin/python3.11", Some(Interpreter::Python)),
            (
                "/opt/sdk/platform/bundledpythonunix/bin/python3",
                Some(Interpreter::Python),
            ),
            ("/usr/bin/node", Some(Interpreter::Node)),
            ("/usr/bin/ruby3.1", Some(Interpreter::Ruby)),
            ("/usr/bin/perl5.36.0", Some(Interpreter::Perl)),
            ("/usr/bin/php8.2", Some(Interpreter::Php)),
            ("/bin/dash", Some(Interpreter::Shell)),
            ("/usr/bin/zsh", Some(Interpreter::Shell)),
            ("/usr/bin/nodejs", Some(Interpreter::Node)),
            ("/usr/bin/gcloud", None),
            ("/usr/bin/node_exporter", None),
            ("/usr/bin/python3-config", None),
            ("/usr/bin/shred", None),
        ] {
            assert_eq!(Interpreter::of(Path::new(exe)), family, "{exe}");
        }
    }

    #[test]
    fn python_with_options() {
        let (_d, dir) = scripts();
        let gcloud = Some(dir.join("gcloud.py"));
        let py = "/usr/bin/python3";
        assert_eq!(script(py, &["gcloud.py", "auth", "list"], &dir), gcloud);
        assert_eq!(script(py, &["-S", "-u", "gcloud.py", "-c"], &dir), gcloud);
        assert_eq!(
            script(py, &["-Es", "-W", "ignore", "gcloud.py"], &dir),
            gcloud
        );
        assert_eq!(
            script(py, &["-Wignore", "-X", "utf8", "gcloud.py"], &dir),
            gcloud
        );
        assert_eq!(script(py, &["--", "gcloud.py"], &dir), gcloud);
        // A value is not the script: `-W gcloud.py` warns about it, python reads stdin.
        assert_eq!(script(py, &["-W", "gcloud.py"], &dir), None);
    }

    #[test]
    fn inline_code_module_and_stdin_are_no_script() {
        let (_d, dir) = scripts();
        let py = "/usr/bin/python3";
        assert_eq!(script(py, &["-m", "pip", "gcloud.py"], &dir), None);
        assert_eq!(script(py, &["-c", "print(1)", "gcloud.py"], &dir), None);
        assert_eq!(script(py, &["-Sc", "print(1)", "gcloud.py"], &dir), None);
        assert_eq!(script(py, &["-", "gcloud.py"], &dir), None);
        assert_eq!(script(py, &[], &dir), None);
        assert_eq!(script("/usr/bin/node", &["-e", "1", "tool.js"], &dir), None);
        assert_eq!(
            script("/usr/bin/node", &["--eval=1", "tool.js"], &dir),
            None
        );
        assert_eq!(script("/usr/bin/perl", &["-e", "1", "x.pl"], &dir), None);
        assert_eq!(script("/usr/bin/ruby", &["-e", "1", "x.rb"], &dir), None);
        assert_eq!(script("/bin/bash", &["-c", "x", "run.sh"], &dir), None);
        assert_eq!(script("/usr/bin/php", &["-r", "1;", "x.php"], &dir), None);
    }

    #[test]
    fn an_unknown_option_names_no_script() {
        // `--frobnicate` might take `gcloud.py` as its value and run what follows.
        let (_d, dir) = scripts();
        assert_eq!(
            script(
                "/usr/bin/python3",
                &["--frobnicate", "gcloud.py", "tool.js"],
                &dir
            ),
            None
        );
        assert_eq!(
            script("/usr/bin/node", &["--mystery", "tool.js"], &dir),
            None
        );
    }

    #[test]
    fn node_ruby_perl_php() {
        let (_d, dir) = scripts();
        let node = "/usr/bin/node";
        let tool = Some(dir.join("tool.js"));
        assert_eq!(script(node, &["tool.js", "--x"], &dir), tool);
        assert_eq!(
            script(
                node,
                &["--no-warnings", "-r", "dotenv/config", "tool.js"],
                &dir
            ),
            tool
        );
        assert_eq!(
            script(node, &["--max-old-space-size=4096", "tool.js"], &dir),
            tool
        );
        assert_eq!(
            script(node, &["--require", "tool.js", "nothere.js"], &dir),
            None
        );
        assert_eq!(
            script("/usr/bin/ruby", &["-w", "-Ilib", "x.rb"], &dir),
            Some(dir.join("x.rb"))
        );
        assert_eq!(
            script("/usr/bin/perl", &["-w", "-l", "-I", "lib", "x.pl"], &dir),
            Some(dir.join("x.pl"))
        );
        assert_eq!(
            script("/usr/bin/php", &["-n", "-f", "x.php"], &dir),
            Some(dir.join("x.php"))
        );
        assert_eq!(
            script("/usr/bin/php", &["-d", "a=b", "x.php"], &dir),
            Some(dir.join("x.php"))
        );
    }

    #[test]
    fn shell_scripts() {
        let (_d, dir) = scripts();
        let run = Some(dir.join("run.sh"));
        assert_eq!(script("/bin/bash", &["run.sh", "a"], &dir), run);
        assert_eq!(
            script("/bin/bash", &["-eu", "-o", "pipefail", "run.sh"], &dir),
            run
        );
        assert_eq!(script("/bin/sh", &["+x", "--norc", "run.sh"], &dir), run);
        assert_eq!(script("/bin/sh", &["-s", "run.sh"], &dir), None);
        // Not an interpreter: its arguments name nothing.
        assert_eq!(script("/usr/bin/cat", &["run.sh"], &dir), None);
    }

    #[test]
    fn relative_absolute_and_missing_paths() {
        let (_d, dir) = scripts();
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let gcloud = Some(dir.join("gcloud.py"));
        let py = "/usr/bin/python3";
        // Relative to the process's directory, `..` resolved.
        assert_eq!(script(py, &["../gcloud.py"], &sub), gcloud);
        assert_eq!(script(py, &["./sub/../gcloud.py"], &dir), gcloud);
        let abs = dir.join("sub/../gcloud.py");
        assert_eq!(script(py, &[abs.to_str().unwrap()], Path::new("/")), gcloud);
        // Through a symlink: the file it points at.
        let link = dir.join("link.py");
        std::os::unix::fs::symlink(dir.join("gcloud.py"), &link).unwrap();
        assert_eq!(script(py, &["link.py"], &dir), gcloud);
        // Missing, a directory, or a relative path without a known directory.
        assert_eq!(script(py, &["nothere.py"], &dir), None);
        assert_eq!(script(py, &["sub"], &dir), None);
        let args = ["python3".to_owned(), "gcloud.py".to_owned()];
        assert_eq!(script_in(Path::new(py), &args, None), None);
    }
}
