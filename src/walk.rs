//! The walk every step shares: no symlink followed (the top included), each directory's
//! entries in name order. It reads the disk ([`Walker::Disk`]) or a walk already made
//! ([`Walker::Recorded`]): `pyclink verify` walks the whole root for pycs anyway, records what
//! it met, and finds the trees and plans their sources from that record, so each directory is
//! read once. A top the record does not hold (outside the recorded tops, or under a directory
//! the recording walk left out) is read from the disk, so both give the same entries.

use std::path::{Path, PathBuf};

use crate::fsroot::Root;

/// What kind of entry; a symlink is never followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// FIFO, socket or device.
    Other,
}

impl Kind {
    pub fn of(ft: std::fs::FileType) -> Kind {
        if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        }
    }
}

#[derive(Clone, Debug)]
struct RecordedEntry {
    rel: PathBuf,
    kind: Kind,
    /// `lstat`'s size, read for the `.py` entries only: the plan schedules by it.
    size: Option<u64>,
}

/// The entries a walk met, in the order it met them (each directory before its contents).
#[derive(Debug, Default)]
pub struct Record {
    entries: Vec<RecordedEntry>,
}

impl Record {
    /// Note one entry of a walk (root-relative). A directory the walk chose not to enter must
    /// be left out (so that a walk of it reads the disk); one it could not read is noted
    /// without contents, and its error is the recording walk's to report: a replay yields none.
    pub fn push(&mut self, rel: &Path, entry: &walkdir::DirEntry) {
        let kind = Kind::of(entry.file_type());
        let size = (matches!(kind, Kind::File | Kind::Symlink)
            && crate::python::has_py_suffix(rel))
        .then(|| entry.metadata().map(|m| m.len()).unwrap_or(0));
        self.entries.push(RecordedEntry {
            rel: rel.to_path_buf(),
            kind,
            size,
        });
    }
}

/// Where walks read from.
#[derive(Clone, Copy)]
pub enum Walker<'a> {
    Disk(&'a Root),
    Recorded(&'a Root, &'a Record),
}

impl<'a> Walker<'a> {
    pub fn root(&self) -> &'a Root {
        match self {
            Walker::Disk(root) | Walker::Recorded(root, _) => root,
        }
    }

    /// Walk `top` (root-relative), `top` itself first.
    pub fn walk(&self, top: &Path) -> Walk<'a> {
        let top = top.to_path_buf();
        if let Walker::Recorded(_, record) = self {
            if let Some(start) = record.entries.iter().position(|e| e.rel == top) {
                return Walk {
                    inner: Inner::Recorded {
                        entries: &record.entries[start..],
                        next: 0,
                        last_dir: None,
                    },
                    top,
                };
            }
        }
        let root = self.root();
        Walk {
            inner: Inner::Disk {
                root,
                it: root.walk(&top),
            },
            top,
        }
    }
}

pub struct Walk<'a> {
    inner: Inner<'a>,
    top: PathBuf,
}

enum Inner<'a> {
    Disk {
        root: &'a Root,
        it: walkdir::IntoIter,
    },
    Recorded {
        entries: &'a [RecordedEntry],
        next: usize,
        /// The directory last met, whose contents `skip_current_dir` skips.
        last_dir: Option<usize>,
    },
}

/// One entry of a walk.
pub struct Met<'a> {
    pub rel: PathBuf,
    pub kind: Kind,
    /// The walk's top itself.
    pub is_top: bool,
    from: From<'a>,
}

enum From<'a> {
    Disk(walkdir::DirEntry),
    Recorded(&'a RecordedEntry),
}

impl Met<'_> {
    /// `lstat`'s size (of the link itself for a symlink).
    pub fn size(&self) -> u64 {
        match &self.from {
            From::Disk(entry) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            From::Recorded(entry) => entry.size.unwrap_or(0),
        }
    }

    pub fn is_named(&self, name: &str) -> bool {
        self.rel.file_name().is_some_and(|n| n == name)
    }
}

/// A directory a walk could not read, root-relative, with the reason as the OS gives it.
pub struct Unreadable {
    pub rel: PathBuf,
    pub reason: String,
}

