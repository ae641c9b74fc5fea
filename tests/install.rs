//! The install step: `make install DESTDIR=... PREFIX=...` lays out exactly the documented files
//! (README.md, "Install"), where the directory variables say, and `make uninstall` removes them
//! all; the generated man pages render without a warning and document every option; each
//! completion script completes in its shell. tests/rpm.rs and tests/deb.rs compare the same
//! layout with what pyclink's RPM and .deb ship.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The man pages pyclink's subcommands get, from the CLI itself: the Makefile's list must match.
fn subcommand_pages(mandir: &str) -> Vec<String> {
    pyclink::generate::man_subcommands()
        .iter()
        .map(|s| format!("{mandir}/man1/pyclink-{s}.1"))
        .collect()
}

/// The pages of docs/, which `make install-doc` installs beside README.md.
fn docs() -> Vec<String> {
    let mut d: Vec<String> = std::fs::read_dir(Path::new(REPO).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    d.sort();
    assert!(!d.is_empty(), "docs/ has no pages");
    d
}

/// What `pyclink --generate WHAT` writes.
fn generated(what: &str) -> Vec<u8> {
    let out = run(pyclink().args(["--generate", what]));
    assert!(out.status.success(), "pyclink --generate {what} failed");
    out.stdout
}

fn read(dest: &Path, path: &str) -> Vec<u8> {
    std::fs::read(dest.join(&path[1..])).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn repo_file(path: &str) -> Vec<u8> {
    std::fs::read(Path::new(REPO).join(path)).unwrap()
}

/// `dir.join(target)` with `..` resolved lexically, as the kernel resolves a relative symlink
/// whose directories are real.
fn resolve(dir: &str, target: &Path) -> PathBuf {
    let mut p = PathBuf::from(dir);
    for c in target.components() {
        match c {
            Component::ParentDir => {
                p.pop();
            }
            Component::Normal(n) => p.push(n),
            _ => panic!("{} is not a relative link", target.display()),
        }
    }
    p
}

/// The directories of one layout, as the Makefile's variables name them.
struct Dirs {
    bin: String,
    man: String,
    doc: String,
    data: String,
    rpmconfig: String,
    rpmmacro: String,
    perl: String,
    bash: String,
    zsh: String,
    fish: String,
    /// `$(SYSCONFDIR)/rpm` with RPM_PLAIN_HOOK=yes.
    etc_rpm: Option<String>,
}

impl Dirs {
    fn under(prefix: &str) -> Dirs {
        Dirs {
            bin: format!("{prefix}/bin"),
            man: format!("{prefix}/share/man"),
            doc: format!("{prefix}/share/doc/pyclink"),
            data: format!("{prefix}/share"),
            rpmconfig: format!("{prefix}/lib/rpm"),
            rpmmacro: format!("{prefix}/lib/rpm/macros.d"),
            perl: format!("{prefix}/share/perl5"),
            bash: format!("{prefix}/share/bash-completion/completions"),
            zsh: format!("{prefix}/share/zsh/site-functions"),
            fish: format!("{prefix}/share/fish/vendor_completions.d"),
            etc_rpm: None,
        }
    }

    /// The whole layout: path to kind.
    fn layout(&self) -> BTreeMap<String, Installed> {
        let file = |m| Installed::File(m);
        let mut want: BTreeMap<String, Installed> = [
            (format!("{}/pyclink", self.bin), file(0o755)),
            (format!("{}/dh_pyclink", self.bin), file(0o755)),
            (format!("{}/man1/pyclink.1", self.man), file(0o644)),
            (format!("{}/man1/dh_pyclink.1", self.man), file(0o644)),
            (format!("{}/pyclink", self.bash), file(0o644)),
            (format!("{}/_pyclink", self.zsh), file(0o644)),
            (format!("{}/pyclink.fish", self.fish), file(0o644)),
            (format!("{}/README.md", self.doc), file(0o644)),
            (format!("{}/macros.zz-pyclink", self.rpmmacro), file(0o644)),
            (format!("{}/brp-pyclink", self.rpmconfig), file(0o755)),
            (
                format!("{}/pyclink/brp-python-bytecompile", self.rpmconfig),
                Installed::Link("../brp-pyclink".into()),
            ),
            (
                format!("{}/pyclink/macros.pyclink-plain", self.data),
                file(0o644),
            ),
            (
                format!("{}/Debian/Debhelper/Sequence/pyclink.pm", self.perl),
                file(0o644),
            ),
        ]
        .into_iter()
        .collect();
        for page in subcommand_pages(&self.man) {
            want.insert(page, file(0o644));
        }
        want.insert(format!("{}/man7/pyclink-rpm.7", self.man), file(0o644));
        for doc in docs() {
            want.insert(format!("{}/docs/{doc}", self.doc), file(0o644));
        }
        want
    }

    fn vars(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("BINDIR", self.bin.as_str()),
            ("MANDIR", &self.man),
            ("DOCDIR", &self.doc),
            ("DATADIR", &self.data),
            ("RPMCONFIGDIR", &self.rpmconfig),
            ("RPMMACRODIR", &self.rpmmacro),
            ("PERL_VENDORLIB", &self.perl),
            ("BASHCOMPDIR", &self.bash),
            ("ZSHCOMPDIR", &self.zsh),
            ("FISHCOMPDIR", &self.fish),
        ];
        if let Some(etc) = &self.etc_rpm {
            v.push(("SYSCONFDIR", etc.strip_suffix("/rpm").unwrap()));
            v.push(("RPM_PLAIN_HOOK", "yes"));
        }
        v
    }
}

/// Every installed file is the repository's, the binary's output, or (the rpm macros) the
/// repository's with the paths of this install.
fn check_contents(dest: &Path, d: &Dirs) {
    let bin = format!("{}/pyclink", d.bin);
    assert!(
        read(dest, &bin) == std::fs::read(env!("CARGO_BIN_EXE_pyclink")).unwrap(),
        "{bin} is not the binary"
    );
    for (path, source) in [
        (
            format!("{}/dh_pyclink", d.bin),
            "packaging/debhelper/dh_pyclink",
        ),
        (format!("{}/README.md", d.doc), "README.md"),
        (
            format!("{}/man7/pyclink-rpm.7", d.man),
            "macros/pyclink-rpm.7",
        ),
        (format!("{}/brp-pyclink", d.rpmconfig), "macros/brp-pyclink"),
        (
            format!("{}/pyclink/macros.pyclink-plain", d.data),
            "macros/macros.pyclink-plain",
        ),
        (
            format!("{}/Debian/Debhelper/Sequence/pyclink.pm", d.perl),
            "packaging/debhelper/Debian/Debhelper/Sequence/pyclink.pm",
        ),
    ] {
        assert!(
            read(dest, &path) == repo_file(source),
            "{path} is not {source}"
        );
    }
    for doc in docs() {
        let path = format!("{}/docs/{doc}", d.doc);
        assert!(
            read(dest, &path) == repo_file(&format!("docs/{doc}")),
            "{path} is not docs/{doc}"
        );
    }
    let mut pages = vec![(format!("{}/man1/pyclink.1", d.man), "man".to_string())];
    for s in pyclink::generate::man_subcommands() {
        pages.push((format!("{}/man1/pyclink-{s}.1", d.man), format!("man-{s}")));
    }
    pages.push((format!("{}/pyclink", d.bash), "complete-bash".into()));
    pages.push((format!("{}/_pyclink", d.zsh), "complete-zsh".into()));
    pages.push((format!("{}/pyclink.fish", d.fish), "complete-fish".into()));
    for (path, what) in pages {
        assert!(
            read(dest, &path) == generated(&what),
            "{path} is not `pyclink --generate {what}`"
        );
    }
    let dh_man = String::from_utf8(read(dest, &format!("{}/man1/dh_pyclink.1", d.man))).unwrap();
    assert!(dh_man.contains(".TH DH_PYCLINK 1"), "{dh_man}");

    // The macros are the repository's, with the binary and the hook where this install put them.
    let macros =
        String::from_utf8(read(dest, &format!("{}/macros.zz-pyclink", d.rpmmacro))).unwrap();
    let source = String::from_utf8(repo_file("macros/macros.pyclink")).unwrap();
    let expect: String = source
        .lines()
        .map(|l| {
            let (name, value) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            let value = value.trim_start();
            let pad = &l[name.len()..l.len() - value.len()];
            let new = match (name, value) {
                ("%__pyclink", "%{_bindir}/pyclink") => format!("{}/pyclink", d.bin),
                ("%__brp_pyclink", "%{_rpmconfigdir}/brp-pyclink") => {
                    format!("{}/brp-pyclink", d.rpmconfig)
                }
                ("%__brp_pyclink_hook", "%{_rpmconfigdir}/pyclink/brp-python-bytecompile") => {
                    format!("{}/pyclink/brp-python-bytecompile", d.rpmconfig)
                }
                _ => return format!("{l}\n"),
            };
            format!("{name}{pad}{new}\n")
        })
        .collect();
    assert_ne!(
        expect, source,
        "macros.pyclink no longer names the three paths"
    );
    assert_eq!(macros, expect, "the installed macros");
}

#[test]
fn make_install_lays_out_the_documented_files_and_uninstall_removes_them() {
    let dest = tempfile::tempdir().unwrap();
    let got = make_install(dest.path(), &["install"], &[("PREFIX", "/usr")]);
    let d = Dirs::under("/usr");
    assert_eq!(got, d.layout(), "make install PREFIX=/usr");
    check_contents(dest.path(), &d);
    println!("make install PREFIX=/usr:");
    for (path, kind) in &got {
        println!("  {path}  {kind:?}");
    }

    // The installed binary runs, from where it was installed.
    let bin = dest.path().join("usr/bin/pyclink");
    let out = run(Command::new(&bin).arg("--version"));
    assert!(out.status.success(), "{} --version failed", bin.display());
    assert_eq!(
        stdout(&out).trim(),
        format!("pyclink {}", env!("CARGO_PKG_VERSION")),
        "installed pyclink --version"
    );
    let out = run(Command::new(&bin).arg("--help"));
    assert!(out.status.success(), "{} --help failed", bin.display());
    for sub in pyclink::generate::man_subcommands() {
        assert!(stdout(&out).contains(&sub), "--help does not list {sub}");
    }

    let left = make_install(dest.path(), &["uninstall"], &[("PREFIX", "/usr")]);
    assert!(left.is_empty(), "make uninstall left {left:#?}");
    // pyclink's own directories go too.
    for dir in [
        "usr/share/doc/pyclink",
        "usr/lib/rpm/pyclink",
        "usr/share/pyclink",
    ] {
        assert!(!dest.path().join(dir).exists(), "{dir} is left");
    }
}

#[test]
fn make_install_honours_prefix_and_every_directory_variable() {
    // PREFIX alone moves everything (/etc/rpm is not written without RPM_PLAIN_HOOK=yes).
    let dest = tempfile::tempdir().unwrap();
    let got = make_install(dest.path(), &["install"], &[("PREFIX", "/opt/pc")]);
    assert_eq!(got, Dirs::under("/opt/pc").layout(), "PREFIX=/opt/pc");
    check_contents(dest.path(), &Dirs::under("/opt/pc"));

    // Each variable on its own, and the plain-rpm hook.
    let d = Dirs {
        bin: "/b/bin".into(),
        man: "/m/man".into(),
        doc: "/doc/pc".into(),
        data: "/d/share".into(),
        rpmconfig: "/r/rpm".into(),
        rpmmacro: "/r/macros".into(),
        perl: "/p/perl".into(),
        bash: "/c/bash".into(),
        zsh: "/c/zsh".into(),
        fish: "/c/fish".into(),
        etc_rpm: Some("/e/rpm".into()),
    };
    let dest = tempfile::tempdir().unwrap();
    let mut vars = d.vars();
    vars.push(("PREFIX", "/unused"));
    let got = make_install(dest.path(), &["install"], &vars);
    let mut want = d.layout();
    let plain = format!("{}/pyclink/macros.pyclink-plain", d.data);
    let link = "/e/rpm/macros.pyclink";
    let Some(Installed::Link(target)) = got.get(link) else {
        panic!("no symlink {link}: {got:#?}");
    };
    assert_eq!(resolve("/e/rpm", target), Path::new(&plain), "{link}");
    want.insert(link.into(), Installed::Link(target.clone()));
    assert_eq!(got, want, "every directory variable");
    check_contents(dest.path(), &d);

    let left = make_install(dest.path(), &["uninstall"], &vars);
    assert!(left.is_empty(), "make uninstall left {left:#?}");
}

/// Where the Makefile's parts go: the packages install some of them (pyclink.spec,
/// debian/rules), and together the parts are `install`.
#[test]
fn install_is_the_sum_of_its_parts() {
    let parts = [
        "install-bin",
        "install-man",
        "install-completions",
        "install-doc",
        "install-rpm",
        "install-debhelper",
    ];
    let mut sum = BTreeMap::new();
    for part in parts {
        let dest = tempfile::tempdir().unwrap();
        let got = make_install(dest.path(), &[part], &[("PREFIX", "/usr")]);
        assert!(!got.is_empty(), "{part} installs nothing");
        for (path, kind) in got {
            assert!(
                sum.insert(path.clone(), kind).is_none(),
                "{path} is installed by two parts"
            );
        }
    }
    assert_eq!(sum, Dirs::under("/usr").layout());
}

fn tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `name` is on the PATH; a check that needs a missing one is skipped with the reason
/// printed (nextest shows it with --no-capture or on failure).
fn have(name: &str, test: &str, check: &str) -> bool {
    if tool(name) {
        return true;
    }
    println!("SKIP {test}: {check}: {name} is not installed");
    false
}

/// The long options of `cmd` that --help shows.
fn long_options(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .map(|l| format!("--{l}"))
        .collect()
}

/// The title line of a man page, `.TH NAME 1 ...`, and the sections every page has.
fn check_roff_header(page: &str, text: &str) {
    let th = text
        .lines()
        .find(|l| l.starts_with(".TH "))
        .unwrap_or_else(|| panic!("{page}.1 has no .TH line"));
    let mut words = th.split_whitespace().skip(1);
    let name = words.next().unwrap_or("").trim_matches('"');
    assert!(
        name.eq_ignore_ascii_case(page),
        "{page}.1: .TH names {name:?}: {th}"
    );
    assert_eq!(words.next(), Some("1"), "{page}.1: not section 1: {th}");
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(".SH") && l.trim_matches('"').ends_with(section)),
            "{page}.1 has no {section} section"
        );
    }
}

