//! Step 1: which Python trees the build root holds, for which version each is compiled
//! ([`discover`]), and which interpreter compiles each version ([`interpreter`]).

pub mod interpreter;
pub mod outside;
pub mod targets;

pub use targets::{DIST_PACKAGES, PYPY_DIST_PACKAGES};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::escape::{shown, shown_in_root};
use crate::fsroot::Root;
use crate::python::{Implementation, PyVersion};
use crate::walk::{Kind, Walker};
use crate::worker::Failure;

/// Why the trees (or the interpreters) of a run cannot be decided.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} does not exist in the build root {}", shown(root))]
    Missing { path: String, root: PathBuf },
    #[error(
        "{path} is a symlink and not a .py file; give the path it stands for inside the build root"
    )]
    Symlink { path: String },
    #[error(
        "{path} is under a symlink (or a file); give the path it stands for inside the build root"
    )]
    UnderSymlink { path: String },
    #[error("{path}: {source}")]
    Stat {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a {version} tree: {}", version.unsupported_reason())]
    Unsupported { path: String, version: PyVersion },
    #[error("--interpreter {}: {failure}", shown(path))]
    Probe { path: PathBuf, failure: Failure },
    #[error(
        "two interpreters given for {version}: {} and {}",
        shown(first),
        shown(second)
    )]
    TwoInterpreters {
        version: PyVersion,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "no {command} on PATH to choose a version for {trees}; give --python-version or --interpreter"
    )]
    NoHostDefault {
        command: &'static str,
        trees: String,
    },
    #[error(
        "{}, asked which version {trees} are compiled for: {failure}",
        shown(path)
    )]
    HostDefault {
        path: PathBuf,
        trees: String,
        failure: Failure,
    },
    #[error(
        "{trees}: {} sources, and no {} version to compile them for: give --python-version or --interpreter with one{}",
        flavour_name(*.implementation),
        flavour_name(*.implementation),
        pypy_hint(*.implementation)
    )]
    NoVersionOfFlavour {
        trees: String,
        implementation: Implementation,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    NoInterpreter(Vec<interpreter::NotFound>),
}

fn flavour_name(i: Implementation) -> &'static str {
    match i {
        Implementation::CPython => "CPython",
        Implementation::PyPy => "PyPy",
    }
}

/// PyPy never reads a CPython pyc: say what Debian does instead.
fn pypy_hint(i: Implementation) -> &'static str {
    match i {
        Implementation::CPython => "",
        Implementation::PyPy => {
            " (pypyX.Y); Debian compiles PyPy's public modules at install time with pypy3compile, \
             so a package can also leave them out with -x"
        }
    }
}

/// What the command line says about versions and interpreters.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    /// PATHs restricting the run (root-relative); empty: every tree.
    pub paths: &'a [PathBuf],
    /// `--python-version`.
    pub python_versions: &'a [PyVersion],
    /// `--interpreter X.Y=PATH`.
    pub interpreters: &'a BTreeMap<PyVersion, PathBuf>,
    /// `--interpreter PATH`, whose versions are asked of them.
    pub unversioned_interpreters: &'a [PathBuf],
    /// Starts the interpreters asked their version, and keeps them for the selection.
    pub starter: &'a interpreter::Starter,
}

/// The trees of a run, each with its version, and the interpreters the user named per version.
#[derive(Debug)]
pub struct Discovery {
    pub trees: Vec<Tree>,
    /// Trees of versions pyclink does not compile: an error (a warning under `--errors warn`)
    /// where they hold sources, since those would ship without pycs.
    pub unsupported: Vec<Tree>,
    pub interpreters: BTreeMap<PyVersion, PathBuf>,
}

