//! Step 2: walk each tree (never following directory symlinks) and list the sources to compile,
//! one version after another, each largest first so no core idles at the end. Temp files a killed run left in `__pycache__`
//! directories are removed on the way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::discover::Tree;
use crate::fsroot::{display_in_root, Root};
use crate::report::FileError;
use crate::write::{is_temp_name, remove_stale_temp};

/// One source to compile for one version.
#[derive(Clone, Debug)]
pub struct Job {
    /// Index into the run's version list.
    pub version: usize,
    /// Root-relative path of the `.py` file.
    pub rel: PathBuf,
    pub size: u64,
    /// A symlinked `.py`: read through the link, resolved inside the root.
    pub symlink: bool,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// Per-version problems found while walking (unreadable directories...).
    pub errors: Vec<(usize, FileError)>,
    /// `x.py` entries that are not files (FIFO, socket, device, directory): left alone.
    pub skipped: Vec<String>,
    pub stale_temps_removed: usize,
}

/// `--exclude` patterns. A pattern with a `/` is matched against the whole path as seen inside
/// the root (`/usr/lib/python3.12/test/*`); one without is matched against the file or directory
/// name (`test_*.py`). `*` matches across `/` like fnmatch; an excluded directory is not entered.
#[derive(Debug)]
pub struct Excludes {
    paths: GlobSet,
    names: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        let mut paths = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("bad --exclude pattern '{p}': {e}"))?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build =
            |b: GlobSetBuilder| b.build().map_err(|e| format!("bad --exclude pattern: {e}"));
        Ok(Excludes {
            paths: build(paths)?,
            names: build(names)?,
        })
    }

    pub fn matches(&self, rel: &Path) -> bool {
        let name_hit = rel.file_name().is_some_and(|n| self.names.is_match(n));
        name_hit || self.paths.is_match(display_in_root(rel))
    }
}

/// List the jobs of `trees` (each tree's version is an index into `versions`).
pub fn plan(root: &Root, trees: &[(usize, &Tree)], excludes: &Excludes) -> Plan {
    let mut plan = Plan::default();
    let mut seen: HashSet<(usize, PathBuf)> = HashSet::new();
    for &(version, tree) in trees {
        walk_tree(root, version, tree, excludes, &mut seen, &mut plan);
    }
    // Version by version, so only one version's workers are alive at a time (the pool retires a
    // version's workers once its sources are handed out); within a version largest first, so
    // the last version's smallest files even out the end. Ties in path order: a run's order is
    // reproducible.
    plan.jobs.sort_by(|a, b| {
        a.version
            .cmp(&b.version)
            .then(b.size.cmp(&a.size))
            .then_with(|| a.rel.cmp(&b.rel))
    });
    plan
}

fn walk_tree(
    root: &Root,
    version: usize,
    tree: &Tree,
    excludes: &Excludes,
    seen: &mut HashSet<(usize, PathBuf)>,
    plan: &mut Plan,
) {
    let host_root = root.path();
    let top = tree.dir.as_path();
    let mut it = walkdir::WalkDir::new(root.host_path(top))
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = it.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .and_then(|p| p.strip_prefix(host_root).ok())
                    .unwrap_or(top);
                let why = e
                    .io_error()
                    .map_or_else(|| e.to_string(), ToString::to_string);
                plan.errors.push((
                    version,
                    FileError::new(path, None, format!("cannot read: {why}")),
                ));
                continue;
            }
        };
        let Ok(rel) = entry.path().strip_prefix(host_root) else {
            continue;
        };
        let rel = rel.to_path_buf();
        if entry.depth() > 0 && excludes.matches(&rel) {
            if entry.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let ft = entry.file_type();
        if ft.is_dir() {
            if tree.skip.contains(&rel) {
                it.skip_current_dir();
                continue;
            }
            if entry.file_name() == "__pycache__" {
                plan.stale_temps_removed += clean_cache_dir(root, &rel);
                it.skip_current_dir();
            }
            if has_py_suffix(&rel) {
                plan.skipped.push(format!(
                    "{}: a directory named like a module; its contents are compiled",
                    display_in_root(&rel)
                ));
            }
            continue;
        }
        if !has_py_suffix(&rel) {
            continue;
        }
        if !(ft.is_file() || ft.is_symlink()) {
            plan.skipped.push(format!(
                "{}: not a regular file (FIFO, socket or device); skipped",
                display_in_root(&rel)
            ));
            continue;
        }
        if !seen.insert((version, rel.clone())) {
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        plan.jobs.push(Job {
            version,
            rel,
            size,
            symlink: ft.is_symlink(),
        });
    }
}

