//! Sources outside every tree: what a run over the whole root leaves without pycs (an
//! application in `/opt/app`, pip's `--root` layout under `/root/.pyenv/versions/X/lib/pythonX.Y`),
//! counted and placed so that the run says so and how to compile them. Like Fedora's
//! brp-python-bytecompile, pyclink does not compile them on its own (which interpreter, and
//! whether the files are even modules, is the packager's call), and the exit status stays 0.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::escape::shown_in_root;
use crate::fsroot::{display_in_root, Root};
use crate::python::PyVersion;

/// The walk looks at no more entries than this (the root's files and directories outside the
/// trees): the scan runs on every build root, and a root this big gets "at least N".
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Directories kept with their counts; the sources of any further one are counted only.
pub const MAX_PLACES: usize = 1000;
/// Directories named in the warning (the JSON has all that were kept).
const SHOWN_PLACES: usize = 3;

/// The `.py` files of the root outside the trees of a run (the JSON's `outside_trees`).
#[derive(Debug, Default, Serialize)]
pub struct Outside {
    /// `.py` files (regular files and symlinks, as the trees' walk takes them).
    pub sources: u64,
    /// Those without any pyc in their `__pycache__` (the others were compiled on purpose,
    /// by `%py_byte_compile` in `%install` for one).
    pub without_pycs: u64,
    /// The directories holding those, in path order: each the topmost directory with such a
    /// `.py` file directly in it, or a `lib/pythonX.Y` outside the standard prefixes (a
    /// virtualenv, pip's `--root` layout), with the sources below it.
    pub places: Vec<Place>,
    /// Sources in directories past the first [`MAX_PLACES`], counted but not placed.
    pub unplaced: u64,
    /// Every entry of the root was looked at; false: the walk stopped at [`MAX_ENTRIES`], and
    /// `sources` is a lower bound.
    pub complete: bool,
}

#[derive(Debug, Serialize)]
pub struct Place {
    /// As installed (`/opt/app`).
    pub dir: String,
    pub sources: u64,
    #[serde(skip)]
    rel: PathBuf,
    /// The version of a `lib/pythonX.Y` place.
    #[serde(skip)]
    version: Option<PyVersion>,
}

/// Walk the root outside `trees` (root-relative directories, not entered), without following
/// symlinks and skipping `__pycache__`, counting `.py` files.
pub fn scan(root: &Root, trees: &[&Path]) -> Outside {
    let skip: HashSet<&Path> = trees.iter().copied().collect();
    // The module names with a pyc in the `__pycache__` of the directory last met.
    let mut compiled: Option<(PathBuf, HashSet<Vec<u8>>)> = None;
    let mut out = Outside {
        complete: true,
        ..Outside::default()
    };
    let mut seen = 0u64;
    let mut it = root.walk(Path::new(""));
    while let Some(entry) = it.next() {
        // An unreadable directory holds nothing this scan can tell about.
        let Ok(entry) = entry else { continue };
        seen += 1;
        if seen > MAX_ENTRIES {
            out.complete = false;
            break;
        }
        let Ok(rel) = entry.path().strip_prefix(root.path()) else {
            continue;
        };
        let kind = entry.file_type();
        if kind.is_dir() {
            if entry.file_name() == "__pycache__" || skip.contains(rel) {
                it.skip_current_dir();
            }
            continue;
        }
        if !(kind.is_file() || kind.is_symlink()) || !crate::python::has_py_suffix(rel) {
            continue;
        }
        out.sources += 1;
        let dir = rel.parent().unwrap_or(Path::new(""));
        if !matches!(&compiled, Some((d, _)) if d == dir) {
            compiled = Some((dir.to_path_buf(), modules_with_pycs(root, dir)));
        }
        let name = rel.file_name().map_or(&[][..], |n| n.as_bytes());
        let module = &name[..name.len() - 3];
        if !compiled.as_ref().is_some_and(|(_, m)| m.contains(module)) {
            out.add(rel);
        }
    }
    out
}

impl Outside {
    /// Count the source `rel`. The walk is depth-first, so the places below a directory are
    /// the last ones kept when a source directly in it comes: they are folded into it.
    fn add(&mut self, rel: &Path) {
        self.without_pycs += 1;
        let (dir, version) = place_of(rel);
        if let Some(last) = self.places.last_mut() {
            if dir.starts_with(&last.rel) {
                last.sources += 1;
                return;
            }
        }
        let mut place = Place {
            dir: display_in_root(&dir),
            sources: 1,
            rel: dir,
            version,
        };
        let mut folded = false;
        while self
            .places
            .last()
            .is_some_and(|p| p.rel.starts_with(&place.rel))
        {
            let last = self.places.pop().expect("a last place");
            place.sources += last.sources;
            if last.version != place.version {
                place.version = None;
            }
            folded = true;
        }
        if !folded && self.places.len() >= MAX_PLACES {
            self.unplaced += place.sources;
            return;
        }
        self.places.push(place);
    }