/// Step 1: the trees to compile and their versions. A bare `--interpreter PATH` names a version
/// by being one (it is asked, and becomes a `--python-version`).
pub fn discover(walker: Walker, asked: Asked) -> Result<Discovery, Error> {
    let root = walker.root();
    let mut interpreters = asked.interpreters.clone();
    let mut named = asked.python_versions.to_vec();
    for path in asked.unversioned_interpreters {
        let version = asked
            .starter
            .version_of(path)
            .map_err(|failure| Error::Probe {
                path: path.clone(),
                failure,
            })?;
        if let Some(other) = interpreters.get(&version).filter(|p| *p != path) {
            return Err(Error::TwoInterpreters {
                version,
                first: other.clone(),
                second: path.clone(),
            });
        }
        interpreters.insert(version, path.clone());
        named.push(version);
    }
    let found = find_trees(walker, asked.paths)?;
    let shown_root = shown(root.path());
    if found.versioned.is_empty() && found.unversioned.is_empty() && found.unsupported.is_empty() {
        log::warn!("no Python trees found in {shown_root}");
    }
    let mut trees = found.versioned.clone();
    for implementation in [Implementation::CPython, Implementation::PyPy] {
        let dirs: Vec<&PathBuf> = found
            .unversioned
            .iter()
            .filter(|u| u.implementation == implementation)
            .map(|u| &u.dir)
            .collect();
        if dirs.is_empty() {
            continue;
        }
        let shown = dirs
            .iter()
            .map(|p| shown_in_root(p))
            .collect::<Vec<_>>()
            .join(", ");
        let given: Vec<PyVersion> = interpreters.keys().copied().collect();
        let targets_asked = targets::Asked {
            named: &named,
            given: &given,
            in_root: &found.versions_in_root,
        };
        let (targets, why) =
            targets::unversioned_targets(implementation, targets_asked, &shown, asked.starter)?;
        let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
        log::info!("{shown} compiled for {} ({why})", names.join(", "));
        for dir in dirs {
            trees.extend(expand(&found, dir, &targets));
        }
    }
    Ok(Discovery {
        trees,
        unsupported: found.unsupported,
        interpreters,
    })
}

/// Where versioned library directories live (`PREFIX/lib*/pythonX.Y`); `app` is Flatpak's.
const PREFIXES: &[&str] = &["usr", "usr/local", "app"];
const LIBDIRS: &[&str] = &["lib", "lib64"];

/// A directory (root-relative) whose sources are compiled for one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    pub version: PyVersion,
    pub dir: PathBuf,
    /// Subtrees compiled as trees of their own (a virtualenv's `lib/pythonX.Y` inside a
    /// private directory): left out of this one.
    pub skip: Vec<PathBuf>,
}

impl Tree {
    pub fn new(version: PyVersion, dir: PathBuf) -> Tree {
        Tree {
            version,
            dir,
            skip: Vec::new(),
        }
    }
}

/// The trees of a root before the versions of the unversioned ones are known.
#[derive(Debug, Default)]
pub struct Found {
    /// `usr/lib64/python3.12` and the like.
    pub versioned: Vec<Tree>,
    /// Debian's dist-packages (CPython's and PyPy's) and PATHs outside any versioned tree.
    pub unversioned: Vec<Unversioned>,
    /// Trees of versions pyclink does not compile (`python2.7`, `python3.5`), wherever found.
    pub unsupported: Vec<Tree>,
    /// Every supported version with a tree anywhere in the root (the standard prefixes, and any
    /// `lib/pythonX.Y` under the PATHs), whether or not PATHs restrict the run to other trees:
    /// the versions the package's code runs on.
    pub versions_in_root: BTreeSet<PyVersion>,
}

/// A tree whose version is not in its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unversioned {
    pub dir: PathBuf,
    /// Compiled by versions of this implementation only (see [`targets::flavour`]).
    pub implementation: Implementation,
}

impl Unversioned {
    fn new(dir: PathBuf) -> Unversioned {
        Unversioned {
            implementation: targets::flavour(&dir),
            dir,
        }
    }
}

