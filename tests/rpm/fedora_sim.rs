//! Fedora, simulated on this rpm for tests/rpm.rs: its macro files in Fedora's load order, in a
//! private mount namespace where a Fedora-shaped copy of rpm's configuration directory stands at
//! its own path ([`FedoraRoot`]).
//!
//! The macro files are either the project's own model of Fedora's (tests/rpm/fedora-model,
//! committed, so every run has it) or Fedora's real files (tests/rpm/fedora/README.md: not part of
//! this repository, used where they are found and checked against tests/rpm/fedora/SHA256SUMS).

use super::{rpm_eval, skip_unless_ci, REPO};
use crate::common::*;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which files stand for Fedora's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// The model, everywhere.
    Model,
    /// Fedora's real files, where they are found.
    Real,
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Setup::Model => "the model of Fedora's macros",
            Setup::Real => "Fedora's own macro files",
        })
    }
}

/// A project whose macro files a Fedora build root holds.
pub struct Project {
    pub name: &'static str,
    /// The model of its files, in tests/rpm/fedora-model, and where it is installed in rpm's
    /// configuration directory.
    model: (&'static str, &'static str),
    /// Its real files, as tests/rpm/fedora/SHA256SUMS names them, and where each is installed.
    real: &'static [(&'static str, &'static str)],
}

/// In Fedora's load order nothing here depends on the order of these: what matters is that
/// macros.d (add-determinism, python-rpm-macros, then macros.zz-pyclink, sorted) is read before
/// the platform file and redhat/macros after it.
pub const PROJECTS: [Project; 3] = [
    Project {
        name: "python-rpm-macros",
        model: ("python-rpm-macros.macros", "macros.d/macros.python-srpm"),
        real: &[
            (
                "python-rpm-macros/macros.python-srpm",
                "macros.d/macros.python-srpm",
            ),
            ("python-rpm-macros/macros.python", "macros.d/macros.python"),
            (
                "python-rpm-macros/macros.python3",
                "macros.d/macros.python3",
            ),
            (
                "python-rpm-macros/macros.pybytecompile",
                "macros.d/macros.pybytecompile",
            ),
        ],
    },
    Project {
        name: "redhat-rpm-config",
        model: ("redhat-rpm-config.macros", "redhat/macros"),
        real: &[("redhat-rpm-config/macros", "redhat/macros")],
    },
    Project {
        name: "add-determinism",
        model: (
            "add-determinism.macros",
            "macros.d/macros.build-reproducibility",
        ),
        real: &[(
            "add-determinism/macros.build-reproducibility",
            "macros.d/macros.build-reproducibility",
        )],
    },
];

/// The macro files of one simulation.
#[derive(Clone)]
pub struct FedoraFiles {
    /// Which files these are, for messages.
    pub label: String,
    /// Each file and where it goes in rpm's configuration directory.
    install: Vec<(PathBuf, &'static str)>,
}

impl FedoraFiles {
    /// The files of `setup`, or why they are not here (the model always is).
    pub fn of(setup: Setup) -> Result<FedoraFiles, String> {
        match setup {
            Setup::Model => Ok(FedoraFiles::model_with(&[])),
            Setup::Real => {
                let mut install = Vec::new();
                for p in &PROJECTS {
                    install.extend(real_files(p)?);
                }
                Ok(FedoraFiles {
                    label: Setup::Real.to_string(),
                    install,
                })
            }
        }
    }

