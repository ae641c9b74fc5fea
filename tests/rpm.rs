//! RPM integration with the real rpmbuild: tests/rpm/pyclink-sample.spec is built with macros/
//! and the freshly built pyclink, and checked from the RPMs themselves (header inodes, the
//! payload extracted by rpm2cpio | cpio, pyc-audit); packaging/pyclink.spec is built from
//! `git archive`, linted, and its installed macros drive one more sample build.
//!
//! Fedora is simulated in a private mount namespace where a Fedora-shaped copy of rpm's
//! configuration directory stands at its own path (tests/rpm/fedora_sim.rs). Every Fedora test
//! runs twice: `model::NAME` with the project's own model of Fedora's macro files
//! (tests/rpm/fedora-model), everywhere, and `real::NAME` with Fedora's real files where they are
//! found (tests/rpm/fedora/README.md; otherwise it prints SKIP and passes, in CI too).
//! `fedora_model_matches_fedoras_files` compares the two wherever real files are found.

mod common;
use common::*;

#[path = "rpm/fedora_sim.rs"]
mod fedora_sim;
use fedora_sim::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PRIVATE_DIR: &str = "usr/share/pyclink-sample";
/// Where `--with buildsys_pyc` has the package's build system write pycs itself, at levels 0
/// and 1 (compileall without --hardlink-dupes).
const TOOL_DIR: &str = "usr/lib/pyclink-sample/tool";
const SAMPLE_RPMS: [&str; 2] = ["pyclink-sample", "pyclink-sample-extra"];

/// Where the macros come from.
#[derive(Clone)]
enum Macros {
    /// This rpm as it is (no Python hooks at all) with macros.pyclink and macros.pyclink-plain
    /// read after the platform macros, as /etc/rpm/macros.pyclink does once installed.
    Plain,
    /// Fedora's macro files (the model or the real ones), with macros.zz-pyclink among them when
    /// `pyclink` is set (without it, Fedora's own hooks run: the stand-ins record them).
    Fedora { files: FedoraFiles, pyclink: bool },
    /// The files of the pyclink RPM, extracted under this directory and read from rpm's own
    /// macro path where they would be installed: %{_rpmmacrodir}, the platform, /etc/rpm.
    Installed(PathBuf),
}

/// The host python3 (common's [`host`]) and where rpm installs its modules.
struct Host {
    py: common::Host,
    /// The host python's purelib for prefix /usr (%python3_sitelib), without the leading '/'.
    sitelib: String,
}

fn host() -> Host {
    let py = common::host();
    let out = run(Command::new(&py.python).args([
        "-Ic",
        "import sysconfig; print(sysconfig.get_path('purelib', vars={'platbase': '/usr', 'base': '/usr'}))",
    ]));
    assert!(out.status.success());
    let sitelib = stdout(&out).trim().trim_start_matches('/').to_string();
    Host { py, sitelib }
}

fn rpm_eval(expr: &str) -> String {
    let out = run(Command::new("rpm").args(["--eval", expr]));
    assert!(out.status.success(), "rpm --eval {expr} failed");
    stdout(&out).trim().to_string()
}

/// A test that cannot run here returns after printing why; in CI it fails instead, so that a
/// missing prerequisite cannot pass for a green run.
fn skip_unless_ci(test: &str, reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} cannot run: {reason}"
    );
    println!("SKIP {test}: {reason}");
}

/// rpmbuild with only the environment a packager's shell would give it (see [`packager_env`]).
/// Also makes `topdir`/SOURCES for the caller to fill. With `fedora`, rpmbuild runs in a mount
/// namespace of its own where that tree is rpm's configuration directory, with Fedora's macro
/// path.
fn rpmbuild(topdir: &Path, fedora: Option<&FedoraRoot>) -> Command {
    let mut c = match fedora {
        None => Command::new("rpmbuild"),
        Some(f) => {
            let mut c = f.command("rpmbuild");
            c.args(f.macro_args());
            c
        }
    };
    packager_env(&mut c);
    std::fs::create_dir_all(topdir.join("SOURCES")).unwrap();
    c.args(["-bb", "--nodeps"]);
    c
}

/// Only the environment a packager's shell would give: cargo's test variables (CARGO_TARGET_DIR,
/// RUSTFLAGS, ...) or a SOURCE_DATE_EPOCH from CI must not leak into builds.
fn packager_env(c: &mut Command) {
    c.env_clear();
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        let keep = matches!(
            name.as_ref(),
            "PATH" | "HOME" | "TMPDIR" | "CARGO_HOME" | "RUSTUP_HOME" | "RUSTUP_TOOLCHAIN"
        ) || name.starts_with("PYENV");
        if keep {
            c.env(&k, &v);
        }
    }
}