impl<'a> Walk<'a> {
    /// Do not enter the directory just met.
    pub fn skip_current_dir(&mut self) {
        match &mut self.inner {
            Inner::Disk { it, .. } => it.skip_current_dir(),
            Inner::Recorded {
                entries,
                next,
                last_dir,
            } => {
                if let Some(dir) = last_dir.take() {
                    let dir = &entries[dir].rel;
                    while entries.get(*next).is_some_and(|e| e.rel.starts_with(dir)) {
                        *next += 1;
                    }
                }
            }
        }
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = Result<Met<'a>, Unreadable>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Disk { root, it } => {
                let entry = loop {
                    match it.next()? {
                        Ok(entry) if entry.path().starts_with(root.path()) => break entry,
                        // Every walk starts inside the root; skipped as the steps always did.
                        Ok(_) => continue,
                        Err(e) => {
                            return Some(Err(Unreadable {
                                rel: root.walk_error_path(&e, &self.top).to_path_buf(),
                                reason: Root::walk_error_reason(&e),
                            }))
                        }
                    }
                };
                let rel = entry.path().strip_prefix(root.path()).ok()?.to_path_buf();
                Some(Ok(Met {
                    kind: Kind::of(entry.file_type()),
                    is_top: entry.depth() == 0,
                    rel,
                    from: From::Disk(entry),
                }))
            }
            Inner::Recorded {
                entries,
                next,
                last_dir,
            } => {
                let entries: &'a [RecordedEntry] = entries;
                let entry = entries.get(*next)?;
                let is_top = *next == 0;
                if !is_top && !entry.rel.starts_with(&self.top) {
                    return None;
                }
                *last_dir = (entry.kind == Kind::Dir).then_some(*next);
                *next += 1;
                Some(Ok(Met {
                    rel: entry.rel.clone(),
                    kind: entry.kind,
                    is_top,
                    from: From::Recorded(entry),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry a walk of `top` yields, with `skip` entered into nowhere.
    fn entries(walker: Walker, top: &str, skip: &str) -> Vec<(String, Kind, bool, u64)> {
        let mut out = Vec::new();
        let mut walk = walker.walk(Path::new(top));
        while let Some(met) = walk.next() {
            let met = met.ok().expect("readable");
            if met.kind == Kind::Dir && met.is_named(skip) {
                walk.skip_current_dir();
            }
            let size = if crate::python::has_py_suffix(&met.rel) {
                met.size()
            } else {
                0
            };
            out.push((met.rel.display().to_string(), met.kind, met.is_top, size));
        }
        out
    }

    /// A record of the whole root gives each top what the disk gives, skipping included; a top
    /// it lacks is read from the disk.
    #[test]
    fn a_record_walks_as_the_disk() {
        let tmp = tempfile::tempdir().unwrap();
        for dir in ["a/b/__pycache__", "a/c", "d", "left/out"] {
            std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
        }
        for file in [
            "a/b/x.py",
            "a/b/__pycache__/x.pyc",
            "a/c/y.py",
            "a/z.txt",
            "d/w.py",
        ] {
            std::fs::write(tmp.path().join(file), file).unwrap();
        }
        std::os::unix::fs::symlink("x.py", tmp.path().join("a/b/l.py")).unwrap();
        std::fs::write(tmp.path().join("left/out/v.py"), "v").unwrap();
        let root = Root::open(tmp.path()).unwrap();
        let mut record = Record::default();
        let mut it = root.walk(Path::new(""));
        while let Some(Ok(entry)) = it.next() {
            let rel = entry
                .path()
                .strip_prefix(root.path())
                .unwrap()
                .to_path_buf();
            if rel == Path::new("left") {
                it.skip_current_dir();
                continue;
            }
            record.push(&rel, &entry);
        }
        for top in ["a", "a/b", "a/b/x.py", "a/b/l.py", "d", "left", "left/out"] {
            for skip in ["__pycache__", "c", "a", "none"] {
                let disk = entries(Walker::Disk(&root), top, skip);
                let recorded = entries(Walker::Recorded(&root, &record), top, skip);
                assert_eq!(disk, recorded, "top {top:?}, skipping {skip:?}");
                assert!(!disk.is_empty());
            }
        }
        // The record was read: the whole root's walk is the record's, without `left`.
        let recorded = entries(Walker::Recorded(&root, &record), "", "none");
        let disk = entries(Walker::Disk(&root), "", "none");
        assert!(recorded.iter().all(|e| !e.0.starts_with("left")));
        assert_eq!(recorded.len() + 3, disk.len());
    }
}
