//! `scripts/install.sh` and `scripts/package.sh` for real: an install into a
//! temp prefix (the programs, the docker helper link, completions, man pages,
//! units; the installed agent believes the installed shim beside it) and its
//! uninstall (the prefix exactly as before); the .deb unpacked with
//! `dpkg-deb -x` and its programs run, and the tarball.
//!
//! Both scripts make one release build (`cargo build --release`); the tests
//! share it (cargo builds once, the second call finds it up to date).

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{config_text, emulator, stderr, stdout, AgentProc, INFERENCE};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn script(name: &str) -> Command {
    Command::new(repo().join("scripts").join(name))
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}{}", stdout(&o), stderr(&o));
    o
}

fn install(prefix: &Path, extra: &[&str]) -> Output {
    script("install.sh")
        .arg("--prefix")
        .arg(prefix)
        .args(extra)
        .output()
        .unwrap()
}

/// Every path under `dir` with its kind, mode and content (or link target).
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                format!("{} bytes", std::fs::read(&p).unwrap().len())
            };
            out.push(format!(
                "{} {:o} {what}",
                p.display(),
                m.permissions().mode()
            ));
        }
    }
    out.sort();
    out
}

const PROGRAMS: [&str; 3] = ["touchgate", "touchgate-agent", "touchgate-shim"];

fn assert_versions(bin: &Path) {
    for p in PROGRAMS {
        let o = run(Command::new(bin.join(p)).arg("--version"));
        assert_eq!(
            stdout(&o).trim(),
            format!("{p} {}", env!("CARGO_PKG_VERSION")),
            "{p} --version"
        );
    }
}

