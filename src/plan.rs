//! Step 2: walk each tree (never following directory symlinks) and list the sources to compile,
//! one version after another, each largest first so no core idles at the end. Planning changes
//! nothing on disk; it notes the `__pycache__` directories, where a killed run may have left temp
//! files for `write` to remove.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::discover::Tree;
use crate::fsroot::display_in_root;
// Re-exported for verify, which asks the plan what counts as a source.
use crate::problem::{FileError, Problem};
pub(crate) use crate::python::has_py_suffix;
use crate::python::PyVersion;
use crate::walk::{Kind, Walker};

/// One source to compile for one version.
#[derive(Clone, Debug)]
pub struct Job {
    pub version: PyVersion,
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
    pub errors: Vec<(PyVersion, FileError)>,
    /// `x.py` entries that are not files (FIFO, socket, device, directory): left alone.
    pub skipped: Vec<String>,
    /// Every `__pycache__` directory met (root-relative).
    pub pycache_dirs: Vec<PathBuf>,
    /// Sources in trees of versions pyclink does not compile (see [`plan`]).
    pub unsupported_sources: BTreeMap<PyVersion, u64>,
}

impl Plan {
    /// The versions that have sources, with how many.
    pub fn sources_per_version(&self) -> BTreeMap<PyVersion, u64> {
        let mut n = BTreeMap::new();
        for job in &self.jobs {
            *n.entry(job.version).or_insert(0) += 1;
        }
        n
    }
}

/// An `--exclude` pattern that is not a glob.
#[derive(Debug, thiserror::Error)]
// The pattern as typed (also in globset's message) may hold a newline: one message, one line.
#[error(
    "bad --exclude pattern '{}': {}",
    crate::escape::printable(pattern),
    crate::escape::printable(&source.to_string())
)]
pub struct BadExclude {
    pub pattern: String,
    #[source]
    pub source: globset::Error,
}

/// `--exclude` patterns. A pattern with a `/` is matched against the whole path as seen inside
/// the root (`/usr/lib/python3.12/test/*`); one without is matched against the file or directory
/// name (`test_*.py`). `*` matches across `/` like fnmatch; an excluded directory is not entered.
/// A pattern with a `/` that starts with neither `/` nor `*` is rooted at `/`, as a relative
/// PATH is (`usr/lib/python3.12/test/*`): as written it could match nothing.
#[derive(Debug)]
pub struct Excludes {
    paths: GlobSet,
    names: GlobSet,
    /// The patterns as given, in the order of `path_ix` then `name_ix`.
    patterns: Vec<String>,
    path_ix: Vec<usize>,
    name_ix: Vec<usize>,
    /// Which patterns excluded something, for "matched nothing".
    hits: Vec<std::sync::atomic::AtomicBool>,
}

/// A path pattern spelled as PATHs are: `%{buildroot}/usr/x`, `./usr/x`, `usr//x`, `usr/x/`
/// all mean `/usr/x` (the build root stripped as text: a pattern is no file to look up).
fn pattern_in_root(buildroot: Option<&Path>, p: &str) -> String {
    let mut p = p.to_string();
    if let Some(root) = buildroot {
        // Not a message: the root as text, to strip from a pattern typed with it.
        let given = root.display().to_string();
        let abs = std::path::absolute(root)
            // Not a message either.
            .map(|a| a.display().to_string())
            .unwrap_or_default();
        for prefix in [abs.as_str(), given.trim_start_matches("./")] {
            let prefix = prefix.trim_end_matches('/');
            let bare = p.trim_start_matches("./");
            if !prefix.is_empty() && bare.starts_with(&format!("{prefix}/")) {
                p = bare[prefix.len()..].to_string();
                break;
            }
        }
    }
    while p.contains("//") {
        p = p.replace("//", "/");
    }
    while let Some(rest) = p.strip_prefix("./") {
        p = rest.to_string();
    }
    p = p.replace("/./", "/");
    if p.len() > 1 && p.ends_with('/') {
        p.pop();
    }
    p
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, BadExclude> {
        Excludes::in_root(patterns, None)
    }

    pub fn in_root(patterns: &[String], buildroot: Option<&Path>) -> Result<Excludes, BadExclude> {
        let mut paths = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        let (mut path_ix, mut name_ix) = (Vec::new(), Vec::new());
        for (i, given) in patterns.iter().enumerate() {
            let normal = if given.contains('/') {
                pattern_in_root(buildroot, given)
            } else {
                given.clone()
            };
            let p = &normal;
            let rooted;
            let glob = if p.contains('/') && !p.starts_with(['/', '*']) {
                rooted = format!("/{p}");
                &rooted
            } else {
                p
            };
            let glob = GlobBuilder::new(glob)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|source| BadExclude {
                    pattern: given.clone(),
                    source,
                })?;
            if p.contains('/') {
                paths.add(glob);
                path_ix.push(i);
            } else {
                names.add(glob);
                name_ix.push(i);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|source| BadExclude {
                pattern: patterns.join(" "),
                source,
            })
        };
        Ok(Excludes {
            paths: build(paths)?,
            names: build(names)?,
            patterns: patterns.to_vec(),
            path_ix,
            name_ix,
            hits: patterns.iter().map(|_| Default::default()).collect(),
        })
    }

    pub fn matches(&self, rel: &Path) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut hit = false;
        if let Some(n) = rel.file_name() {
            for i in self.names.matches(n) {
                self.hits[self.name_ix[i]].store(true, Relaxed);
                hit = true;
            }
        }
        for i in self.paths.matches(display_in_root(rel)) {
            self.hits[self.path_ix[i]].store(true, Relaxed);
            hit = true;
        }
        hit
    }

    /// The patterns that excluded nothing so far.
    pub fn unused(&self) -> Vec<&str> {
        self.patterns
            .iter()
            .zip(&self.hits)
            .filter(|(_, h)| !h.load(std::sync::atomic::Ordering::Relaxed))
            .map(|(p, _)| p.as_str())
            .collect()
    }

    /// A pattern that excluded nothing is most likely misspelt: say so, once per pattern.
    pub fn warn_unused(&self) {
        for p in self.unused() {
            log::warn!("-x {p} matched nothing");
        }
    }
}

