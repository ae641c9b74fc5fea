//! Step 1: which Python trees the build root holds, for which version each is compiled
//! ([`discover`]), and which interpreter compiles each version ([`interpreter`]).

pub mod interpreter;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::escape::{shown, shown_in_root};
use crate::fsroot::{display_in_root, Root};
use crate::python::{Implementation, PyVersion};
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
        "no python3 on PATH to choose a version for {trees}; give --python-version X.Y or --interpreter"
    )]
    NoHostPython3 { trees: String },
    #[error(
        "the host's python3 ({}), asked which version {trees} are compiled for: {failure}",
        shown(path)
    )]
    HostPython3 {
        path: PathBuf,
        trees: String,
        failure: Failure,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    NoInterpreter(Vec<interpreter::NotFound>),
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
    pub timeout: Duration,
}

/// The trees of a run, each with its version, and the interpreters the user named per version.
#[derive(Debug)]
pub struct Discovery {
    pub trees: Vec<Tree>,
    pub interpreters: BTreeMap<PyVersion, PathBuf>,
}

/// Step 1: the trees to compile and their versions. A bare `--interpreter PATH` names a version
/// by being one (it is asked, and becomes a `--python-version`).
pub fn discover(root: &Root, asked: Asked) -> Result<Discovery, Error> {
    let mut interpreters = asked.interpreters.clone();
    let mut named = asked.python_versions.to_vec();
    for path in asked.unversioned_interpreters {
        let version =
            interpreter::version_of(path, asked.timeout).map_err(|failure| Error::Probe {
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
    let found = find_trees(root, asked.paths)?;
    let shown_root = shown(root.path());
    if found.versioned.is_empty() && found.unversioned.is_empty() {
        // One message: "python2.7 not compiled" then "no Python trees found" contradict.
        match found.skipped.as_slice() {
            [] => log::warn!("no Python trees found in {shown_root}"),
            skipped => log::warn!(
                "no Python tree to compile in {shown_root}: {}",
                skipped.join("; ")
            ),
        }
    } else {
        for s in &found.skipped {
            log::warn!("{s}");
        }
    }
    let targets = if found.unversioned.is_empty() {
        Vec::new()
    } else {
        let shown = found
            .unversioned
            .iter()
            .map(|p| shown_in_root(p))
            .collect::<Vec<_>>()
            .join(", ");
        let given: Vec<PyVersion> = interpreters.keys().copied().collect();
        let (targets, why) = unversioned_targets(&named, &given, &found.versions_in_root, || {
            host_python3(&shown, asked.timeout)
        })?;
        let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
        log::info!("{shown} compiled for {} ({why})", names.join(", "));
        targets
    };
    Ok(Discovery {
        trees: expand(&found, &targets),
        interpreters,
    })
}

/// The version of the host's `python3`, for trees that name none.
fn host_python3(trees: &str, timeout: Duration) -> Result<PyVersion, Error> {
    let program = interpreter::find_on_path("python3").ok_or_else(|| Error::NoHostPython3 {
        trees: trees.to_string(),
    })?;
    interpreter::version_of(&program, timeout).map_err(|failure| Error::HostPython3 {
        path: program,
        trees: trees.to_string(),
        failure,
    })
}

/// Where versioned library directories live (`PREFIX/lib*/pythonX.Y`); `app` is Flatpak's.
const PREFIXES: &[&str] = &["usr", "usr/local", "app"];
const LIBDIRS: &[&str] = &["lib", "lib64"];
/// Debian's public module directory, shared by every installed Python 3.
pub const DIST_PACKAGES: &str = "usr/lib/python3/dist-packages";

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
    /// Debian's dist-packages and PATHs outside any versioned tree.
    pub unversioned: Vec<PathBuf>,
    /// Things seen and deliberately left alone, for the log.
    pub skipped: Vec<String>,
    /// Every supported version with a tree anywhere in the root (the standard prefixes, and any
    /// `lib/pythonX.Y` under the PATHs), whether or not PATHs restrict the run to other trees:
    /// the versions the package's code runs on.
    pub versions_in_root: BTreeSet<PyVersion>,
    /// Trees of versions pyclink does not compile, inside an unversioned tree: left out of it
    /// (a python2.7 tree is not compiled for Python 3 either).
    pub left_out: Vec<PathBuf>,
}

/// Scan the root. With `paths`, only those paths are compiled (each must exist): a path that
/// contains versioned trees means those trees, a path inside one is compiled for its version,
/// any other path is unversioned.
pub fn find_trees(root: &Root, paths: &[PathBuf]) -> Result<Found, Error> {
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
                if !is_real_dir(root, &rel) {
                    continue;
                }
                if version.is_supported() {
                    all.versioned.push(Tree::new(version, rel));
                } else {
                    all.skipped.push(format!(
                        "{}: {}; not compiled",
                        display_in_root(&rel),
                        version.unsupported_reason()
                    ));
                }
            }
        }
    }
    if is_real_dir(root, Path::new(DIST_PACKAGES)) {
        all.unversioned.push(PathBuf::from(DIST_PACKAGES));
    }
    all.versions_in_root = all.versioned.iter().map(|t| t.version).collect();
    if paths.is_empty() {
        return Ok(all);
    }

    let mut chosen = Found {
        skipped: all.skipped,
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
            chosen.versions_in_root.insert(version);
            chosen.versioned.push(Tree::new(version, p.clone()));
        } else {
            // Like `compileall DIR`, a PATH covers every source under it: any lib/pythonX.Y
            // below it (the prefix's own, a bundled virtualenv) belongs to that version, and
            // the rest is compiled as a private directory. A PATH holding versioned trees used
            // to mean only those trees, silently leaving out the rest (`/usr` without
            // `/usr/share`).
            for (version, dir) in nested_lib_pythons(root, p) {
                if version.is_supported() {
                    chosen.versions_in_root.insert(version);
                    chosen.versioned.push(Tree::new(version, dir));
                } else {
                    let why = format!(
                        "{}: {}; not compiled",
                        display_in_root(&dir),
                        version.unsupported_reason()
                    );
                    if !chosen.skipped.contains(&why) {
                        chosen.skipped.push(why);
                    }
                    chosen.left_out.push(dir);
                }
            }
            chosen.unversioned.push(p.clone());
        }
    }
    Ok(chosen)
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
fn nested_lib_pythons(root: &Root, top: &Path) -> Vec<(PyVersion, PathBuf)> {
    let mut found = Vec::new();
    let mut it = root.walk(top);
    while let Some(Ok(entry)) = it.next() {
        if !entry.file_type().is_dir() {
            continue;
        }
        if entry.file_name() == "__pycache__" {
            it.skip_current_dir();
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root.path()) else {
            continue;
        };
        let parent_is_lib = rel
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "lib" || n == "lib64");
        let version = entry
            .file_name()
            .to_str()
            .and_then(PyVersion::from_dir_name);
        if let (true, Some(version)) = (parent_is_lib, version) {
            found.push((version, rel.to_path_buf()));
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
            FileType::Symlink if !crate::plan::has_py_suffix(p) => Err(Error::Symlink { path }),
            FileType::Directory => Ok(()),
            _ if crate::plan::has_py_suffix(p) => Ok(()),
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

/// The versions unversioned trees (dist-packages, private directories) are compiled for, and why:
/// those named with `--python-version`; else the CPython 3 versions given with `--interpreter`;
/// else every CPython 3 version found anywhere in the root (whatever PATHs restrict the run to:
/// the package's code runs on the package's Python); else the host's `python3` (asked through
/// `host_python3`). One rule for every entry point: the CLI, the RPM hook, `%py_byte_compile`
/// (which passes `--interpreter`) and `dh_pyclink`.
pub fn unversioned_targets(
    named: &[PyVersion],
    interpreters: &[PyVersion],
    in_root: &BTreeSet<PyVersion>,
    host_python3: impl FnOnce() -> Result<PyVersion, Error>,
) -> Result<(Vec<PyVersion>, &'static str), Error> {
    let py3 = |v: &&PyVersion| v.implementation == Implementation::CPython && v.major == 3;
    if !named.is_empty() {
        let set: BTreeSet<PyVersion> = named.iter().copied().collect();
        return Ok((set.into_iter().collect(), "named with --python-version"));
    }
    let given: BTreeSet<PyVersion> = interpreters.iter().filter(py3).copied().collect();
    if !given.is_empty() {
        return Ok((given.into_iter().collect(), "given with --interpreter"));
    }
    let found: Vec<PyVersion> = in_root.iter().filter(py3).copied().collect();
    if !found.is_empty() {
        return Ok((found, "the Python 3 versions found in the build root"));
    }
    Ok((
        vec![host_python3()?],
        "no Python 3 tree in the build root: the host's python3",
    ))
}

/// Every tree with its version: versioned ones as found, unversioned ones once per target.
pub fn expand(found: &Found, targets: &[PyVersion]) -> Vec<Tree> {
    let mut trees = found.versioned.clone();
    for dir in &found.unversioned {
        let skip: Vec<PathBuf> = found
            .versioned
            .iter()
            .map(|t| &t.dir)
            .chain(&found.left_out)
            .filter(|t| t.starts_with(dir))
            .cloned()
            .collect();
        trees.extend(targets.iter().map(|&version| Tree {
            version,
            dir: dir.clone(),
            skip: skip.clone(),
        }));
    }
    trees
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
        let f = find_trees(&root, &[]).unwrap();
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
        assert_eq!(f.unversioned, vec![PathBuf::from(DIST_PACKAGES)]);
        assert!(f.skipped[0].contains("python2.7"));
    }

    #[test]
    fn paths_restrict() {
        let (_t, root) = root_with(&[
            "usr/lib64/python3.12/site-packages/foo",
            "usr/share/app",
            "usr/lib/python3.11",
        ]);
        let f = find_trees(
            &root,
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
        assert_eq!(f.unversioned, vec![PathBuf::from("usr/share/app")]);
        // The versions the package runs on are those of the whole root, not only of the PATHs.
        assert_eq!(
            f.versions_in_root,
            BTreeSet::from([PyVersion::cpython(3, 11), PyVersion::cpython(3, 12)])
        );
        let f = find_trees(&root, &[PathBuf::from("usr/share/app")]).unwrap();
        assert!(f.versioned.is_empty());
        assert_eq!(f.versions_in_root.len(), 2);
        // A parent of trees means those trees, and the rest of it as a private directory.
        let f = find_trees(&root, &[PathBuf::from("usr")]).unwrap();
        assert_eq!(f.versioned.len(), 2);
        assert_eq!(f.unversioned, vec![PathBuf::from("usr")]);
        let trees = expand(&f, &[PyVersion::cpython(3, 12)]);
        let usr = trees.iter().find(|t| t.dir == Path::new("usr")).unwrap();
        assert_eq!(usr.skip.len(), 2);
        assert!(find_trees(&root, &[PathBuf::from("usr/nope")])
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    #[test]
    fn python2_paths_are_refused_by_name() {
        let (_t, root) = root_with(&["usr/lib/python2.7/site-packages/old", "usr/lib/python3.12"]);
        for p in ["usr/lib/python2.7/site-packages/old", "usr/lib/python2.7"] {
            let err = find_trees(&root, &[PathBuf::from(p)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("/{p} is a python2.7 tree"))
                    && err.contains("python2.7 is not supported (Python 2 writes"),
                "{err}"
            );
        }
        // Found on its own (no PATH), it is reported and left alone.
        let f = find_trees(&root, &[PathBuf::from("usr")]).unwrap();
        assert_eq!(f.versioned.len(), 1);
        assert_eq!(
            f.skipped.iter().filter(|s| s.contains("python2.7")).count(),
            1
        );
        // Nor is it compiled as part of the private rest of the PATH.
        let trees = expand(&f, &[PyVersion::cpython(3, 12)]);
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
            &root,
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
        assert_eq!(f.unversioned, vec![PathBuf::from("opt/app")]);
        assert!(f.versions_in_root.contains(&PyVersion::cpython(3, 12)));
        let trees = expand(&f, &[PyVersion::cpython(3, 11)]);
        let app = trees
            .iter()
            .find(|t| t.dir == Path::new("opt/app"))
            .unwrap();
        assert_eq!(app.version, PyVersion::cpython(3, 11));
        assert_eq!(app.skip, vec![PathBuf::from("opt/app/venv/lib/python3.12")]);
    }

    #[test]
    fn unversioned_target_order() {
        let v311 = PyVersion::cpython(3, 11);
        let v312 = PyVersion::cpython(3, 12);
        let found = BTreeSet::from([v312, PyVersion::cpython(2, 7)]);
        let never = || -> Result<PyVersion, Error> { panic!("host python3 must not be asked") };
        let targets = |named: &[PyVersion], given: &[PyVersion], found| {
            unversioned_targets(named, given, found, never).unwrap().0
        };
        assert_eq!(targets(&[v311], &[v312], &found), vec![v311]);
        assert_eq!(targets(&[], &[v311], &found), vec![v311]);
        assert_eq!(targets(&[], &[], &found), vec![v312]);
        let host = unversioned_targets(&[], &[], &BTreeSet::new(), || Ok(v311)).unwrap();
        assert_eq!(host.0, vec![v311]);
    }
}