struct Build {
    top: tempfile::TempDir,
    ok: bool,
    log: String,
    rpms: Vec<PathBuf>,
    secs: f64,
    /// The sample's modules in this build (see [`sample_modules`]).
    modules: Vec<(String, &'static str)>,
    /// Built `--with buildsys_pyc`.
    buildsys_pyc: bool,
    fedora: Option<FedoraRoot>,
}

impl Build {
    /// The binary RPM of package `name` (not of `name-extra`).
    fn rpm(&self, name: &str) -> &Path {
        self.rpms
            .iter()
            .find(|p| {
                let f = p.file_name().unwrap().to_string_lossy();
                f.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .unwrap_or_else(|| panic!("no {name} RPM among {:?}", self.rpms))
    }

    /// Both sample RPMs extracted into one tree, `dir` in the build's temporary directory.
    fn extract_sample(&self, dir: &str) -> PathBuf {
        let root = self.top.path().join(dir);
        for name in SAMPLE_RPMS {
            extract(self.rpm(name), &root);
        }
        root
    }

    /// The Fedora stand-ins' and add-det's calls (a Fedora build only).
    fn calls(&self) -> Vec<String> {
        self.fedora.as_ref().expect("not a Fedora build").calls()
    }

    /// Did a command whose call line starts with `name` run?
    fn called(&self, name: &str) -> bool {
        self.calls()
            .iter()
            .any(|c| c.split(' ').next() == Some(name))
    }
}

/// Run rpmbuild (with `--define _topdir` added) and collect the log and the RPMs.
fn finish(mut cmd: Command, top: tempfile::TempDir, what: &str) -> Build {
    // TOP, or TOP/rpmbuild where the README's commands made it (HOME=TOP: ~/rpmbuild).
    let topdir = Some(top.path().join("rpmbuild"))
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| top.path().to_path_buf());
    cmd.arg("--define")
        .arg(format!("_topdir {}", topdir.display()));
    // One file for stdout and stderr, so that the log keeps the order of the `+` trace lines
    // (stderr) and of what the hooks print (stdout).
    let log_path = top.path().join("build.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    cmd.stdout(log_file.try_clone().unwrap()).stderr(log_file);
    let t0 = Instant::now();
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run rpmbuild: {e}"));
    let secs = t0.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).into_owned();
    eprintln!("$ {cmd:?}\n  -> {status}\n{log}");
    println!("rpmbuild {what}: {status} in {secs:.1} s");
    let rpms = walkdir::WalkDir::new(topdir.join("RPMS"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "rpm"))
        .map(|e| e.path().to_path_buf())
        .collect();
    Build {
        top,
        ok: status.success(),
        log,
        rpms,
        secs,
        modules: Vec::new(),
        buildsys_pyc: false,
        fedora: None,
    }
}

fn build_sample(h: &Host, macros: Macros, args: &[&str]) -> Build {
    build_sample_with(h, macros, &[], args)
}

/// Build the sample package with `macros`, the freshly built pyclink and the host python;
/// `args` (e.g. `--define`s) come last, so they override everything else.
fn build_sample_with(h: &Host, macros: Macros, env: &[(&str, &str)], args: &[&str]) -> Build {
    let top = tempfile::tempdir().unwrap();
    let fedora = match &macros {
        Macros::Fedora { files, pyclink } => Some(FedoraRoot::new(top.path(), files, *pyclink)),
        _ => None,
    };
    let mut c = rpmbuild(top.path(), fedora.as_ref());
    let tar = run(Command::new("tar")
        .arg("-czf")
        .arg(top.path().join("SOURCES/pyclink-sample.tar.gz"))
        .args(["--exclude=__pycache__", "-C"])
        .arg(Path::new(REPO).join("tests/rpm"))
        .arg("pyclink-sample"));
    assert!(tar.status.success(), "tar failed");

    let load = |c: &mut Command, file: &str| {
        c.arg("--load").arg(Path::new(REPO).join(file));
    };
    let mut pyclink = PathBuf::from(env!("CARGO_BIN_EXE_pyclink"));
    let brp: Option<PathBuf>;
    // Macro files first: one read after a --define would override it.
    match &macros {
        Macros::Plain => {
            // docs/fedora.md's command for an rpm without python-rpm-macros, with the binary
            // under test for target/release/pyclink and the sample's spec for foo.spec.
            let cmd = doc_blocks::doc_block("plain-rpm");
            let words = doc_blocks::words(&cmd[0]);
            assert_eq!(words[0], "rpmbuild", "{}", cmd[0]);
            let mut it = words[1..].iter();
            while let Some(w) = it.next() {
                let mut value = || it.next().unwrap_or_else(|| panic!("docs/fedora.md: {w}"));
                match w.as_str() {
                    "--load" => load(&mut c, value()),
                    "--define" => match value().split_once(' ') {
                        Some(("__pyclink", _)) => {}
                        Some((name, value)) => {
                            c.arg("--define")
                                .arg(format!("{name} {}", value.replace("$PWD", REPO)));
                        }
                        None => panic!("docs/fedora.md: --define without a value"),
                    },
                    "-bb" | "foo.spec" => {}
                    other => panic!("docs/fedora.md's rpmbuild line has {other}"),
                }
            }
            brp = None;
        }
        Macros::Fedora { .. } => {
            // Fedora's macro path is on the command line already (rpmbuild()). The hook is
            // where the pyclink RPM installs it: the sed opt-out matches that path.
            brp = None;
        }
        Macros::Installed(inst) => {
            c.arg("--macros").arg(installed_macro_path(inst));
            pyclink = inst.join("usr/bin/pyclink");
            brp = Some(
                inst.join(rpm_eval("%{_rpmconfigdir}").trim_start_matches('/'))
                    .join("brp-pyclink"),
            );
        }
    }
    c.arg("--define")
        .arg(format!("__pyclink {}", pyclink.display()));
    if let Some(brp) = brp {
        for name in ["__brp_pyclink", "__brp_pyclink_hook"] {
            c.arg("--define").arg(format!("{name} {}", brp.display()));
        }
    }
    c.arg("--define")
        .arg(format!("__python3 {}", h.py.python.display()))
        .arg(Path::new(REPO).join("tests/rpm/pyclink-sample.spec"))
        .args(args)
        .envs(env.iter().copied());
    let with = |what: &str| args.windows(2).any(|w| w == ["--with", what]);
    let label = fedora
        .as_ref()
        .map(|f| format!(" with {}", f.label))
        .unwrap_or_default();
    let mut b = finish(c, top, &format!("pyclink-sample {}{label}", args.join(" ")));
    b.modules = sample_modules(h, with("glob"));
    b.buildsys_pyc = with("buildsys_pyc");
    b.fedora = fedora;
    b
}

/// rpm's own macro path with the files of an extracted pyclink RPM inserted where installed ones
/// would be read: after %{_rpmmacrodir}/macros.* and after /etc/rpm/macros.*.
fn installed_macro_path(inst: &Path) -> String {
    // Not through run(): the whole configuration would flood the log of a failing test.
    let showrc = Command::new("rpm")
        .arg("--showrc")
        .output()
        .expect("rpm --showrc");
    let showrc = stdout(&showrc);
    let path = showrc
        .lines()
        .find_map(|l| l.strip_prefix("Macro path: "))
        .expect("rpm --showrc prints the macro path");
    let macrodir = format!("{}/macros.*", rpm_eval("%{_rpmmacrodir}"));
    let mut entries = Vec::new();
    for entry in path.split(':') {
        entries.push(entry.to_string());
        if entry == macrodir || entry == "/etc/rpm/macros.*" {
            entries.push(format!("{}{entry}", inst.display()));
        }
    }
    assert_eq!(
        entries.len(),
        path.split(':').count() + 2,
        "{macrodir} or /etc/rpm/macros.* is not in rpm's macro path {path}"
    );
    entries.join(":")
}

/// The sample's modules (path inside the root) and how their levels compare: "01|2" means
/// levels 0 and 1 are the same bytes and 2 differs (the sources say why). `glob`: built
/// `--with glob`.
fn sample_modules(h: &Host, glob: bool) -> Vec<(String, &'static str)> {
    let site = &h.sitelib;
    let mut m = vec![
        (format!("{site}/sample/__init__.py"), "01|2"),
        (format!("{site}/sample/docstring.py"), "01|2"),
        (format!("{site}/sample/asserts.py"), "0|12"),
        (format!("{site}/sample/plain.py"), "012"),
        (format!("{site}/sample/both.py"), "0|1|2"),
        (format!("{site}/sample_extra/__init__.py"), "012"),
        (format!("{site}/sample_extra/checks.py"), "0|1|2"),
        (format!("{PRIVATE_DIR}/plugins/plugin.py"), "01|2"),
        (format!("{PRIVATE_DIR}/plugins/helpers.py"), "012"),
    ];
    if glob {
        m.push((format!("{PRIVATE_DIR}/scripts/cli.py"), "01|2"));
        m.push((format!("{PRIVATE_DIR}/scripts/util.py"), "012"));
        // A symlink to util.py (pycs of its own, beside the link).
        m.push((format!("{PRIVATE_DIR}/scripts/alias.py"), "012"));
    }
    m
}

fn site_module_count(h: &Host) -> usize {
    sample_modules(h, false)
        .iter()
        .filter(|(s, _)| s.starts_with(&h.sitelib))
        .count()
}

/// Modules of the private directory in a build without `--with glob`.
fn private_module_count(h: &Host) -> usize {
    sample_modules(h, false).len() - site_module_count(h)
}

/// Are levels a and b in the same group of `groups` ("01|2")?
fn same_group(groups: &str, a: u8, b: u8) -> bool {
    let (a, b) = (char::from(b'0' + a), char::from(b'0' + b));
    groups.split('|').any(|g| g.contains(a) && g.contains(b))
}

fn pyc_of(src: &str, tag: &str, level: u8) -> String {
    let (dir, file) = src.rsplit_once('/').unwrap();
    let stem = file.strip_suffix(".py").unwrap();
    match level {
        0 => format!("{dir}/__pycache__/{stem}.{tag}.pyc"),
        l => format!("{dir}/__pycache__/{stem}.{tag}.opt-{l}.pyc"),
    }
}

/// Every file of an RPM (path without the leading '/') with its inode as the header records it.
fn header_files(rpm: &Path) -> BTreeMap<String, u64> {
    let out = run(Command::new("rpm")
        .args(["-qp", "--qf", "[%{FILEINODES} %{FILENAMES}\\n]"])
        .arg(rpm));
    assert!(out.status.success(), "rpm -qp failed on {}", rpm.display());
    stdout(&out)
        .lines()
        .map(|l| {
            let (ino, path) = l.split_once(' ').unwrap();
            (
                path.trim_start_matches('/').to_string(),
                ino.parse().unwrap(),
            )
        })
        .collect()
}

/// rpm2cpio RPM | cpio -idm in `dest` (cpio recreates the payload's hardlinks).
fn extract(rpm: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let mut r2c = Command::new("rpm2cpio")
        .arg(rpm)
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run rpm2cpio");
    let cpio = Command::new("cpio")
        .args(["-idm", "--quiet"])
        .current_dir(dest)
        .stdin(r2c.stdout.take().unwrap())
        .output()
        .expect("cannot run cpio");
    assert!(
        r2c.wait().unwrap().success(),
        "rpm2cpio {} failed",
        rpm.display()
    );
    assert!(cpio.status.success(), "cpio failed: {}", stderr(&cpio));
}

/// The .pyc files under `dir` of an extracted tree, as paths inside it.
fn pycs_under(root: &Path, dir: &str) -> Vec<String> {
    walkdir::WalkDir::new(root.join(dir))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pyc"))
        .map(|e| e.path().strip_prefix(root).unwrap().display().to_string())
        .collect()
}

/// pyclink's build-log line for `n` sources compiled at `levels` levels.
fn summary_prefix(h: &Host, n: usize, levels: usize) -> String {
    format!(
        "pyclink: python{}: {n} source{}, {} pyc (",
        h.py.version,
        if n == 1 { "" } else { "s" },
        n * levels
    )
}

/// The checks on a successful sample build for `levels`: every module has every level and no
/// other pyc is there; two levels share an inode, in the RPM header and after extraction,
/// exactly where their bytes are identical, which is where the sources say; pyc-audit accepts
/// the extracted tree. Returns that tree.
fn check_payload(h: &Host, b: &Build, levels: &[u8]) -> PathBuf {
    assert!(b.ok, "rpmbuild failed:\n{}", b.log);
    let root = b.extract_sample("extracted");
    let headers: Vec<_> = SAMPLE_RPMS.iter().map(|n| header_files(b.rpm(n))).collect();
    let mut modules = b.modules.clone();
    let mut audited = format!("{}:{},{PRIVATE_DIR}", h.py.version, h.sitelib);
    if b.buildsys_pyc {
        assert_eq!(levels, [0, 1], "the build system writes levels 0 and 1");
        // No docstring, no assert: Fedora's brp-python-hardlink links the two levels.
        modules.push((format!("{TOOL_DIR}/gen.py"), "01"));
        audited.push_str(&format!(",{TOOL_DIR}"));
    }
    let mut expected_pycs = BTreeSet::new();
    for (src, groups) in &modules {
        let header = headers
            .iter()
            .find(|hd| hd.contains_key(src))
            .unwrap_or_else(|| panic!("{src} is in no RPM"));
        let pycs: Vec<(u8, String)> = levels
            .iter()
            .map(|&l| (l, pyc_of(src, &h.py.tag, l)))
            .collect();
        for (_, p) in &pycs {
            assert!(header.contains_key(p), "{p} is not in the RPM of {src}");
            expected_pycs.insert(p.clone());
        }
        for (i, (la, pa)) in pycs.iter().enumerate() {
            for (lb, pb) in &pycs[i + 1..] {
                let want = same_group(groups, *la, *lb);
                let identical =
                    std::fs::read(root.join(pa)).unwrap() == std::fs::read(root.join(pb)).unwrap();
                assert_eq!(
                    identical, want,
                    "{src}: are levels {la} and {lb} identical? ({groups})"
                );
                assert_eq!(
                    header[pa] == header[pb],
                    want,
                    "{src}: levels {la} and {lb} share an inode in the RPM header?"
                );
                assert_eq!(
                    ino(&root.join(pa)) == ino(&root.join(pb)),
                    want,
                    "{src}: levels {la} and {lb} share an inode after extraction?"
                );
            }
        }
    }
    let all: BTreeSet<&String> = headers.iter().flat_map(|hd| hd.keys()).collect();
    let sources: BTreeSet<&String> = all.iter().copied().filter(|p| p.ends_with(".py")).collect();
    let known: BTreeSet<&String> = modules.iter().map(|(s, _)| s).collect();
    assert_eq!(
        sources, known,
        "the sources in the RPMs and in sample_modules() differ"
    );
    let pycs: BTreeSet<String> = all
        .into_iter()
        .filter(|p| p.ends_with(".pyc"))
        .cloned()
        .collect();
    assert_eq!(pycs, expected_pycs, "the pycs in the RPMs");

    let levels_arg: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
    assert_audit_ok(
        &root,
        &[audited],
        &[
            "--python",
            &format!("{}={}", h.py.version, h.py.python.display()),
            "--levels",
            &levels_arg.join(","),
        ],
    );
    root
}

/// Bytes of the regular files under `root`, each inode once (as rpm's SIZE tag counts them).
fn unique_bytes(root: &Path, pyc_only: bool) -> u64 {
    let mut sizes = HashMap::new();
    for e in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let is_pyc = e.path().extension().is_some_and(|x| x == "pyc");
        if e.file_type().is_file() && (is_pyc || !pyc_only) {
            let m = e.metadata().unwrap();
            sizes.insert(m.ino(), m.len());
        }
    }
    sizes.values().sum()
}

/// The default build on this plain rpm: the payload checks, the summary lines in the build log,
/// and the payload size against compileall -o0 -o1 -o2 without links.
#[test]
fn sample_package_plain_rpm() {
    let h = host();
    let b = build_sample(&h, Macros::Plain, &[]);
    let root = check_payload(&h, &b, &[0, 1, 2]);
    let private_count = private_module_count(&h);
    for line in [
        summary_prefix(&h, site_module_count(&h), 3),
        summary_prefix(&h, private_count, 3),
    ] {
        assert!(b.log.contains(&line), "no '{line}' in the build log");
    }

    // The same payload with compileall's pycs (no --hardlink-dupes) in place of pyclink's.
    let plain = b.extract_sample("compileall");
    for p in pycs_under(&plain, "") {
        std::fs::remove_file(plain.join(p)).unwrap();
    }
    let out = run(Command::new(&h.py.python)
        .env("PYTHONHASHSEED", "0")
        .args(["-m", "compileall", "-q", "-o0", "-o1", "-o2", "-s"])
        .arg(&plain)
        .args(["-p", "/"])
        .arg(plain.join(&h.sitelib))
        .arg(plain.join(PRIVATE_DIR)));
    assert!(out.status.success(), "compileall failed");
    assert_eq!(
        pycs_under(&plain, "").len(),
        pycs_under(&root, "").len(),
        "compileall and pyclink wrote different numbers of pycs"
    );
    let rpm_size: u64 = SAMPLE_RPMS
        .iter()
        .map(|n| {
            let out = run(Command::new("rpm")
                .args(["-qp", "--qf", "%{SIZE}"])
                .arg(b.rpm(n)));
            stdout(&out).trim().parse::<u64>().unwrap()
        })
        .sum();
    let (ours, theirs) = (unique_bytes(&root, false), unique_bytes(&plain, false));
    let (ours_pyc, theirs_pyc) = (unique_bytes(&root, true), unique_bytes(&plain, true));
    println!(
        "sample payload: pyclink {ours} bytes ({ours_pyc} in pycs; rpm SIZE tags {rpm_size}), \
         compileall -o0 -o1 -o2 without links {theirs} bytes ({theirs_pyc} in pycs)"
    );
    assert_eq!(rpm_size, ours, "rpm's SIZE does not count the links once");
    assert_eq!(
        ours - ours_pyc,
        theirs - theirs_pyc,
        "the rest of the payload differs"
    );
    assert!(ours_pyc < theirs_pyc, "linking saved nothing");
}

/// A source that does not compile fails the build with its path and line in the log, unless
/// %_python_bytecompile_errors_terminate_build is 0: then it is a warning and the rest compiles.
#[test]
fn syntax_error_fails_the_build_unless_told_otherwise() {
    let h = host();
    let bad = format!("/{}/sample/bad.py:3: SyntaxError", h.sitelib);

    let b = build_sample(&h, Macros::Plain, &["--with", "syntax_error"]);
    assert!(!b.ok, "rpmbuild succeeded despite a syntax error");
    assert!(
        b.log.contains(&format!("pyclink: error: {bad}")),
        "no '{bad}' error in the log"
    );
    assert!(
        b.log.contains("Bad exit status from"),
        "rpmbuild did not stop at the hook"
    );

    let b = build_sample(
        &h,
        Macros::Plain,
        &[
            "--with",
            "syntax_error",
            "--define",
            "_python_bytecompile_errors_terminate_build 0",
        ],
    );
    assert!(b.ok, "rpmbuild failed although errors should only warn");
    assert!(
        b.log.contains(&format!("pyclink: warning: {bad}")),
        "no '{bad}' warning in the log"
    );
    let root = b.extract_sample("extracted");
    let (bad_src, good_src) = (
        format!("{}/sample/bad.py", h.sitelib),
        format!("{}/sample/plain.py", h.sitelib),
    );
    assert!(root.join(&bad_src).exists(), "bad.py is not packaged");
    for l in [0, 1, 2] {
        assert!(
            !root.join(pyc_of(&bad_src, &h.py.tag, l)).exists(),
            "a pyc of bad.py"
        );
        assert!(
            root.join(pyc_of(&good_src, &h.py.tag, l)).exists(),
            "no level {l} pyc of plain.py"
        );
    }
}

/// A plain build `--define 'opt_out py_auto_byte_compile'`: no pyc in the Python trees, but the
/// private directory is compiled, since the spec asks for that explicitly.
fn check_opt_out(h: &Host, macros: Macros) {
    let b = build_sample(h, macros, &["--define", "opt_out py_auto_byte_compile"]);
    assert!(b.ok, "rpmbuild failed:\n{}", b.log);
    let root = b.extract_sample("extracted");
    assert_eq!(
        pycs_under(&root, &h.sitelib),
        Vec::<String>::new(),
        "pycs despite the opt-out"
    );
    assert_eq!(
        pycs_under(&root, PRIVATE_DIR).len(),
        3 * private_module_count(h),
        "the private directory"
    );
}

/// `%undefine py_auto_byte_compile` leaves the Python trees alone (the private directory is
/// still compiled: the spec asks for it explicitly); `%_pyclink_levels 0 1` writes two levels.
#[test]
fn opt_out_and_levels() {
    let h = host();
    check_opt_out(&h, Macros::Plain);

    let b = build_sample(&h, Macros::Plain, &["--define", "_pyclink_levels 0 1"]);
    check_payload(&h, &b, &[0, 1]);
    let line = summary_prefix(&h, site_module_count(&h), 2);
    assert!(b.log.contains(&line), "no '{line}' in the build log");
}

/// With SOURCE_DATE_EPOCH and %clamp_mtime_to_source_date_epoch, rpm clamps the mtimes in the
/// payload, so the pyc headers (timestamp mode) must hold the clamped source mtimes: the hook
/// clamps the .py files before compiling, and pyc-audit compares headers with the sources.
#[test]
fn clamped_mtimes_match_the_pyc_headers() {
    let h = host();
    let epoch = 1_600_000_000;
    let b = build_sample_with(
        &h,
        Macros::Plain,
        &[("SOURCE_DATE_EPOCH", &epoch.to_string())],
        &["--define", "clamp_mtime_to_source_date_epoch 1"],
    );
    let root = check_payload(&h, &b, &[0, 1, 2]);
    let src = root.join(&h.sitelib).join("sample/plain.py");
    assert_eq!(
        std::fs::metadata(&src).unwrap().mtime(),
        epoch,
        "rpm did not clamp"
    );
}

/// SOURCE_DATE_EPOCH as rpmbuild set it from the changelog (Fedora's
/// %source_date_epoch_from_changelog).
fn source_date_epoch(log: &str) -> i64 {
    log.lines()
        .find_map(|l| l.strip_prefix("setting SOURCE_DATE_EPOCH="))
        .unwrap_or_else(|| panic!("rpmbuild did not set SOURCE_DATE_EPOCH from the changelog"))
        .trim()
        .parse()
        .unwrap()
}

/// The index of the first build-log line that contains `needle`.
fn log_line(b: &Build, needle: &str) -> usize {
    b.log
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no '{needle}' in the build log"))
}

/// A Fedora build where pyclink's hook ran: the payload checks at `levels`; none of Fedora's
/// original Python hooks ran (brp-python-bytecompile, brp-python-hardlink, the original
/// %py_byte_compile), the rest of %__os_install_post_python did, in Fedora's order, and add-det
/// after it; SOURCE_DATE_EPOCH was kept for the hook, and the sources it clamped are the ones in
/// the RPM (pyc-audit compares the pyc headers with them). Returns the extracted payload.
fn check_fedora_build(h: &Host, b: &Build, levels: &[u8]) -> PathBuf {
    let root = check_payload(h, b, levels);
    let calls = b.calls();
    for original in [
        "brp-python-bytecompile",
        "brp-python-hardlink",
        "clamp_source_mtime",
    ] {
        assert!(
            !b.called(original),
            "Fedora's {original} ran; calls: {calls:#?}"
        );
    }
    assert!(
        b.called("brp-python-rpm-in-distinfo"),
        "%__os_install_post_python lost brp-python-rpm-in-distinfo; calls: {calls:#?}"
    );
    let distinfo = log_line(b, "/redhat/brp-python-rpm-in-distinfo");
    let hook = log_line(b, "/pyclink/brp-python-bytecompile ");
    let summary = log_line(b, &summary_prefix(h, site_module_count(h), levels.len()));
    let add_det_at = log_line(b, "add-det --brp");
    assert!(
        distinfo < hook && hook < summary && summary < add_det_at,
        "out of Fedora's order: brp-python-rpm-in-distinfo at log line {distinfo}, pyclink's hook \
         at {hook}, its summary at {summary}, add-det at {add_det_at}"
    );
    let hook_line = b.log.lines().nth(hook).unwrap();
    assert!(
        hook_line.starts_with("+ env PYCLINK="),
        "the hook does not keep SOURCE_DATE_EPOCH: {hook_line}"
    );
    let epoch = source_date_epoch(&b.log);
    let src = root.join(&h.sitelib).join("sample/plain.py");
    assert_eq!(
        std::fs::metadata(&src).unwrap().mtime(),
        epoch,
        "{} is not clamped to SOURCE_DATE_EPOCH",
        src.display()
    );

    // The hook normalized every pyc in the root, so add-det was told to skip its pyc pass, and
    // that pass would indeed change nothing in the RPMs.
    let add_det_call = calls.iter().find(|c| c.starts_with("add-det ")).unwrap();
    assert!(
        add_det_call.split(' ').any(|a| a == "--handler=-pyc"),
        "add-det ran its pyc pass after pyclink's hook: {add_det_call}"
    );
    let out = run(Command::new(add_det().unwrap())
        .args(["--check", "--handler", "pyc"])
        .arg(&root));
    assert!(
        out.status.success(),
        "add-det --check --handler pyc: pycs in the RPMs are not in add-det's normal form:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    root
}

fn fedora(files: &FedoraFiles) -> Macros {
    Macros::Fedora {
        files: files.clone(),
        pyclink: true,
    }
}

/// The Fedora tests: each `NAME(setup, test)` below runs as `model::NAME`, with the project's
/// model of Fedora's macro files, everywhere (CI included), and as `real::NAME`, with Fedora's
/// own files where they are found (otherwise SKIP, and a pass, in CI too).
macro_rules! fedora_tests {
    ($($name:ident),* $(,)?) => {
        mod model {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Setup::Model, concat!("model::", stringify!($name)));
                }
            )*
        }
        mod real {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Setup::Real, concat!("real::", stringify!($name)));
                }
            )*
        }
    };
}