    /// The model, with the real files of `real`'s projects in place of their models.
    pub fn model_with(real: &[(&Project, Vec<(PathBuf, &'static str)>)]) -> FedoraFiles {
        let mut install = Vec::new();
        let mut names = Vec::new();
        for p in &PROJECTS {
            match real.iter().find(|(r, _)| r.name == p.name) {
                Some((_, files)) => {
                    install.extend(files.iter().cloned());
                    names.push(p.name);
                }
                None => install.push((
                    Path::new(REPO)
                        .join("tests/rpm/fedora-model")
                        .join(p.model.0),
                    p.model.1,
                )),
            }
        }
        let label = if names.is_empty() {
            Setup::Model.to_string()
        } else {
            format!(
                "the model of Fedora's macros with the real files of {}",
                names.join(", ")
            )
        };
        FedoraFiles { label, install }
    }
}

/// The real files of project `p`, each where it is installed, or why they are not here.
pub fn real_files(p: &Project) -> Result<Vec<(PathBuf, &'static str)>, String> {
    p.real
        .iter()
        .map(|(name, at)| Ok((real_file(name)?, *at)))
        .collect()
}

/// For a SKIP line.
pub const WHERE_TO_GET: &str = "tests/rpm/fedora/README.md says where to get them";

/// The directories searched for Fedora's files: $PYCLINK_FEDORA_FILES alone if it is set (an
/// empty directory there simulates a machine without them), else ../shared/fedora-rpm beside the
/// repository.
fn real_dirs() -> Vec<PathBuf> {
    match std::env::var_os("PYCLINK_FEDORA_FILES") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![Path::new(REPO).join("../shared/fedora-rpm")],
    }
}

fn sha256(f: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(f)
        .output()
        .expect("cannot run sha256sum");
    assert!(out.status.success(), "sha256sum {} failed", f.display());
    stdout(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Fedora's file `name` (as tests/rpm/fedora/SHA256SUMS names it), with the sum listed there: from
/// [`real_dirs`], and for add-determinism's macros, unless $PYCLINK_FEDORA_FILES is set, also
/// from the crate source that `cargo install add-determinism` leaves in cargo's registry (where
/// another version of the crate is skipped). A file in those directories whose sum differs fails
/// the test: it was put there for these tests, and the model was checked against another one.
pub fn real_file(name: &str) -> Result<PathBuf, String> {
    let sums_path = Path::new(REPO).join("tests/rpm/fedora/SHA256SUMS");
    let sums = std::fs::read_to_string(&sums_path).unwrap();
    let want = sums
        .lines()
        .find_map(|l| {
            let (sum, file) = l.split_once("  ")?;
            (file == name).then_some(sum)
        })
        .unwrap_or_else(|| panic!("{name} is not in {}", sums_path.display()));
    let dirs = real_dirs();
    for d in &dirs {
        let f = d.join(name);
        if f.is_file() {
            let got = sha256(&f);
            assert_eq!(
                got,
                want,
                "{} is not the file listed in {}: the model was checked against another version",
                f.display(),
                sums_path.display()
            );
            return Ok(f);
        }
    }
    let mut others = Vec::new();
    if let (Some(file), None) = (
        name.strip_prefix("add-determinism/"),
        std::env::var_os("PYCLINK_FEDORA_FILES"),
    ) {
        for f in registry_sources("add-determinism-")
            .into_iter()
            .map(|d| d.join("rpm").join(file))
            .filter(|f| f.is_file())
        {
            if sha256(&f) == want {
                return Ok(f);
            }
            others.push(f.display().to_string());
        }
    }
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(
            " (other versions than the listed one: {})",
            others.join(", ")
        )
    };
    Err(format!("Fedora's {name} is not in {dirs:?}{others}"))
}

/// The unpacked crate sources in cargo's registry whose directory name starts with `prefix`.
fn registry_sources(prefix: &str) -> Vec<PathBuf> {
    let Some(cargo_home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
    else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for index in std::fs::read_dir(cargo_home.join("registry/src"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for krate in std::fs::read_dir(index.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if krate.file_name().to_string_lossy().starts_with(prefix) {
                found.push(krate.path());
            }
        }
    }
    found.sort();
    found
}

/// The files of `setup` and what a Fedora simulation needs besides (the real add-det, a private
/// mount namespace), or None after printing why not. Without Fedora's real files a test prints
/// SKIP and passes, in CI too: they are not part of the repository. Without the rest it fails in
/// CI ([`skip_unless_ci`]).
pub fn fedora_or_skip(test: &str, setup: Setup) -> Option<FedoraFiles> {
    let files = match FedoraFiles::of(setup) {
        Ok(f) => f,
        Err(reason) => {
            println!("SKIP {test} with {setup}: {reason} ({WHERE_TO_GET})");
            return None;
        }
    };
    prerequisites_or_skip(test).then_some(files)
}

/// The real add-det and a private mount namespace, or false after [`skip_unless_ci`].
pub fn prerequisites_or_skip(test: &str) -> bool {
    if add_det().is_none() {
        skip_unless_ci(
            test,
            "add-det is not installed (cargo install add-determinism --locked)",
        );
        return false;
    }
    let probe = Command::new("unshare").args(["--mount", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skip_unless_ci(
            test,
            "`unshare --mount` fails (the Fedora simulation needs root for a private mount namespace)",
        );
        return false;
    }
    true
}

// add-det (crate add-determinism) is found by common's add_det(): PATH, then cargo's bin.

/// The programs Fedora's macros run from %{_rpmconfigdir}/redhat that Debian's rpm lacks: each is
/// a stand-in that records its call, so that a test sees whether Fedora's own hook ran.
const FEDORA_STAND_INS: [&str; 7] = [
    "brp-python-bytecompile",
    "brp-python-hardlink",
    "brp-python-rpm-in-distinfo",
    "brp-fix-pyc-reproducibility",
    "brp-ldconfig",
    "brp-strip-lto",
    "brp-mangle-shebangs",
];

/// rpm's configuration directory laid out as on Fedora, for one build: this rpm's own files
/// (macros, platform, fileattrs, its brp scripts), minus the Python lines Debian patches into its
/// platform file; %{_rpmmacrodir} with python-rpm-macros' and add-determinism's files and
/// macros.zz-pyclink; redhat/ with redhat-rpm-config's `macros` and recording stand-ins; pyclink's
/// hook where its RPM installs it. rpmbuild runs where this tree is bind-mounted over the real
/// directory in a private mount namespace, so every path in Fedora's macros (including the
/// /usr/lib/rpm/redhat/... that redhat-rpm-config spells out, and the /usr/lib prefix that the
/// specs' sed opt-out matches) is Fedora's, and nothing outside the namespace changes.
pub struct FedoraRoot {
    tree: PathBuf,
    /// rpm's configuration directory here (and on Fedora): %{_rpmconfigdir}.
    configdir: String,
    /// One line per call of a stand-in or of add-det: "NAME ARGS".
    calls: PathBuf,
    /// Mounted over /etc/rpm, if there is one: a site's settings are not Fedora's.
    empty: PathBuf,
    /// The wrapper that records add-det's call and runs the real one: %__brp_add_determinism.
    pub add_det: PathBuf,
    pub label: String,
}

impl FedoraRoot {
    pub fn new(top: &Path, files: &FedoraFiles, pyclink: bool) -> FedoraRoot {
        let configdir = rpm_eval("%{_rpmconfigdir}");
        assert!(
            configdir.starts_with("/usr/lib/"),
            "rpm's configuration directory {configdir} is not where Fedora has it"
        );
        let tree = top.join("rpmconfig");
        let calls = top.join("calls.log");
        let empty = top.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(&calls, "").unwrap();
        let out = run(Command::new("cp")
            .arg("-a")
            .arg(format!("{configdir}/."))
            .arg(&tree));
        assert!(out.status.success(), "cp -a {configdir} failed");

        // Debian patches %__brp_python_bytecompile, %_python_bytecompile_extra 1 and
        // %_python_bytecompile_errors_terminate_build 0 into its platform file. Fedora's rpm has
        // none of them: its platform file would turn every Fedora build into an error
        // ("%_python_bytecompile_extra is discontinued").
        for e in std::fs::read_dir(tree.join("platform")).unwrap() {
            let f = e.unwrap().path().join("macros");
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !l.starts_with("%__brp_python_bytecompile")
                        && !l.starts_with("%_python_bytecompile_")
                })
                .collect();
            std::fs::write(&f, kept.join("\n") + "\n").unwrap();
        }

        let macrodir = tree.join("macros.d");
        let redhat = tree.join("redhat");
        std::fs::create_dir_all(&macrodir).unwrap();
        std::fs::create_dir_all(&redhat).unwrap();
        for (file, at) in &files.install {
            let dest = tree.join(at);
            assert!(!dest.exists(), "two files for {at}");
            std::fs::copy(file, &dest)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", file.display()));
        }
        if pyclink {
            // As the pyclink RPM installs them (packaging/pyclink.spec).
            let brp = Path::new(REPO).join("macros/brp-pyclink");
            std::os::unix::fs::symlink(
                Path::new(REPO).join("macros/macros.pyclink"),
                macrodir.join("macros.zz-pyclink"),
            )
            .unwrap();
            std::os::unix::fs::symlink(&brp, tree.join("brp-pyclink")).unwrap();
            std::fs::create_dir_all(tree.join("pyclink")).unwrap();
            std::os::unix::fs::symlink(&brp, tree.join("pyclink/brp-python-bytecompile")).unwrap();
        }

        let record = |path: &Path, body: String| {
            std::fs::write(path, body).unwrap();
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        };
        for name in FEDORA_STAND_INS {
            record(
                &redhat.join(name),
                format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\n", calls.display()),
            );
        }
        // Fedora's own %py_byte_compile starts with `python -m clamp_source_mtime`, from here.
        std::fs::write(
            redhat.join("clamp_source_mtime.py"),
            format!(
                "import sys\nwith open({:?}, 'a') as f:\n    f.write('clamp_source_mtime ' + ' '.join(sys.argv[1:]) + '\\n')\n",
                calls.display().to_string()
            ),
        )
        .unwrap();
        let wrapper = top.join("add-det");
        record(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"add-det $*\" >> '{}'\nexec '{}' \"$@\"\n",
                calls.display(),
                add_det().unwrap().display()
            ),
        );
        FedoraRoot {
            tree,
            configdir,
            calls,
            empty,
            add_det: wrapper,
            label: files.label.clone(),
        }
    }

    /// `unshare --mount ... PROGRAM` (rpmbuild, rpmspec): the caller adds its arguments, after
    /// [`FedoraRoot::macro_args`].
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--", "sh", "-c"])
            .arg(
                "set -e; mount --bind \"$1\" \"$2\"; \
                 if [ -d /etc/rpm ]; then mount --bind \"$3\" /etc/rpm; fi; \
                 shift 3; exec \"$@\"",
            )
            .arg("sh")
            .arg(&self.tree)
            .arg(&self.configdir)
            .arg(&self.empty)
            .arg(program);
        c
    }

    /// Fedora's macro path and add-det's wrapper, for rpmbuild's or rpmspec's command line.
    pub fn macro_args(&self) -> [String; 4] {
        [
            "--macros".to_string(),
            self.macro_path(),
            "--define".to_string(),
            format!("__brp_add_determinism {}", self.add_det.display()),
        ]
    }

    /// Fedora's macro path (its rpm reads %{_rpmconfigdir}/redhat/macros where Debian's reads
    /// debian/macros): rpm's macros, macros.d sorted, the platform file, fileattrs, redhat's
    /// macros, then /etc. The user's ~/.rpmmacros is left out.
    fn macro_path(&self) -> String {
        let d = &self.configdir;
        format!(
            "{d}/macros:{d}/macros.d/macros.*:{d}/platform/%{{_target}}/macros:{d}/fileattrs/*.attr:\
             {d}/redhat/macros:/etc/rpm/macros.*:/etc/rpm/macros:/etc/rpm/%{{_target}}/macros"
        )
    }

    /// What ran: the stand-ins' and add-det's calls, in order.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Text from one simulation made comparable with another's: the temporary directory `top`
/// becomes TOP, and each line is trimmed with its runs of blanks made one space, without empty
/// lines. What the shell runs is the same; the line structure, which the specs' sed opt-out
/// works on, is kept.
pub fn normalized(text: &str, top: &Path) -> Vec<String> {
    text.replace(&top.display().to_string(), "TOP")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// The first difference between two normalized texts, with a few lines of context, or None.
pub fn first_difference(a: &[String], b: &[String]) -> Option<String> {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))?;
    let from = at.saturating_sub(3);
    let show = |t: &[String]| t[from.min(t.len())..(at + 4).min(t.len())].join("\n    ");
    Some(format!(
        "at line {}:\n  first:\n    {}\n  second:\n    {}",
        at + 1,
        show(a),
        show(b)
    ))
}

/// What a build left in the RPMs, comparably: every path with its mode, and for a file its mtime
/// and a digest of its content (cpio gives directories it creates itself the time of extraction),
/// then the groups of paths that share an inode.
pub fn payload_summary(root: &Path) -> Vec<String> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut lines = Vec::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let m = e.path().symlink_metadata().unwrap();
        if m.is_file() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(e.path()).unwrap().hash(&mut h);
            lines.push(format!(
                "{rel} {:o} {} {:016x}",
                m.mode(),
                m.mtime(),
                h.finish()
            ));
        } else {
            lines.push(format!("{rel} {:o}", m.mode()));
        }
        if m.is_file() {
            inodes.entry(m.ino()).or_default().push(rel);
        }
    }
    let mut groups: Vec<String> = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|g| format!("linked: {}", g.join(" ")))
        .collect();
    groups.sort();
    lines.extend(groups);
    lines
}