    /// The warning for the build log, if there is any source outside the trees: how many,
    /// where, and how to have them compiled.
    pub fn warning(&self) -> Option<String> {
        let first = self.places.first()?;
        let files = crate::escape::plural(self.sources, ".py file");
        let at_least = if self.complete { "" } else { "at least " };
        let n = self.without_pycs;
        let count = if n == self.sources {
            format!("{at_least}{files}")
        } else {
            format!("{n} of {at_least}the {files}")
        };
        let verb = if n == 1 { "has" } else { "have" };
        let mut places: Vec<String> = self
            .places
            .iter()
            .take(SHOWN_PLACES)
            .map(|p| format!("{} ({})", shown_in_root(&p.rel), p.sources))
            .collect();
        let others =
            self.places.len().saturating_sub(SHOWN_PLACES) as u64 + u64::from(self.unplaced > 0);
        if others > 0 {
            let dirs = if others == 1 {
                "directory"
            } else {
                "directories"
            };
            places.push(format!("and {others} more {dirs}"));
        }
        let example = shown_in_root(&first.rel);
        let python = match first.version {
            Some(v) => format!("%{{_bindir}}/{}", v.command()),
            None => "%{python3}".to_string(),
        };
        let partial = if self.complete {
            String::new()
        } else {
            format!(" (counting stopped after {MAX_ENTRIES} entries of the root)")
        };
        Some(format!(
            "{count} outside every Python tree {verb} no pycs: {}; to compile them, give their \
             directories as PATHs (pyclink --buildroot ROOT {example}), or in an RPM spec \
             %py_byte_compile {python} %{{buildroot}}{example}, or list {} in \
             debian/PKG.pyclink{partial}",
            places.join(", "),
            &example[1..],
        ))
    }
}

/// The modules of `dir` (root-relative) with a pyc of any tag or level in its `__pycache__`
/// (`NAME.cpython-312.opt-1.pyc`: a module name holds no `.`).
fn modules_with_pycs(root: &Root, dir: &Path) -> HashSet<Vec<u8>> {
    let cache = root.host_path(&dir.join("__pycache__"));
    if !std::fs::symlink_metadata(&cache).is_ok_and(|m| m.is_dir()) {
        return HashSet::new();
    }
    let Ok(entries) = std::fs::read_dir(&cache) else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.as_bytes();
            let stem = name.split(|&b| b == b'.').next()?;
            (name.ends_with(b".pyc") && !stem.is_empty()).then(|| stem.to_vec())
        })
        .collect()
}