fedora_tests!(
    fedora_default_build,
    fedora_build_system_pycs_are_normalized_and_linked,
    fedora_simulation_runs_fedoras_hooks_without_pyclink,
    fedora_undefine_brp_python_bytecompile_turns_compiling_off,
    fedora_sed_opt_out_turns_compiling_off,
    fedora_py_byte_compile_expands_a_glob,
    fedora_opt_2_is_one_line_in_the_spec,
    fedora_pycs_left_raw_keep_add_dets_pyc_pass,
);

/// Fedora as it is, arch and noarch (rpm parses a noarch spec twice): python-rpm-macros',
/// redhat-rpm-config's and add-determinism's macros in Fedora's load order, SOURCE_DATE_EPOCH
/// from the changelog and mtime clamping on, a %py_byte_compile with a glob, pycs the build
/// system wrote itself, add-det after the Python step. pyclink takes the place of
/// brp-python-bytecompile and brp-python-hardlink, writes Fedora's levels 0 and 1, and what it
/// promises is in the RPMs after add-det has rewritten what it rewrites.
fn fedora_default_build(setup: Setup, test: &str) {
    let Some(files) = fedora_or_skip(test, setup) else {
        return;
    };
    let h = host();
    for arch in [true, false] {
        let mut args = vec!["--with", "glob", "--with", "buildsys_pyc"];
        if arch {
            args.extend(["--with", "arch"]);
        }
        let b = build_sample(&h, fedora(&files), &args);
        check_fedora_build(&h, &b, &[0, 1]);
    }
}