#[test]
fn man_pages_render_without_warnings_and_document_every_option() {
    let test = "man_pages_render_without_warnings_and_document_every_option";
    let dest = tempfile::tempdir().unwrap();
    make_install(
        dest.path(),
        &["install-man", "install-debhelper"],
        &[("PREFIX", "/usr")],
    );
    let man1 = dest.path().join("usr/share/man/man1");
    let cli = pyclink::cli::Cli::command();
    let mut pages = vec![("pyclink".to_string(), long_options(&cli))];
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push((format!("pyclink-{}", sub.get_name()), long_options(sub)));
    }
    pages.push(("dh_pyclink".into(), vec!["--invalidation-mode".into()]));

    // Without any formatter: each page is roff with its title and the usual sections.
    for (page, _) in &pages {
        let text = std::fs::read_to_string(man1.join(format!("{page}.1"))).unwrap();
        check_roff_header(page, &text);
    }
    println!("{} pages: roff title and sections", pages.len());

    if have("groff", test, "rendering the man pages") {
        for (page, options) in &pages {
            let file = man1.join(format!("{page}.1"));
            // As lintian checks a package's man pages (warnings on), wide enough that no option
            // name is hyphenated.
            let out = run(Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-rLL=200n", "-P-cbou"])
                .arg(&file));
            assert!(out.status.success(), "groff failed on {page}.1");
            assert_eq!(stderr(&out), "", "{page}.1 renders with warnings");
            let text = stdout(&out);
            for o in options {
                assert!(text.contains(o.as_str()), "{page}.1 does not document {o}");
            }
            if page.starts_with("pyclink") {
                assert!(text.contains("SEE ALSO"), "{page}.1");
            }
            println!("{page}.1: renders, documents {} options", options.len());
        }
    }
    if have("man", test, "man --warnings -l") {
        // man-db's own check, the one lintian runs.
        for (page, _) in &pages {
            let out = run(Command::new("man")
                .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
                .arg(man1.join(format!("{page}.1")))
                .env("MANROFFSEQ", ""));
            assert!(out.status.success(), "man -l {page}.1 failed");
            assert_eq!(stderr(&out), "", "man --warnings on {page}.1");
        }
        println!("man --warnings -l: {} pages clean", pages.len());
    }
}