/// List the jobs of `trees`. The sources of `unsupported` trees (versions pyclink does not
/// compile) are counted, not planned: each such tree that holds any is an error, since its
/// package would ship those sources without pycs.
pub fn plan(walker: Walker, trees: &[Tree], unsupported: &[Tree], excludes: &Excludes) -> Plan {
    let mut plan = Plan::default();
    let mut seen: HashSet<(PyVersion, PathBuf)> = HashSet::new();
    for tree in trees {
        walk_tree(walker, tree, excludes, &mut seen, &mut plan);
    }
    for tree in unsupported {
        let mut its = Plan::default();
        walk_tree(walker, tree, excludes, &mut seen, &mut its);
        let sources = its.jobs.len() as u64;
        if sources == 0 {
            log::info!(
                "{}: no {} sources; nothing to compile",
                display_in_root(&tree.dir),
                tree.version
            );
            continue;
        }
        *plan.unsupported_sources.entry(tree.version).or_default() += sources;
        plan.errors.push((
            tree.version,
            FileError::new(
                &tree.dir,
                None,
                Problem::Unsupported {
                    sources,
                    why: tree.version.unsupported_reason(),
                    exclude: format!("{}/*", display_in_root(&tree.dir)),
                },
            ),
        ));
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
    // For the reproducibility tests: the same sources in the opposite order within each
    // version, so each worker sees another history. The bytes must not change.
    if std::env::var_os("PYCLINK_TEST_REVERSE_ORDER").is_some() {
        for run in plan.jobs.chunk_by_mut(|a, b| a.version == b.version) {
            run.reverse();
        }
    }
    plan
}

fn walk_tree(
    walker: Walker,
    tree: &Tree,
    excludes: &Excludes,
    seen: &mut HashSet<(PyVersion, PathBuf)>,
    plan: &mut Plan,
) {
    let version = tree.version;
    let mut it = walker.walk(&tree.dir);
    while let Some(met) = it.next() {
        let met = match met {
            Ok(met) => met,
            Err(e) => {
                let source = std::io::Error::other(e.reason);
                plan.errors.push((
                    version,
                    FileError::new(
                        &e.rel,
                        None,
                        Problem::Io {
                            what: "cannot read",
                            source,
                        },
                    ),
                ));
                continue;
            }
        };
        let rel = &met.rel;
        if !met.is_top && excludes.matches(rel) {
            if met.kind == Kind::Dir {
                it.skip_current_dir();
            }
            continue;
        }
        if met.kind == Kind::Dir {
            if tree.skip.contains(rel) {
                it.skip_current_dir();
                continue;
            }
            if met.is_named("__pycache__") {
                plan.pycache_dirs.push(rel.clone());
                it.skip_current_dir();
            }
            if has_py_suffix(rel) {
                plan.skipped.push(format!(
                    "{}: a directory named like a module; its contents are compiled",
                    display_in_root(rel)
                ));
            }
            continue;
        }
        if !has_py_suffix(rel) {
            continue;
        }
        if !matches!(met.kind, Kind::File | Kind::Symlink) {
            plan.skipped.push(format!(
                "{}: not a regular file (FIFO, socket or device); skipped",
                display_in_root(rel)
            ));
            continue;
        }
        if !seen.insert((version, rel.clone())) {
            continue;
        }
        plan.jobs.push(Job {
            version,
            size: met.size(),
            symlink: met.kind == Kind::Symlink,
            rel: met.rel,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsroot::Root;
    use crate::python::PyVersion;

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
        // Relative, like a PATH: rooted at /; a leading * keeps matching anywhere.
        let ex = Excludes::new(&["usr/lib/python3.12/site-packages/urllib3/*".into()]).unwrap();
        assert!(ex.matches(Path::new(
            "usr/lib/python3.12/site-packages/urllib3/util/a.py"
        )));
        assert!(!ex.matches(Path::new("usr/lib/python3.12/site-packages/idna/a.py")));
        let ex = Excludes::new(&["*/tests/*".into()]).unwrap();
        assert!(ex.matches(Path::new("usr/share/app/tests/t.py")));
        // Spelled as PATHs are: the build root, ./, //, a trailing /.
        for p in [
            "/tmp/br/usr/lib/x/*",
            "./usr/lib/x/*",
            "usr//lib/x/*",
            "usr/lib/x/",
        ] {
            let ex = Excludes::in_root(&[p.into()], Some(Path::new("/tmp/br"))).unwrap();
            assert!(ex.unused() == [p]);
            assert!(
                ex.matches(Path::new("usr/lib/x/a.py")) || ex.matches(Path::new("usr/lib/x")),
                "{p}"
            );
            assert!(ex.unused().is_empty(), "{p}");
        }
        assert!(Excludes::new(&["[".into()])
            .unwrap_err()
            .to_string()
            .contains("bad --exclude pattern '['"));
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
            Walker::Disk(&root),
            std::slice::from_ref(&tree),
            &[],
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
        assert_eq!(
            p.pycache_dirs,
            vec![PathBuf::from("usr/lib/python3.12/pkg/__pycache__")]
        );
        assert!(p.skipped.iter().any(|s| s.contains("fifo.py")));
        assert!(
            lib.join("pkg/__pycache__/.pyclink-1-1.tmp").exists(),
            "planning changes nothing"
        );
    }
}