/// Pycs that the package's build system wrote itself, outside the Python trees (compileall at
/// levels 0 and 1, unlinked), are linked in the RPM where their levels are identical, as Fedora's
/// brp-python-hardlink links them anywhere in the root, and brought to the normal form that
/// add-det would write: the hook ends with `pyclink normalize` on the whole root.
fn fedora_build_system_pycs_are_normalized_and_linked(setup: Setup, test: &str) {
    let Some(files) = fedora_or_skip(test, setup) else {
        return;
    };
    let h = host();
    let b = build_sample(
        &h,
        fedora(&files),
        &["--with", "buildsys_pyc", "--with", "arch"],
    );
    let root = check_fedora_build(&h, &b, &[0, 1]);
    let [l0, l1] = [0, 1].map(|l| root.join(pyc_of(&format!("{TOOL_DIR}/gen.py"), &h.py.tag, l)));
    println!(
        "the build system's {} and {}: inodes {} and {}",
        l0.display(),
        l1.display(),
        ino(&l0),
        ino(&l1)
    );
}

/// A pyc pyclink does not bring to the normal form (here Python 2.7's, whose format the version
/// table does not read; a version it has not validated is the same case): the hook exits 3 and
/// says why, the build goes on, and add-det keeps its pyc pass for this build.
fn fedora_pycs_left_raw_keep_add_dets_pyc_pass(setup: Setup, test: &str) {
    let Some(files) = fedora_or_skip(test, setup) else {
        return;
    };
    let h = host();
    let b = build_sample(
        &h,
        fedora(&files),
        &["--with", "legacy_pyc", "--with", "arch"],
    );
    assert!(b.ok, "rpmbuild failed:\n{}", b.log);
    assert!(
        b.log
            .contains("some pycs are the interpreter's raw bytes; add-det's pyc pass stays on"),
        "{}",
        b.log
    );
    let calls = b.calls();
    let add_det_call = calls.iter().find(|c| c.starts_with("add-det ")).unwrap();
    assert!(
        !add_det_call.contains("--handler"),
        "add-det was told to skip a pyc pyclink left raw: {add_det_call}"
    );
    // The rest is as in any build: pyclink compiled and linked the Python trees.
    assert!(
        b.log
            .contains(&summary_prefix(&h, site_module_count(&h), 2)),
        "{}",
        b.log
    );
    let root = b.extract_sample("extracted");
    assert!(root.join(PRIVATE_DIR).join("legacy/old.pyc").is_file());
}