/// Completions for the three shells, named as each shell looks them up, and a
/// page per command.
fn assert_completions_and_pages(share: &Path, man_suffix: &str) {
    for p in PROGRAMS {
        let bash =
            std::fs::read_to_string(share.join("bash-completion/completions").join(p)).unwrap();
        let func = format!("_{}", p.replace('-', "__"));
        assert!(
            bash.contains(&format!("complete -F {func} ")) && bash.contains(&format!(" {p}\n")),
            "{bash}"
        );
        let zsh = std::fs::read_to_string(share.join("zsh/site-functions").join(format!("_{p}")))
            .unwrap();
        assert!(zsh.starts_with(&format!("#compdef {p}")), "{zsh}");
        let fish = std::fs::read_to_string(
            share
                .join("fish/vendor_completions.d")
                .join(format!("{p}.fish")),
        )
        .unwrap();
        assert!(fish.contains(&format!("complete -c {p}")), "{fish}");
        for text in [&bash, &zsh, &fish] {
            assert!(
                !text.contains("generate"),
                "the installers' word is offered to users"
            );
        }
        let page = share.join("man/man1").join(format!("{p}.1{man_suffix}"));
        assert!(page.is_file(), "{}", page.display());
    }
    for page in [
        "touchgate-setup",
        "touchgate-agent-audit-verify",
        "touchgate-shim-serve",
    ] {
        assert!(
            share
                .join("man/man1")
                .join(format!("{page}.1{man_suffix}"))
                .is_file(),
            "{page}.1"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_puts_everything_in_the_prefix_and_uninstall_leaves_it_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    // Someone else's files in the prefix: untouched by install and uninstall.
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::write(prefix.join("bin/theirs"), "#!/bin/sh\n").unwrap();
    std::fs::create_dir_all(prefix.join("share/man/man1")).unwrap();
    std::fs::write(prefix.join("share/man/man1/theirs.1"), ".TH theirs 1\n").unwrap();
    let before = listing(tmp.path());

    let o = install(&prefix, &[]);
    assert!(
        o.status.success(),
        "install.sh: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let summary = stdout(&o);
    for line in [
        "programs",
        "docker helper",
        "completions",
        "man pages",
        "systemd units",
        "manifest",
    ] {
        assert!(
            summary.contains(line),
            "no {line:?} in the summary: {summary}"
        );
    }
    let bin = prefix.join("bin");
    assert_versions(&bin);
    assert_completions_and_pages(&prefix.join("share"), "");
    let page = std::fs::read_to_string(prefix.join("share/man/man1/touchgate.1")).unwrap();
    assert!(
        page.contains(".TH touchgate 1") && page.contains("setup"),
        "{page}"
    );

    // The docker helper: the shim's real absolute path, which `touchgate setup
    // docker` recognises as the link it would make.
    let shim = std::fs::canonicalize(bin.join("touchgate-shim")).unwrap();
    assert_eq!(
        std::fs::read_link(bin.join("docker-credential-touchgate")).unwrap(),
        shim
    );
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let o = run(Command::new(bin.join("touchgate"))
        .args(["setup", "docker"])
        .env("HOME", &home)
        .env("XDG_BIN_HOME", &bin)
        .env("XDG_CONFIG_HOME", home.join(".config")));
    assert!(stdout(&o).contains("already there"), "{}", stdout(&o));

    // The units name the installed agent and verify offline.
    let units = prefix.join("lib/systemd/user");
    let service = std::fs::read_to_string(units.join("touchgate-agent.service")).unwrap();
    assert!(
        service.contains(&format!(
            "\nExecStart={}/touchgate-agent --foreground\n",
            bin.display()
        )),
        "{service}"
    );
    let rt = tmp.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(units.join("touchgate-agent.socket"))
        .arg(units.join("touchgate-agent.service"))
        .env("XDG_RUNTIME_DIR", &rt)
        .env("HOME", &home)
        .output()
        .expect("systemd-analyze is needed for this test: apt-get install systemd");
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}",
        stderr(&o)
    );

    // The installed agent believes the installed shim beside it: a program
    // named gcloud running it gets a profile only gcloud may use.
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "")
        + &format!("\n[profiles.train]\nservice_account = \"{INFERENCE}\"\ntouch = \"every-token\"\ncallers = [\"*/bin/gcloud\"]\n");
    let agent = AgentProc::start_exe(&bin.join("touchgate-agent"), &cfg, vec![]);
    agent.enrol_and_import(&key_json);
    let gcloud = tmp.path().join("tools/bin/gcloud");
    std::fs::create_dir_all(gcloud.parent().unwrap()).unwrap();
    common::copy_program(Path::new("/bin/sh"), &gcloud);
    let o = run(Command::new(&gcloud)
        .args([
            "-c",
            &format!(
                "'{}' token --profile train; exit $?",
                bin.join("touchgate-shim").display()
            ),
        ])
        .envs(agent.env()));
    assert!(stdout(&o).trim().starts_with("ya29."), "{}", stdout(&o));
    assert!(agent.stderr().contains("gcloud (pid"), "{}", agent.stderr());
    drop(agent);

    // Again (an upgrade): fine, same files.
    let installed = listing(tmp.path());
    let o = install(&prefix, &[]);
    assert!(o.status.success(), "second install: {}", stderr(&o));
    assert_eq!(listing(tmp.path()), installed);

    // Uninstall: exactly as before; twice is fine.
    let o = install(&prefix, &["--uninstall"]);
    assert!(
        o.status.success(),
        "uninstall: {}{}",
        stdout(&o),
        stderr(&o)
    );
    std::fs::remove_dir_all(&home).unwrap();
    std::fs::remove_dir_all(tmp.path().join("tools")).unwrap();
    std::fs::remove_dir_all(&rt).unwrap();
    assert_eq!(listing(tmp.path()), before);
    let o = install(&prefix, &["--uninstall"]);
    assert!(
        o.status.success() && stdout(&o).contains("nothing to remove"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(listing(tmp.path()), before);

    // A file install.sh did not make is never replaced: one line naming it, nothing changed.
    std::fs::write(prefix.join("bin/touchgate"), "#!/bin/sh\necho mine\n").unwrap();
    let before = listing(tmp.path());
    let o = install(&prefix, &[]);
    let e = common::assert_one_line_error(&o, "was not installed by install.sh");
    assert!(
        e.contains(&prefix.join("bin/touchgate").display().to_string()),
        "{e}"
    );
    assert_eq!(listing(tmp.path()), before);
}

#[test]
fn the_deb_and_the_tarball_hold_working_programs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dist");
    let o = run(script("package.sh").arg("--out").arg(&out));
    let files: Vec<PathBuf> = stdout(&o).lines().map(PathBuf::from).collect();
    let version = env!("CARGO_PKG_VERSION");
    let deb = files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    assert!(deb
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("touchgate_{version}_")));

    let o = run(Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .args(["Package", "Version", "Depends"]));
    let fields = stdout(&o);
    assert!(
        fields.contains("Package: touchgate") && fields.contains(&format!("Version: {version}")),
        "{fields}"
    );
    // The libraries the programs link, with or without dpkg-shlibdeps.
    for lib in ["libc6", "libudev1"] {
        assert!(fields.contains(lib), "{lib}: {fields}");
    }

    let root = tmp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    let bin = root.join("usr/bin");
    assert_versions(&bin);
    let o = run(Command::new(bin.join("touchgate-agent")).arg("--help"));
    assert!(
        stdout(&o).contains("--foreground") && stdout(&o).contains("Hands out touch-gated"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        std::fs::read_link(bin.join("docker-credential-touchgate")).unwrap(),
        Path::new("/usr/bin/touchgate-shim")
    );
    assert_completions_and_pages(&root.join("usr/share"), ".gz");
    let service =
        std::fs::read_to_string(root.join("usr/lib/systemd/user/touchgate-agent.service")).unwrap();
    assert!(service.contains("\nExecStart=/usr/bin/touchgate-agent --foreground\n"));
    assert!(root
        .join("usr/lib/systemd/user/touchgate-agent.socket")
        .is_file());
    let rule =
        std::fs::read_to_string(root.join("usr/lib/udev/rules.d/70-touchgate-fido.rules")).unwrap();
    assert!(rule.contains("TAG+=\"uaccess\""), "{rule}");
    assert!(root.join("usr/share/doc/touchgate/copyright").is_file());

    let tarball = files
        .iter()
        .find(|f| f.to_string_lossy().ends_with(".tar.gz"))
        .expect("a tarball");
    let x = tmp.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&x)
        .arg("-xzf")
        .arg(tarball));
    let top: Vec<_> = std::fs::read_dir(&x)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(top.len(), 1, "one directory: {top:?}");
    assert_versions(&top[0].join("bin"));
    assert!(
        top[0].join("LICENSE").is_file() && top[0].join("share/man/man1/touchgate.1").is_file()
    );
}