#[test]
fn completion_scripts_complete_in_their_shells() {
    let test = "completion_scripts_complete_in_their_shells";
    let dest = tempfile::tempdir().unwrap();
    make_install(dest.path(), &["install-completions"], &[("PREFIX", "/usr")]);
    let share = dest.path().join("usr/share");

    // bash: the script registers a completion function, and that function completes an option
    // and a subcommand.
    if have("bash", test, "the bash completion") {
        let script = share.join("bash-completion/completions/pyclink");
        let out = run(Command::new("bash").arg("-n").arg(&script));
        assert!(out.status.success(), "bash -n: {}", stderr(&out));
        let complete = |line: &str| {
            let words: Vec<&str> = line.split(' ').collect();
            let out = run(Command::new("bash")
                .arg("--norc")
                .arg("-c")
                .arg(
                    r#"set -e; source "$1"; spec=$(complete -p pyclink); fn=${spec#*-F }; fn=${fn%% *}
                    shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
                    "$fn" pyclink "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
                    printf '%s\n' "${COMPREPLY[@]}""#,
                )
                .arg("bash")
                .arg(&script)
                .args(&words));
            assert!(out.status.success(), "bash completion of {line:?} failed");
            stdout(&out)
        };
        assert!(complete("pyclink --buildr")
            .lines()
            .any(|l| l == "--buildroot"));
        assert!(complete("pyclink norm").lines().any(|l| l == "normalize"));
        assert!(complete("pyclink --errors w").lines().any(|l| l == "warn"));
        println!("bash: parses, completes --buildroot, normalize, --errors warn");
    }

    // zsh: the file passes the parser, and compinit picks it up from the fpath as the
    // completion of `pyclink` (#compdef).
    if have("zsh", test, "the zsh completion") {
        let dir = share.join("zsh/site-functions");
        let out = run(Command::new("zsh").arg("-n").arg(dir.join("_pyclink")));
        assert!(out.status.success(), "zsh -n _pyclink: {}", stderr(&out));
        let dump = dest.path().join("zcompdump");
        let out = run(Command::new("zsh")
            .arg("-f")
            .arg("-c")
            .arg(r#"fpath=("$1" $fpath); autoload -Uz compinit; compinit -u -d "$2"; print -r -- ${_comps[pyclink]}"#)
            .arg("zsh")
            .arg(&dir)
            .arg(&dump));
        assert!(out.status.success());
        assert_eq!(
            stdout(&out).trim(),
            "_pyclink",
            "compinit did not register _pyclink"
        );
        println!("zsh: parses, compinit registers _pyclink for pyclink");
    }

    // fish: fish's own completion engine, with the script loaded.
    if have("fish", test, "the fish completion") {
        let script = share.join("fish/vendor_completions.d/pyclink.fish");
        let out = run(Command::new("fish").arg("--no-execute").arg(&script));
        assert!(out.status.success(), "fish -n: {}", stderr(&out));
        let complete = |line: &str| {
            let out = run(Command::new("fish")
                .arg("--no-config")
                .arg("-c")
                .arg(r#"source $argv[1]; complete -C"$argv[2]""#)
                .arg(&script)
                .arg(line));
            assert!(out.status.success(), "fish completion of {line:?} failed");
            stdout(&out)
        };
        assert!(complete("pyclink --buildr")
            .lines()
            .any(|l| l.split('\t').next() == Some("--buildroot")));
        assert!(complete("pyclink norm")
            .lines()
            .any(|l| l.split('\t').next() == Some("normalize")));
        println!("fish: parses, completes --buildroot, normalize");
    }
}

/// pyclink-rpm(7) renders without a warning and names every macro a spec may set or call
/// (those of macros.pyclink without the `__` of rpm's internal names, and the hook's files).
#[test]
fn the_rpm_macros_page_renders_and_names_every_knob() {
    let page = std::fs::read_to_string(Path::new(REPO).join("macros/pyclink-rpm.7")).unwrap();
    let macros = std::fs::read_to_string(Path::new(REPO).join("macros/macros.pyclink")).unwrap();
    let knobs: Vec<&str> = macros
        .lines()
        .filter_map(|l| l.strip_prefix('%'))
        .filter_map(|l| l.split(|c: char| !(c.is_alphanumeric() || c == '_')).next())
        .filter(|name| !name.is_empty() && !name.starts_with("__"))
        .collect();
    assert!(knobs.contains(&"_pyclink_exclude"), "{knobs:?}");
    for knob in knobs {
        assert!(
            page.contains(&format!("%{knob}")),
            "pyclink-rpm(7) does not name %{knob}"
        );
    }
    for name in ["__pyclink", "__brp_pyclink", "__brp_pyclink_hook"] {
        assert!(
            page.contains(&format!("%{name}")),
            "pyclink-rpm(7) does not name %{name}"
        );
    }
    let test = "the_rpm_macros_page_renders_and_names_every_knob";
    if have("groff", test, "rendering pyclink-rpm(7)") {
        let out = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(Path::new(REPO).join("macros/pyclink-rpm.7")));
        assert!(out.status.success());
        assert_eq!(stderr(&out), "", "pyclink-rpm.7 renders with warnings");
    }
}