/// The simulation can fail: without macros.zz-pyclink, Fedora's own hooks run (the stand-ins
/// record brp-python-bytecompile, brp-python-hardlink and the original %py_byte_compile, which
/// compiles the private directory with compileall at levels 0 and 1).
fn fedora_simulation_runs_fedoras_hooks_without_pyclink(setup: Setup, test: &str) {
    let Some(files) = fedora_or_skip(test, setup) else {
        return;
    };
    let h = host();
    let b = build_sample(
        &h,
        Macros::Fedora {
            files,
            pyclink: false,
        },
        &["--with", "arch"],
    );
    assert!(b.ok, "rpmbuild failed:\n{}", b.log);
    let calls = b.calls();
    for original in [
        "brp-python-rpm-in-distinfo",
        "brp-python-bytecompile",
        "clamp_source_mtime",
        "brp-python-hardlink",
        "add-det",
    ] {
        assert!(
            b.called(original),
            "{original} did not run; calls: {calls:#?}"
        );
    }
    assert!(!b.log.contains("pyclink:"), "pyclink ran");
    let root = b.extract_sample("extracted");
    assert_eq!(
        pycs_under(&root, PRIVATE_DIR).len(),
        2 * private_module_count(&h),
        "Fedora's %py_byte_compile writes levels 0 and 1"
    );
}

