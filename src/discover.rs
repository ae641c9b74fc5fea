//! Step 1: which Python trees the build root holds, and for which version each is compiled.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::fsroot::{display_in_root, Root};
use crate::version::{Implementation, PyVersion};

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
}

/// Scan the root. With `paths`, only those paths are compiled (each must exist): a path that
/// contains versioned trees means those trees, a path inside one is compiled for its version,
/// any other path is unversioned.
pub fn find_trees(root: &Root, paths: &[PathBuf]) -> Result<Found, String> {
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
                    all.versioned.push(Tree { version, dir: rel });
                } else {
                    all.skipped.push(format!(
                        "{}: Python {}.{} is not supported (pyclink writes PEP 3147 __pycache__ files); not compiled",
                        display_in_root(&rel),
                        version.major,
                        version.minor
                    ));
                }
            }
        }
    }
    if is_real_dir(root, Path::new(DIST_PACKAGES)) {
        all.unversioned.push(PathBuf::from(DIST_PACKAGES));
    }
    if paths.is_empty() {
        return Ok(all);
    }

    let mut chosen = Found {
        skipped: all.skipped,
        ..Found::default()
    };
    for p in paths {
        check_path(root, p)?;
        let inside: Vec<&Tree> = all
            .versioned
            .iter()
            .filter(|t| t.dir.starts_with(p))
            .collect();
        if !inside.is_empty() {
            chosen.versioned.extend(inside.into_iter().cloned());
        } else if let Some(t) = all.versioned.iter().find(|t| p.starts_with(&t.dir)) {
            chosen.versioned.push(Tree {
                version: t.version,
                dir: p.clone(),
            });
        } else {
            chosen.unversioned.push(p.clone());
        }
    }
    Ok(chosen)
}

/// A PATH must exist and be reached without symlinks: following one could leave the root.
fn check_path(root: &Root, p: &Path) -> Result<(), String> {
    let shown = display_in_root(p);
    match root.lstat(p) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink =>
        {
            Err(format!(
                "{shown} is a symlink; give the path it stands for inside the build root"
            ))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{shown} does not exist in the build root {}",
            root.path().display()
        )),
        Err(e) if matches!(e.raw_os_error(), Some(n) if n == rustix::io::Errno::LOOP.raw_os_error() || n == rustix::io::Errno::NOTDIR.raw_os_error()) => {
            Err(format!(
                "{shown} is under a symlink (or a file); give the path it stands for inside the build root"
            ))
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

fn is_real_dir(root: &Root, rel: &Path) -> bool {
    root.lstat(rel).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
    })
}

/// The versions unversioned trees are compiled for: those named with `--python-version`; else
/// the CPython 3 versions given with `--interpreter`; else the CPython 3 versions found in the
/// root; else the host's `python3` (asked through `host_python3`).
pub fn unversioned_targets(
    named: &[PyVersion],
    interpreters: &[PyVersion],
    found: &[Tree],
    host_python3: impl FnOnce() -> Result<PyVersion, String>,
) -> Result<Vec<PyVersion>, String> {
    let py3 = |v: &&PyVersion| v.implementation == Implementation::CPython && v.major == 3;
    if !named.is_empty() {
        return Ok(named
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect());
    }
    let given: BTreeSet<PyVersion> = interpreters.iter().filter(py3).copied().collect();
    if !given.is_empty() {
        return Ok(given.into_iter().collect());
    }
    let in_root: BTreeSet<PyVersion> = found
        .iter()
        .map(|t| &t.version)
        .filter(py3)
        .copied()
        .collect();
    if !in_root.is_empty() {
        return Ok(in_root.into_iter().collect());
    }
    Ok(vec![host_python3()?])
}

/// Every tree with its version: versioned ones as found, unversioned ones once per target.
pub fn expand(found: &Found, targets: &[PyVersion]) -> Vec<Tree> {
    let mut trees = found.versioned.clone();
    for dir in &found.unversioned {
        trees.extend(targets.iter().map(|&version| Tree {
            version,
            dir: dir.clone(),
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
            vec![Tree {
                version: PyVersion::cpython(3, 12),
                dir: "usr/lib64/python3.12/site-packages/foo".into()
            }]
        );
        assert_eq!(f.unversioned, vec![PathBuf::from("usr/share/app")]);
        // A parent of trees means those trees.
        let f = find_trees(&root, &[PathBuf::from("usr")]).unwrap();
        assert_eq!(f.versioned.len(), 2);
        assert!(f.unversioned.is_empty());
        assert!(find_trees(&root, &[PathBuf::from("usr/nope")])
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn unversioned_target_order() {
        let v311 = PyVersion::cpython(3, 11);
        let v312 = PyVersion::cpython(3, 12);
        let found = [Tree {
            version: v312,
            dir: "usr/lib/python3.12".into(),
        }];
        let never = || -> Result<PyVersion, String> { panic!("host python3 must not be asked") };
        assert_eq!(
            unversioned_targets(&[v311], &[v312], &found, never).unwrap(),
            vec![v311]
        );
        assert_eq!(
            unversioned_targets(&[], &[v311], &found, never).unwrap(),
            vec![v311]
        );
        assert_eq!(
            unversioned_targets(&[], &[], &found, never).unwrap(),
            vec![v312]
        );
        assert_eq!(
            unversioned_targets(&[], &[], &[], || Ok(v311)).unwrap(),
            vec![v311]
        );
    }
}