/// Scan the root. With `paths`, only those paths are compiled (each must exist): a path that
/// contains versioned trees means those trees, a path inside one is compiled for its version,
/// any other path is unversioned.
pub fn find_trees(walker: Walker, paths: &[PathBuf]) -> Result<Found, Error> {
    let root = walker.root();
    let mut all = Found::default();
    for prefix in PREFIXES {
        for lib in LIBDIRS {
            let dir = Path::new(prefix).join(lib);
            let Ok(entries) = std::fs::read_dir(root.host_path(&dir)) else {
                continue;
            };
            let mut names: Vec<_> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for name in names {
                let Some(version) = name.to_str().and_then(PyVersion::from_dir_name) else {
                    continue;
                };
                let rel = dir.join(&name);
                if is_real_dir(root, &rel) {
                    all.add_versioned(Tree::new(version, rel));
                }
            }
        }
    }
    for dist in [DIST_PACKAGES, PYPY_DIST_PACKAGES] {
        if is_real_dir(root, Path::new(dist)) {
            all.unversioned.push(Unversioned::new(PathBuf::from(dist)));
        }
    }
    if paths.is_empty() {
        return Ok(all);
    }

    let mut chosen = Found {
        versions_in_root: all.versions_in_root,
        ..Found::default()
    };
    for p in paths {
        check_path(root, p)?;
        if let Some(t) = all.versioned.iter().find(|t| p.starts_with(&t.dir)) {
            chosen.versioned.push(Tree::new(t.version, p.clone()));
        } else if let Some(version) = lib_python_version(p) {
            // Inside a virtualenv's (or another prefix's) lib/pythonX.Y.
            refuse_unsupported(version, p)?;
            chosen.add_versioned(Tree::new(version, p.clone()));
        } else {
            // Like `compileall DIR`, a PATH covers every source under it: any lib/pythonX.Y
            // below it (the prefix's own, a bundled virtualenv) belongs to that version, and
            // the rest is compiled as a private directory. A PATH holding versioned trees used
            // to mean only those trees, silently leaving out the rest (`/usr` without
            // `/usr/share`).
            for (version, dir) in nested_lib_pythons(walker, p) {
                chosen.add_versioned(Tree::new(version, dir));
            }
            chosen.unversioned.push(Unversioned::new(p.clone()));
        }
    }
    Ok(chosen)
}

impl Found {
    /// A `pythonX.Y` tree: compiled, or kept apart if pyclink does not compile its version.
    fn add_versioned(&mut self, tree: Tree) {
        if !tree.version.is_supported() {
            if !self.unsupported.contains(&tree) {
                self.unsupported.push(tree);
            }
            return;
        }
        self.versions_in_root.insert(tree.version);
        self.versioned.push(tree);
    }
}

/// A PATH the user named explicitly that belongs to a Python pyclink cannot compile for is an
/// error, not a silent skip: the user asked for it.
fn refuse_unsupported(version: PyVersion, p: &Path) -> Result<(), Error> {
    if version.is_supported() {
        return Ok(());
    }
    Err(Error::Unsupported {
        path: shown_in_root(p),
        version,
    })
}

/// The version of the first `lib/pythonX.Y` (or `lib64/...`) found along `rel`.
fn lib_python_version(rel: &Path) -> Option<PyVersion> {
    let parts: Vec<&std::ffi::OsStr> = rel.iter().collect();
    parts.windows(2).find_map(|w| {
        let lib = w[0] == "lib" || w[0] == "lib64";
        lib.then(|| w[1].to_str().and_then(PyVersion::from_dir_name))
            .flatten()
    })
}

/// `lib/pythonX.Y` directories below `top` (not following symlinks, not entering them).
fn nested_lib_pythons(walker: Walker, top: &Path) -> Vec<(PyVersion, PathBuf)> {
    let mut found = Vec::new();
    let mut it = walker.walk(top);
    while let Some(Ok(met)) = it.next() {
        if met.kind != Kind::Dir {
            continue;
        }
        if met.is_named("__pycache__") {
            it.skip_current_dir();
            continue;
        }
        let parent_is_lib = met
            .rel
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "lib" || n == "lib64");
        let version = met
            .rel
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(PyVersion::from_dir_name);
        if let (true, Some(version)) = (parent_is_lib, version) {
            found.push((version, met.rel));
            it.skip_current_dir();
        }
    }
    found
}

/// A PATH must exist and be reached without symlinks: following one could leave the root. A
/// `.py` symlink itself is a source like those the walk meets (`%py_byte_compile DIR/*.py`
/// names them): read with its target resolved inside the root, its pycs beside the link.
fn check_path(root: &Root, p: &Path) -> Result<(), Error> {
    use rustix::fs::FileType;
    let path = shown_in_root(p);
    match root.lstat(p) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink if !crate::python::has_py_suffix(p) => Err(Error::Symlink { path }),
            FileType::Directory => Ok(()),
            _ if crate::python::has_py_suffix(p) => Ok(()),
            _ => {
                log::warn!("{path}: not a Python source (*.py), skipped");
                Ok(())
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing {
            path,
            root: root.path().to_path_buf(),
        }),
        Err(e) if matches!(e.raw_os_error(), Some(n) if n == rustix::io::Errno::LOOP.raw_os_error() || n == rustix::io::Errno::NOTDIR.raw_os_error()) => {
            Err(Error::UnderSymlink { path })
        }
        Err(source) => Err(Error::Stat { path, source }),
    }
}