/// A Fedora build whose spec turned the build-root hook off: no pyc in the Python trees, and
/// neither Fedora's brp-python-bytecompile nor pyclink's hook ran; Fedora's brp-python-hardlink
/// did, as in Fedora (pyclink did not link for it); the private directory is still compiled by
/// %py_byte_compile, which the spec asks for explicitly.
fn check_fedora_opt_out(h: &Host, b: &Build) {
    assert!(b.ok, "rpmbuild failed:\n{}", b.log);
    let root = b.extract_sample("extracted");
    assert_eq!(
        pycs_under(&root, &h.sitelib),
        Vec::<String>::new(),
        "pycs in the Python trees despite the opt-out"
    );
    assert!(
        !b.log.contains(&summary_prefix(h, site_module_count(h), 2)),
        "pyclink's hook compiled the Python trees"
    );
    let calls = b.calls();
    assert!(
        !b.called("brp-python-bytecompile"),
        "Fedora's brp-python-bytecompile ran; calls: {calls:#?}"
    );
    assert!(
        b.called("brp-python-hardlink"),
        "Fedora's brp-python-hardlink did not run; calls: {calls:#?}"
    );
    let add_det_call = calls.iter().find(|c| c.starts_with("add-det ")).unwrap();
    assert!(
        !add_det_call.contains("--handler"),
        "add-det was told to skip pycs that pyclink's hook did not normalize: {add_det_call}"
    );
    assert_eq!(
        pycs_under(&root, PRIVATE_DIR).len(),
        2 * private_module_count(h),
        "the private directory"
    );
}

/// `%undefine __brp_python_bytecompile` in a spec turns byte-compilation off, arch and noarch
/// (rpm stacks definitions: pyclink must not define that slot, or the undefine would pop its
/// definition and bring back Fedora's hook); so do `%global __brp_python_bytecompile %{nil}` and
/// `%undefine py_auto_byte_compile`.
fn fedora_undefine_brp_python_bytecompile_turns_compiling_off(setup: Setup, test: &str) {
    let Some(files) = fedora_or_skip(test, setup) else {
        return;
    };
    let h = host();
    for (how, arch) in [
        ("undefine", true),
        ("undefine", false),
        ("nil", true),
        ("py_auto_byte_compile", true),
    ] {
        let opt_out = format!("opt_out {how}");
        let mut args = vec!["--define", &opt_out];
        if arch {
            args.extend(["--with", "arch"]);
        }
        check_fedora_opt_out(&h, &build_sample(&h, fedora(&files), &args));
    }
}

/// The opt-out that real specs write: `%global __os_install_post %(echo '%{__os_install_post}' |
/// sed -e 's!/usr/lib[^[:space:]]*/brp-python-bytecompile[[:space:]].*$!!g')`.
fn fedora_sed_opt_out_turns_compiling_off(setup: Setup, test: &str) {
    let Some(files) = fedora_or_skip(test, setup) else {
        return;
    };
    let h = host();
    for arch in [true, false] {
        let mut args = vec!["--define", "opt_out sed"];
        if arch {
            args.extend(["--with", "arch"]);
        }
        check_fedora_opt_out(&h, &build_sample(&h, fedora(&files), &args));
    }
}

/// `%py_byte_compile %{__python3} %{buildroot}%{_datadir}/pyclink-sample/scripts/*.py`: the shell
/// expands the glob, as with Fedora's own macro; without SOURCE_DATE_EPOCH here, with it in
/// [`fedora_py_byte_compile_expands_a_glob`].
#[test]
fn py_byte_compile_expands_a_glob() {
    let h = host();
    let b = build_sample(&h, Macros::Plain, &["--with", "glob"]);
    check_payload(&h, &b, &[0, 1, 2]);
}

/// [`py_byte_compile_expands_a_glob`] under Fedora's macros (SOURCE_DATE_EPOCH, clamping).
fn fedora_py_byte_compile_expands_a_glob(setup: Setup, test: &str) {
    let Some(files) = fedora_or_skip(test, setup) else {
        return;
    };
    let h = host();
    let b = build_sample(&h, fedora(&files), &["--with", "glob", "--with", "arch"]);
    check_payload(&h, &b, &[0, 1]);
}

/// Fedora's policy is levels 0 and 1 (fedora_default_build checks that); one line in the spec,
/// `%global _pyclink_levels 0 1 2`, adds .opt-2.pyc.
fn fedora_opt_2_is_one_line_in_the_spec(setup: Setup, test: &str) {
    let Some(files) = fedora_or_skip(test, setup) else {
        return;
    };
    let h = host();
    let b = build_sample(&h, fedora(&files), &["--with", "opt2", "--with", "arch"]);
    check_fedora_build(&h, &b, &[0, 1, 2]);
}

