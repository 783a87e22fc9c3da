//! Shell completions (bash, zsh, fish) and man pages for the three binaries,
//! made from each binary's own clap definition: `BINARY generate WHAT
//! [--out-dir DIR]` (`scripts/install.sh` and `scripts/package.sh` run it), so
//! they always list exactly the options that binary accepts.
//!
//! `generate` is looked for before the binary's own parser runs
//! ([`if_requested`]) rather than being one of its subcommands: the completion
//! generators list hidden subcommands too, and a word for installers has no
//! place in the user's completions, help or man pages.
//!
//! # Layout
//!
//! One file: [`if_requested`] (the hook each binary's `main` calls first) and
//! the writers of completions and man pages it dispatches to.
//!
//! Invariants: the files get the names the shells and man look up (bash
//! `NAME`, zsh `_NAME`, fish `NAME.fish`, man `NAME.1` and `NAME-SUB.1` for
//! each visible subcommand); nothing but those files is written.
#![deny(rustdoc::broken_intra_doc_links)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use clap_complete::Shell;

/// The first argument that asks for [`GenerateArgs`].
pub const SUBCOMMAND: &str = "generate";

/// `BINARY generate WHAT [--out-dir DIR]`.
#[derive(clap::Parser, Debug)]
pub struct GenerateArgs {
    /// What to make: completions for bash, zsh or fish, or the man pages.
    #[arg(value_enum)]
    pub what: Generated,
    /// Write the file(s) into DIR (man: a page per subcommand too); without it, print
    /// the completions (or the top man page) on standard output.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// What `generate` makes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generated {
    Bash,
    Zsh,
    Fish,
    Man,
}

/// When the binary's first argument is `generate`: do it for the binary whose
/// clap definition `cli` gives, and the exit code to return from `main`.
/// Else `None`, and the binary parses its arguments as usual.
pub fn if_requested(cli: impl FnOnce() -> clap::Command) -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_none_or(|a| a != SUBCOMMAND) {
        return None;
    }
    let cmd = cli();
    let parsed = parse(cmd.get_name(), args).unwrap_or_else(|e| e.exit());
    Some(run(cmd, &parsed))
}

/// `generate`'s arguments (`args` starts with the word `generate`).
fn parse(bin: &str, args: impl IntoIterator<Item = OsString>) -> clap::error::Result<GenerateArgs> {
    let matches = GenerateArgs::command()
        .bin_name(format!("{bin} {SUBCOMMAND}"))
        .about(format!("Write {bin}'s shell completions or man pages"))
        .try_get_matches_from(args)?;
    GenerateArgs::from_arg_matches(&matches)
}