/// Where a source outside the trees is placed: the `lib/pythonX.Y` it is under, if any (a
/// tree of a prefix pyclink does not look in), else its directory.
fn place_of(rel: &Path) -> (PathBuf, Option<PyVersion>) {
    let dir = rel.parent().unwrap_or(Path::new(""));
    let parts: Vec<&std::ffi::OsStr> = dir.iter().collect();
    for (i, w) in parts.windows(2).enumerate() {
        if w[0] != "lib" && w[0] != "lib64" {
            continue;
        }
        if let Some(v) = w[1].to_str().and_then(PyVersion::from_dir_name) {
            return (parts[..i + 2].iter().collect(), Some(v));
        }
    }
    (dir.to_path_buf(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[&str]) -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        for f in files {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x = 1\n").unwrap();
        }
        let root = Root::open(t.path()).unwrap();
        (t, root)
    }

    fn places(o: &Outside) -> Vec<(String, u64)> {
        o.places
            .iter()
            .map(|p| (p.dir.clone(), p.sources))
            .collect()
    }

    #[test]
    fn counts_and_places_sources_outside_the_trees() {
        let (t, root) = root_with(&[
            "usr/lib/python3.12/site-packages/in_tree.py",
            "opt/app/a_sub/deep.py",
            "opt/app/main.py",
            "opt/app/__pycache__/cached.py",
            "opt/app/README",
            "root/.pyenv/versions/3.12.1/lib/python3.12/site-packages/pkg/__init__.py",
            "root/.pyenv/versions/3.12.1/lib/python3.12/site-packages/pkg/mod.py",
            "root/.pyenv/versions/3.12.1/lib/python3.12/site-packages/six.py",
            "srv/one/x.py",
            "srv/two/y.py",
            "top.pyx",
        ]);
        std::os::unix::fs::symlink("/opt/app/main.py", t.path().join("srv/link.py")).unwrap();
        std::os::unix::fs::symlink("/nowhere", t.path().join("srv/one/dangling.py")).unwrap();
        let o = scan(&root, &[Path::new("usr/lib/python3.12")]);
        assert!(o.complete);
        assert_eq!(o.sources, 9);
        assert_eq!(
            places(&o),
            [
                ("/opt/app".to_string(), 2),
                ("/root/.pyenv/versions/3.12.1/lib/python3.12".to_string(), 3),
                ("/srv".to_string(), 4),
            ]
        );
        assert_eq!(o.places[1].version, Some(PyVersion::cpython(3, 12)));
        let w = o.warning().unwrap();
        assert!(
            w.starts_with(
                "9 .py files outside every Python tree have no pycs: /opt/app (2), \
                 /root/.pyenv/versions/3.12.1/lib/python3.12 (3), /srv (4); to compile them"
            ),
            "{w}"
        );
        assert!(
            w.contains("%py_byte_compile %{python3} %{buildroot}/opt/app")
                && w.contains("pyclink --buildroot ROOT /opt/app")
                && w.contains("list opt/app in debian/PKG.pyclink"),
            "{w}"
        );
    }

    /// A source compiled on purpose (`%py_byte_compile` in `%install`) is seen, not warned
    /// about: its `__pycache__` holds a pyc of it, whatever the tag or level.
    #[test]
    fn sources_with_pycs_are_counted_but_not_warned_about() {
        let (t, root) = root_with(&[
            "opt/app/done.py",
            "opt/app/Upper.py",
            "opt/app/todo.py",
            "opt/app/__pycache__/done.cpython-312.opt-1.pyc",
            "opt/app/__pycache__/Upper.pypy311.pyc",
            "opt/app/__pycache__/todo.cpython-312.pyc.tmp",
            "opt/other/x.py",
        ]);
        std::os::unix::fs::symlink(
            t.path().join("opt/app/__pycache__"),
            t.path().join("opt/other/__pycache__"),
        )
        .unwrap();
        std::fs::write(t.path().join("opt/app/__pycache__/x.cpython-312.pyc"), "").unwrap();
        let o = scan(&root, &[]);
        assert_eq!((o.sources, o.without_pycs), (4, 2));
        assert_eq!(
            places(&o),
            [("/opt/app".to_string(), 1), ("/opt/other".to_string(), 1)]
        );
        let w = o.warning().unwrap();
        assert!(
            w.starts_with("2 of the 4 .py files outside every Python tree have no pycs: "),
            "{w}"
        );
        std::fs::write(
            t.path().join("opt/app/__pycache__/todo.cpython-312.pyc"),
            "",
        )
        .unwrap();
        std::fs::remove_file(t.path().join("opt/other/x.py")).unwrap();
        let o = scan(&root, &[]);
        assert_eq!((o.sources, o.without_pycs), (3, 0));
        assert!(o.warning().is_none());
    }

    #[test]
    fn nothing_outside_says_nothing() {
        let (_t, root) = root_with(&["usr/lib/python3.12/x.py", "usr/share/doc/README"]);
        let o = scan(&root, &[Path::new("usr/lib/python3.12")]);
        assert_eq!((o.sources, o.places.len()), (0, 0));
        assert!(o.warning().is_none());
    }

    #[test]
    fn a_lone_pip_tree_names_its_interpreter() {
        let (_t, root) =
            root_with(&["root/.pyenv/versions/3.13.0/lib/python3.13/site-packages/x.py"]);
        let w = scan(&root, &[]).warning().unwrap();
        assert!(
            w.starts_with("1 .py file outside every Python tree has no pycs: "),
            "{w}"
        );
        assert!(
            w.contains(
                "%py_byte_compile %{_bindir}/python3.13 %{buildroot}/root/.pyenv/versions/3.13.0/lib/python3.13"
            ),
            "{w}"
        );
    }

    #[test]
    fn places_are_bounded_and_the_rest_still_counted() {
        let files: Vec<String> = (0..MAX_PLACES + 5)
            .map(|i| format!("d{i:05}/x.py"))
            .collect();
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let (_t, root) = root_with(&refs);
        let o = scan(&root, &[]);
        assert_eq!(o.sources, MAX_PLACES as u64 + 5);
        assert_eq!(o.places.len(), MAX_PLACES);
        assert_eq!(o.unplaced, 5);
        let w = o.warning().unwrap();
        assert!(
            w.contains(&format!("and {} more directories", MAX_PLACES - 3 + 1)),
            "{w}"
        );
    }
}