/// `rpmspec --parse` of tests/rpm/fedora-probe.spec under `root`'s macros (whose files are in
/// `top`), with `args` last, normalized (see [`normalized`]).
fn probe(h: &Host, root: &FedoraRoot, top: &Path, pyclink: bool, args: &[&str]) -> Vec<String> {
    let mut c = root.command("rpmspec");
    c.args(root.macro_args());
    packager_env(&mut c);
    for define in [
        format!("_topdir {}", top.display()),
        format!("__pyclink {}", env!("CARGO_BIN_EXE_pyclink")),
        format!("__python3 {}", h.py.python.display()),
    ] {
        c.arg("--define").arg(define);
    }
    if pyclink {
        c.args(["--with", "byte_compile_call"]);
    }
    c.args(args)
        .arg("--parse")
        .arg(Path::new(REPO).join("tests/rpm/fedora-probe.spec"));
    // Not through run(): 60 parsed specs would bury a failure's message.
    let out = c.output().expect("cannot run rpmspec");
    assert!(
        out.status.success(),
        "rpmspec --parse {args:?} with {} failed:\n{}",
        root.label,
        stderr(&out)
    );
    normalized(&stdout(&out), top)
}

/// The model cannot drift from Fedora unnoticed. Wherever Fedora's real files are found (all of
/// them, or only add-determinism's in cargo's registry, as in CI), the model with those files in
/// place of their models gives the same as the model alone:
/// - `rpmspec --parse` of tests/rpm/fedora-probe.spec, i.e. the expansion of %__spec_install_post
///   (with %__os_install_post), %__os_install_post_python, add-det's step and the settings they
///   read: after each opt-out idiom, arch and noarch, with and without pyclink's macros, and with
///   the knobs that change those lines;
/// - a sample build without pyclink's macros, where Fedora's own hooks and its %py_byte_compile
///   (whose text the model writes differently) run: the same calls recorded, the same payload
///   (paths, modes, mtimes, contents, links).
#[test]
fn fedora_model_matches_fedoras_files() {
    let test = "fedora_model_matches_fedoras_files";
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for p in &PROJECTS {
        match real_files(p) {
            Ok(files) => found.push((p, files)),
            Err(reason) => missing.push(reason),
        }
    }
    if found.is_empty() {
        println!(
            "SKIP {test}: none of Fedora's files are here: {} ({WHERE_TO_GET})",
            missing.join("; ")
        );
        return;
    }
    if !prerequisites_or_skip(test) {
        return;
    }
    let model = FedoraFiles::of(Setup::Model).unwrap();
    let real = FedoraFiles::model_with(&found);
    println!("{test}: {} against {}", real.label, model.label);
    for reason in &missing {
        println!("{test}: not compared: {reason}");
    }
    let h = host();

    // Arch and noarch, each opt-out idiom (pyclink-sample.spec's), then the knobs.
    let mut variants: Vec<Vec<String>> = Vec::new();
    for arch in [&["--with", "arch"][..], &[]] {
        for opt_out in ["", "py_auto_byte_compile", "undefine", "nil", "sed"] {
            let mut v: Vec<String> = arch.iter().map(|a| a.to_string()).collect();
            if !opt_out.is_empty() {
                v.extend(["--define".to_string(), format!("opt_out {opt_out}")]);
            }
            variants.push(v);
        }
    }
    for knob in [
        "py_reproducible_pyc_path /usr/share/fedora-probe",
        "clamp_mtime_to_source_date_epoch 0",
        "source_date_epoch_from_changelog 0",
        "_python_bytecompile_errors_terminate_build 0",
        "_smp_build_ncpus 3",
    ] {
        variants.push(
            ["--with", "arch", "--define", knob]
                .map(String::from)
                .to_vec(),
        );
    }
    let mut compared = 0;
    let mut differences = Vec::new();
    for pyclink in [false, true] {
        let [(model_top, model_root), (real_top, real_root)] = [&model, &real].map(|files| {
            let top = tempfile::tempdir().unwrap();
            let root = FedoraRoot::new(top.path(), files, pyclink);
            (top, root)
        });
        for v in &variants {
            let args: Vec<&str> = v.iter().map(String::as_str).collect();
            let a = probe(&h, &model_root, model_top.path(), pyclink, &args);
            let b = probe(&h, &real_root, real_top.path(), pyclink, &args);
            compared += 1;
            if let Some(d) = first_difference(&a, &b) {
                differences.push(format!(
                    "rpmspec --parse {args:?}, pyclink's macros {pyclink}: {d}"
                ));
            }
        }
    }
    println!(
        "{test}: {compared} expansions of fedora-probe.spec compared, {} differ",
        differences.len()
    );

    // Fedora's own hooks, for what the texts cannot show.
    let [a, b] = [&model, &real].map(|files| {
        let b = build_sample(
            &h,
            Macros::Fedora {
                files: files.clone(),
                pyclink: false,
            },
            &["--with", "glob", "--with", "arch"],
        );
        assert!(b.ok, "rpmbuild with {} failed:\n{}", files.label, b.log);
        let calls = normalized(&b.calls().join("\n"), b.top.path());
        (calls, payload_summary(&b.extract_sample("extracted")))
    });
    if let Some(d) = first_difference(&a.0, &b.0) {
        differences.push(format!(
            "the calls of Fedora's hooks in a sample build: {d}"
        ));
    }
    if let Some(d) = first_difference(&a.1, &b.1) {
        differences.push(format!(
            "the payload of a sample build with Fedora's hooks: {d}"
        ));
    }
    println!(
        "{test}: a sample build with Fedora's hooks: {} calls, {} payload entries compared",
        a.0.len(),
        a.1.len()
    );
    assert!(
        differences.is_empty(),
        "the model (first) differs from {} (second):\n{}",
        real.label,
        differences.join("\n")
    );
}