fn has_py_suffix(rel: &Path) -> bool {
    rel.file_name().is_some_and(|n| {
        let n = std::os::unix::ffi::OsStrExt::as_bytes(n);
        n.len() > 3 && n.ends_with(b".py")
    })
}

/// Remove temp files a killed run left in this `__pycache__`; returns how many.
fn clean_cache_dir(root: &Root, rel: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root.host_path(rel)) else {
        return 0;
    };
    let temps: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| is_temp_name(n))
        .collect();
    if temps.is_empty() {
        return 0;
    }
    let Ok(dir) = root.open_dir(rel) else {
        return 0;
    };
    let mut removed = 0;
    for name in temps {
        match remove_stale_temp(&dir, &name) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => log::warn!(
                "{}: cannot remove stale temp file: {e}",
                display_in_root(&rel.join(&name))
            ),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::PyVersion;

    #[test]
    fn excludes_by_path_and_name() {
        let ex = Excludes::new(&[
            "/usr/lib/python3.12/test/*".into(),
            "test_*.py".into(),
            "*/tests".into(),
        ])
        .unwrap();
        assert!(ex.matches(Path::new("usr/lib/python3.12/test/foo/bar.py")));
        assert!(ex.matches(Path::new("usr/lib/python3.12/json/test_x.py")));
        assert!(ex.matches(Path::new("usr/lib/python3.12/site-packages/a/tests")));
        assert!(!ex.matches(Path::new("usr/lib/python3.12/json/decoder.py")));
        assert!(Excludes::new(&["[".into()])
            .unwrap_err()
            .contains("bad --exclude"));
    }

    #[test]
    fn walks_sorts_and_skips() {
        let t = tempfile::tempdir().unwrap();
        let lib = t.path().join("usr/lib/python3.12");
        std::fs::create_dir_all(lib.join("pkg/__pycache__")).unwrap();
        std::fs::create_dir_all(lib.join("skipme")).unwrap();
        std::fs::create_dir_all(t.path().join("elsewhere")).unwrap();
        std::fs::write(lib.join("small.py"), "x=1\n").unwrap();
        std::fs::write(lib.join("pkg/big.py"), "x = 1\n".repeat(100)).unwrap();
        std::fs::write(lib.join("skipme/a.py"), "").unwrap();
        std::fs::write(lib.join("notes.txt"), "").unwrap();
        std::fs::write(lib.join("pkg/__pycache__/.pyclink-1-1.tmp"), "half").unwrap();
        std::fs::write(t.path().join("elsewhere/hidden.py"), "").unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), lib.join("linkdir")).unwrap();
        std::os::unix::fs::symlink("small.py", lib.join("alias.py")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            lib.join("fifo.py"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o644),
            0,
        )
        .unwrap();
        let root = Root::open(t.path()).unwrap();
        let tree = Tree::new(PyVersion::cpython(3, 12), "usr/lib/python3.12".into());
        let p = plan(
            &root,
            &[(0, &tree)],
            &Excludes::new(&["skipme".into()]).unwrap(),
        );
        let rels: Vec<_> = p
            .jobs
            .iter()
            .map(|j| (j.rel.display().to_string(), j.symlink))
            .collect();
        assert_eq!(
            rels,
            [
                ("usr/lib/python3.12/pkg/big.py".to_string(), false),
                // A symlink's size is its own (8 bytes here), not its target's.
                ("usr/lib/python3.12/alias.py".to_string(), true),
                ("usr/lib/python3.12/small.py".to_string(), false),
            ]
        );
        assert_eq!(p.stale_temps_removed, 1);
        assert!(p.skipped.iter().any(|s| s.contains("fifo.py")));
        assert!(!lib.join("pkg/__pycache__/.pyclink-1-1.tmp").exists());
    }
}