fn is_real_dir(root: &Root, rel: &Path) -> bool {
    root.lstat(rel).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
    })
}

/// An unversioned tree once per target version, without the versioned (and unsupported)
/// trees inside it, which are compiled for their own versions or not at all.
pub fn expand(found: &Found, dir: &Path, targets: &[PyVersion]) -> Vec<Tree> {
    let skip: Vec<PathBuf> = found
        .versioned
        .iter()
        .chain(&found.unsupported)
        .map(|t| &t.dir)
        .filter(|t| t.starts_with(dir))
        .cloned()
        .collect();
    targets
        .iter()
        .map(|&version| Tree {
            version,
            dir: dir.to_path_buf(),
            skip: skip.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(dirs: &[&str]) -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        let root = Root::open(t.path()).unwrap();
        (t, root)
    }

    #[test]
    fn finds_versioned_and_debian_trees() {
        let (t, root) = root_with(&[
            "usr/lib64/python3.12/site-packages",
            "usr/lib/python3.12/site-packages",
            "usr/lib/python3/dist-packages",
            "usr/lib/python2.7",
            "usr/lib/pypy3.10",
            "usr/lib/python3.12-config",
        ]);
        std::os::unix::fs::symlink("python3.12", t.path().join("usr/lib64/python3.13")).unwrap();
        let f = find_trees(Walker::Disk(&root), &[]).unwrap();
        let dirs: Vec<_> = f
            .versioned
            .iter()
            .map(|t| (t.version.to_string(), t.dir.display().to_string()))
            .collect();
        assert_eq!(
            dirs,
            [
                ("pypy3.10".into(), "usr/lib/pypy3.10".into()),
                ("python3.12".into(), "usr/lib/python3.12".into()),
                ("python3.12".to_string(), "usr/lib64/python3.12".to_string()),
            ]
        );
        assert_eq!(dirs_of(&f.unversioned), [DIST_PACKAGES]);
        assert_eq!(
            f.unsupported,
            [Tree::new(
                PyVersion::cpython(2, 7),
                "usr/lib/python2.7".into()
            )]
        );
    }

    #[test]
    fn paths_restrict() {
        let (_t, root) = root_with(&[
            "usr/lib64/python3.12/site-packages/foo",
            "usr/share/app",
            "usr/lib/python3.11",
        ]);
        let f = find_trees(
            Walker::Disk(&root),
            &[
                PathBuf::from("usr/lib64/python3.12/site-packages/foo"),
                PathBuf::from("usr/share/app"),
            ],
        )
        .unwrap();
        assert_eq!(
            f.versioned,
            vec![Tree::new(
                PyVersion::cpython(3, 12),
                "usr/lib64/python3.12/site-packages/foo".into()
            )]
        );
        assert_eq!(dirs_of(&f.unversioned), ["usr/share/app"]);
        // The versions the package runs on are those of the whole root, not only of the PATHs.
        assert_eq!(
            f.versions_in_root,
            BTreeSet::from([PyVersion::cpython(3, 11), PyVersion::cpython(3, 12)])
        );
        let f = find_trees(Walker::Disk(&root), &[PathBuf::from("usr/share/app")]).unwrap();
        assert!(f.versioned.is_empty());
        assert_eq!(f.versions_in_root.len(), 2);
        // A parent of trees means those trees, and the rest of it as a private directory.
        let f = find_trees(Walker::Disk(&root), &[PathBuf::from("usr")]).unwrap();
        assert_eq!(f.versioned.len(), 2);
        assert_eq!(dirs_of(&f.unversioned), ["usr"]);
        let trees = expand(&f, Path::new("usr"), &[PyVersion::cpython(3, 12)]);
        let usr = trees.iter().find(|t| t.dir == Path::new("usr")).unwrap();
        assert_eq!(usr.skip.len(), 2);
        assert!(
            find_trees(Walker::Disk(&root), &[PathBuf::from("usr/nope")])
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }

    #[test]
    fn python2_paths_are_refused_by_name() {
        let (_t, root) = root_with(&["usr/lib/python2.7/site-packages/old", "usr/lib/python3.12"]);
        for p in ["usr/lib/python2.7/site-packages/old", "usr/lib/python2.7"] {
            let err = find_trees(Walker::Disk(&root), &[PathBuf::from(p)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("/{p} is a python2.7 tree"))
                    && err.contains("python2.7 is not supported (Python 2 writes"),
                "{err}"
            );
        }
        // Found inside a PATH, it is kept apart (plan makes its sources an error).
        let f = find_trees(Walker::Disk(&root), &[PathBuf::from("usr")]).unwrap();
        assert_eq!(f.versioned.len(), 1);
        assert_eq!(f.unsupported.len(), 1);
        // Nor is it compiled as part of the private rest of the PATH.
        let trees = expand(&f, Path::new("usr"), &[PyVersion::cpython(3, 12)]);
        let usr = trees.iter().find(|t| t.dir == Path::new("usr")).unwrap();
        assert!(usr.skip.contains(&PathBuf::from("usr/lib/python2.7")));
    }

    #[test]
    fn virtualenvs_in_private_directories_keep_their_version() {
        let (_t, root) = root_with(&[
            "opt/app/app",
            "opt/app/venv/lib/python3.12/site-packages/dep",
            "opt/app/venv/bin",
            "opt/other/lib64/python3.9/site-packages",
        ]);
        let f = find_trees(
            Walker::Disk(&root),
            &[
                PathBuf::from("opt/app"),
                PathBuf::from("opt/other/lib64/python3.9/site-packages"),
            ],
        )
        .unwrap();
        assert_eq!(
            f.versioned,
            vec![
                Tree::new(
                    PyVersion::cpython(3, 12),
                    "opt/app/venv/lib/python3.12".into()
                ),
                Tree::new(
                    PyVersion::cpython(3, 9),
                    "opt/other/lib64/python3.9/site-packages".into()
                ),
            ]
        );
        assert_eq!(dirs_of(&f.unversioned), ["opt/app"]);
        assert!(f.versions_in_root.contains(&PyVersion::cpython(3, 12)));
        let trees = expand(&f, Path::new("opt/app"), &[PyVersion::cpython(3, 11)]);
        let app = trees
            .iter()
            .find(|t| t.dir == Path::new("opt/app"))
            .unwrap();
        assert_eq!(app.version, PyVersion::cpython(3, 11));
        assert_eq!(app.skip, vec![PathBuf::from("opt/app/venv/lib/python3.12")]);
    }

    #[test]
    fn free_threaded_and_pypy_trees() {
        let (_t, root) = root_with(&[
            "usr/lib64/python3.14t/site-packages",
            "usr/lib64/python3.14",
            "usr/lib64/python3.12t",
            "usr/lib/pypy3/dist-packages",
            "usr/lib/python3.5",
        ]);
        let f = find_trees(Walker::Disk(&root), &[]).unwrap();
        let versions: Vec<String> = f.versioned.iter().map(|t| t.version.to_string()).collect();
        assert_eq!(versions, ["python3.14", "python3.14t"]);
        // No CPython has a free-threaded 3.12, and 3.5 is too old: kept apart, not compiled.
        let unsupported: Vec<String> = f
            .unsupported
            .iter()
            .map(|t| t.version.to_string())
            .collect();
        assert_eq!(unsupported, ["python3.5", "python3.12t"]);
        assert_eq!(
            f.unversioned,
            [Unversioned {
                dir: PYPY_DIST_PACKAGES.into(),
                implementation: Implementation::PyPy
            }]
        );
        // A PATH inside PyPy's dist-packages stays PyPy's.
        let f = find_trees(
            Walker::Disk(&root),
            &[PathBuf::from("usr/lib/pypy3/dist-packages")],
        )
        .unwrap();
        assert_eq!(f.unversioned[0].implementation, Implementation::PyPy);
    }

    fn dirs_of(u: &[Unversioned]) -> Vec<String> {
        u.iter().map(|u| u.dir.display().to_string()).collect()
    }
}