/// python-rpm-macros' own test of byte-compilation (tests/pythontest.spec in its repository,
/// which its CI builds with clamping off and on, then lints): its %check counts 2 pycs per
/// source (levels 0 and 1) and at most one inode per source, for %py_byte_compile on a file and
/// a directory and for the hook on the 3.6 and host site-packages; rpmlint finds no pyc whose
/// recorded mtime disagrees with its source. With Fedora's real files only: the spec is one of
/// them.
#[test]
fn python_rpm_macros_own_test_spec_passes() {
    let test = "python_rpm_macros_own_test_spec_passes";
    let spec = match real_file("python-rpm-macros/pythontest.spec") {
        Ok(spec) => spec,
        Err(reason) => {
            println!("SKIP {test}: {reason} ({WHERE_TO_GET})");
            return;
        }
    };
    let Some(files) = fedora_or_skip(test, Setup::Real) else {
        return;
    };
    // The spec compiles /usr/lib/python3.6/site-packages.
    if python_or_skip("3.6", test).is_none() {
        return;
    }
    let h = host();
    for clamp in ["0", "1"] {
        let top = tempfile::tempdir().unwrap();
        let root = FedoraRoot::new(top.path(), &files, true);
        let mut c = rpmbuild(top.path(), Some(&root));
        for define in [
            format!("__pyclink {}", env!("CARGO_BIN_EXE_pyclink")),
            format!("__python3 {}", h.py.python.display()),
            format!("dist .clamp{clamp}"),
            format!("clamp_mtime_to_source_date_epoch {clamp}"),
        ] {
            c.arg("--define").arg(define);
        }
        c.arg(&spec);
        let mut b = finish(c, top, &format!("pythontest.spec, clamping {clamp}"));
        b.fedora = Some(root);
        assert!(
            b.ok,
            "python-rpm-macros' test spec failed (its %check counts pycs and inodes):\n{}",
            b.log
        );
        assert!(
            b.log.contains("pyclink: python3.6: 1 source, 2 pyc ("),
            "pyclink's hook did not compile the 3.6 tree"
        );
        assert!(
            !b.called("brp-python-bytecompile") && !b.called("clamp_source_mtime"),
            "one of Fedora's own hooks ran: {:#?}",
            b.calls()
        );
        let out = run(Command::new("rpmlint").args(&b.rpms));
        let report = stdout(&out) + &stderr(&out);
        assert!(
            report.contains("packages and 0 specfiles checked"),
            "rpmlint did not run:\n{report}"
        );
        assert!(
            !report.contains("python-bytecode-inconsistent-mtime"),
            "rpmlint, clamping {clamp}:\n{report}"
        );
    }
}

/// packaging/pyclink.spec builds offline from `git archive HEAD` (committed files only), ships
/// the binary, its man pages and completions, the macros and the hook, passes rpmlint, and its macros, where they are
/// installed, drive a sample build.
#[test]
fn pyclink_spec_builds_and_its_macros_work() {
    let h = host();
    let version = env!("CARGO_PKG_VERSION");
    // The README's commands, with HOME a scratch directory (so ~/rpmbuild is rpmbuild's
    // %_topdir there) and cargo's own directories where they are.
    let top = tempfile::tempdir().unwrap();
    let home = top.path();
    let real_home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| real_home.join(".cargo"));
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| real_home.join(".rustup"));
    let mut rpmbuild_args = None;
    for cmd in doc_blocks::doc_block("readme-rpm") {
        if let Some(args) = cmd.strip_prefix("rpmbuild ") {
            rpmbuild_args = Some(doc_blocks::words(args));
            continue;
        }
        assert!(
            !cmd.contains("pyclink-") || cmd.contains(&format!("pyclink-{version}")),
            "the README's `{cmd}` names another version than {version}"
        );
        let mut sh = Command::new("sh");
        sh.args(["-ec", &cmd]).current_dir(REPO);
        packager_env(&mut sh);
        let out = run(sh
            .env("HOME", home)
            .env("CARGO_HOME", &cargo_home)
            .env("RUSTUP_HOME", &rustup_home));
        assert!(
            out.status.success(),
            "the README's `{cmd}` failed (it needs the git checkout {REPO}):\n{}",
            stderr(&out)
        );
    }
    let mut c = rpmbuild(&home.join("rpmbuild"), None);
    c.env("HOME", home)
        .env("CARGO_HOME", &cargo_home)
        .env("RUSTUP_HOME", &rustup_home)
        .current_dir(REPO);
    // The packager is set by the build system (koji, OBS, ~/.rpmmacros), never in the spec.
    c.args([
        "--define",
        "packager pyclink tests <pyclink@example.invalid>",
    ])
    .args(rpmbuild_args.expect("the README's block runs rpmbuild"));
    // Shared with the .deb's build (see package_cargo_target): only pyclink itself is compiled.
    let target = package_cargo_target();
    target.apply(&mut c);
    let b = finish(c, top, "packaging/pyclink.spec");
    drop(target);
    assert!(b.ok, "rpmbuild of pyclink.spec failed:\n{}", b.log);
    let rpm = b.rpm("pyclink");

    let files = header_files(rpm);
    let mut want = vec![
        "/usr/bin/pyclink".to_string(),
        format!("{}/macros.zz-pyclink", rpm_eval("%{_rpmmacrodir}")),
        format!("{}/brp-pyclink", rpm_eval("%{_rpmconfigdir}")),
        format!(
            "{}/pyclink/brp-python-bytecompile",
            rpm_eval("%{_rpmconfigdir}")
        ),
        "/usr/share/pyclink/macros.pyclink-plain".to_string(),
    ];
    // The plain-rpm hook is switched on only where python-rpm-macros (%py_dist_name) are absent.
    if rpm_eval("%{?py_dist_name:1}").is_empty() {
        want.push("/etc/rpm/macros.pyclink".to_string());
    }
    // The completions and README.md, as `make install` lays them out (tests/install.rs).
    let datadir = rpm_eval("%{_datadir}");
    want.extend([
        format!("{datadir}/bash-completion/completions/pyclink"),
        format!("{datadir}/zsh/site-functions/_pyclink"),
        format!("{datadir}/fish/vendor_completions.d/pyclink.fish"),
        format!("{}/pyclink/README.md", rpm_eval("%{_defaultdocdir}")),
    ]);
    for f in &want {
        assert!(
            files.contains_key(&f[1..]),
            "{f} is not in {}",
            rpm.display()
        );
    }
    // A man page for pyclink and each subcommand (brp-compress may have compressed them).
    let man1 = format!("{}/man1", rpm_eval("%{_mandir}"));
    let mut pages = vec!["pyclink".to_string()];
    pages.extend(
        pyclink::generate::man_subcommands()
            .iter()
            .map(|s| format!("pyclink-{s}")),
    );
    for page in &pages {
        let stem = format!("{}/{page}.1", &man1[1..]);
        assert!(
            files
                .keys()
                .any(|k| *k == stem || k.strip_prefix(&stem).is_some_and(|e| e.starts_with('.'))),
            "/{stem}[.gz] is not in {}",
            rpm.display()
        );
    }

    let out = run(Command::new("rpmlint")
        .arg(rpm)
        .arg(Path::new(REPO).join("packaging/pyclink.spec")));
    let report = stdout(&out) + &stderr(&out);
    // Signing is the build system's job, with its own key; a test build is never signed.
    let errors: Vec<&str> = report
        .lines()
        .filter(|l| l.contains(": E: ") && !l.contains(": E: no-signature"))
        .collect();
    assert!(errors.is_empty(), "rpmlint errors:\n{}", errors.join("\n"));
    assert!(
        report.contains("packages and 1 specfiles checked"),
        "rpmlint did not run:\n{report}"
    );
    println!("rpmlint on the RPM and the spec:\n{report}");

    let inst = b.top.path().join("installed");
    extract(rpm, &inst);
    let s = build_sample(&h, Macros::Installed(inst), &[]);
    check_payload(&h, &s, &[0, 1, 2]);
    println!(
        "pyclink.spec built in {:.1} s; the sample with its installed macros in {:.1} s",
        b.secs, s.secs
    );
}