/// Run `generate` for the binary whose clap definition is `cmd`: one line on
/// standard output per file written, a one-line error (and exit 1) when one
/// cannot be.
pub fn run(cmd: clap::Command, args: &GenerateArgs) -> ExitCode {
    let name = cmd.get_name().to_string();
    match write(cmd, args) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Write what `args` asks for; the files written (none when printed).
pub fn write(mut cmd: clap::Command, args: &GenerateArgs) -> Result<Vec<PathBuf>, String> {
    let name = cmd.get_name().to_string();
    let Some(dir) = &args.out_dir else {
        // Rendered first: the generators panic on a write error (a closed pipe).
        let mut buf = Vec::new();
        match shell(args.what) {
            Some(sh) => clap_complete::generate(sh, &mut cmd, &name, &mut buf),
            None => clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .map_err(|e| format!("cannot render the man page: {e}"))?,
        }
        let mut out = std::io::stdout().lock();
        return out
            .write_all(&buf)
            .and_then(|()| out.flush())
            .map(|()| Vec::new())
            .map_err(|e| format!("cannot write to standard output: {e}"));
    };
    if !dir.is_dir() {
        return Err(format!(
            "--out-dir {} is not a directory: create it first",
            dir.display()
        ));
    }
    match shell(args.what) {
        Some(sh) => {
            let path = dir.join(file_name(sh, &name));
            let mut buf = Vec::new();
            clap_complete::generate(sh, &mut cmd, &name, &mut buf);
            std::fs::write(&path, buf)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(vec![path])
        }
        None => man_pages(cmd, dir),
    }
}

fn shell(what: Generated) -> Option<Shell> {
    match what {
        Generated::Bash => Some(Shell::Bash),
        Generated::Zsh => Some(Shell::Zsh),
        Generated::Fish => Some(Shell::Fish),
        Generated::Man => None,
    }
}

/// The name each shell's completion directory expects for `bin`.
fn file_name(sh: Shell, bin: &str) -> String {
    match sh {
        Shell::Zsh => format!("_{bin}"),
        Shell::Fish => format!("{bin}.fish"),
        _ => bin.to_string(),
    }
}

/// `NAME.1` and a page per visible subcommand (`NAME-SUB.1`), sorted.
fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let name = cmd.get_name().to_string();
    clap_mangen::generate_to(cmd, dir)
        .map_err(|e| format!("cannot write man pages to {}: {e}", dir.display()))?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let ours = |f: &str| {
        f.strip_suffix(".1")
            .is_some_and(|s| s == name || s.starts_with(&format!("{name}-")))
    };
    let mut made: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|f| ours(&f.to_string_lossy())))
        .collect();
    made.sort();
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Parser)]
    #[command(name = "demo-bin", version)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// A visible one.
        Status {
            #[arg(long)]
            profile: Option<String>,
        },
    }

    fn gen(what: Generated, dir: &Path) -> Vec<PathBuf> {
        let args = GenerateArgs {
            what,
            out_dir: Some(dir.to_path_buf()),
        };
        write(Cli::command(), &args).unwrap()
    }

    #[test]
    fn completions_have_the_names_shells_look_up_and_no_hidden_subcommand() {
        let d = tempfile::tempdir().unwrap();
        for (what, name) in [
            (Generated::Bash, "demo-bin"),
            (Generated::Zsh, "_demo-bin"),
            (Generated::Fish, "demo-bin.fish"),
        ] {
            let files = gen(what, d.path());
            assert_eq!(files, vec![d.path().join(name)]);
            let text = std::fs::read_to_string(&files[0]).unwrap();
            assert!(text.contains("status"), "{name}: {text}");
            assert!(text.contains("profile"), "{name}");
            assert!(
                !text.contains("generate"),
                "{name} offers the hidden subcommand"
            );
        }
    }

    #[test]
    fn man_pages_one_per_visible_command() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("other.1"), "not ours").unwrap();
        let files = gen(Generated::Man, d.path());
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["demo-bin-status.1", "demo-bin.1"]);
        let top = std::fs::read_to_string(d.path().join("demo-bin.1")).unwrap();
        assert!(
            top.starts_with(".ie") || top.contains(".TH demo-bin 1"),
            "{top}"
        );
        assert!(!top.contains("generate"));
        assert_eq!(
            std::fs::read_to_string(d.path().join("other.1")).unwrap(),
            "not ours"
        );
    }

    #[test]
    fn arguments_are_parsed_as_generate_of_the_binary() {
        let a = parse(
            "demo-bin",
            ["generate", "zsh", "--out-dir", "/d"].map(OsString::from),
        )
        .unwrap();
        assert_eq!((a.what, a.out_dir), (Generated::Zsh, Some("/d".into())));
        let e = parse("demo-bin", ["generate", "tcsh"].map(OsString::from)).unwrap_err();
        assert!(e.to_string().contains("tcsh"), "{e}");
    }

    #[test]
    fn a_missing_directory_is_one_line_naming_it() {
        let args = GenerateArgs {
            what: Generated::Man,
            out_dir: Some("/nonexistent/touchgate-man".into()),
        };
        let e = write(Cli::command(), &args).unwrap_err();
        assert!(
            e.contains("/nonexistent/touchgate-man") && !e.contains('\n'),
            "{e}"
        );
    }
}
