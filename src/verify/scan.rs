//! Finding the pycs: walk the root (never following a symlink), sort every pyc into the module
//! it belongs to (`DIR/NAME.py` with `DIR/__pycache__/NAME.TAG[.opt-L].pyc`), and report on the
//! way what can be judged from names alone: strays, temp files, sourceless pycs.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::fsroot::{display_in_root, Root};
use crate::plan::Excludes;
use crate::python::pyc::{cache_name, PYCACHE};
use crate::python::{table, PyVersion};
use crate::walk::Record;
use crate::write::is_temp_name;

use super::reader::Reader;
use super::report::{Kind, Problem};

/// A module: a source and the pycs of one cache tag beside it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModuleKey {
    /// Root-relative directory of the source.
    pub dir: PathBuf,
    /// The source's name without `.py`.
    pub stem: OsString,
    pub tag: String,
}

impl ModuleKey {
    /// The version whose interpreter checks the module: the one that imports from its tree
    /// where the path tells (a free-threaded tree's pycs carry its GIL build's tag), else the
    /// one its cache tag names.
    pub fn version(&self) -> Option<PyVersion> {
        let tagged = PyVersion::from_cache_tag(&self.tag)?;
        let reader = Reader::of(&self.dir);
        Some(match reader.version() {
            Some(v) if reader.accepts(tagged) => v,
            _ => tagged,
        })
    }

    pub fn source(&self) -> PathBuf {
        let mut name = self.stem.clone();
        name.push(".py");
        self.dir.join(name)
    }

    /// The pyc name of `level`.
    pub fn pyc_name(&self, level: u8) -> OsString {
        cache_name(self.stem.as_bytes(), &self.tag, level)
    }

    /// Root-relative path of the pyc of `level`.
    pub fn pyc_path(&self, level: u8) -> PathBuf {
        self.dir.join(PYCACHE).join(self.pyc_name(level))
    }
}

/// What the walk knows of a module.
#[derive(Clone, Debug, Default)]
pub struct Module {
    /// The levels that have a pyc (a regular file).
    pub present: [bool; 3],
    /// The source is a symlink (read through, resolved inside the root).
    pub symlink: bool,
    /// The source's size, for scheduling (0 for a symlink).
    pub size: u64,
}

/// A pyc outside `__pycache__` with no source, checked as a sourceless module.
#[derive(Clone, Debug)]
pub struct SourcelessPyc {
    pub rel: PathBuf,
    pub magic: [u8; 4],
    /// The version whose interpreter checks it: its tree's where the path tells, else its
    /// magic number's.
    pub version: Option<PyVersion>,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub modules: BTreeMap<ModuleKey, Module>,
    pub sourceless: Vec<SourcelessPyc>,
    pub problems: Vec<Problem>,
    /// Files left alone, with why.
    pub not_checked: Vec<String>,
    /// pyc files met (Python 2 ones excepted).
    pub pycs: u64,
    /// Every entry the walk met and entered, so finding the trees and planning their sources
    /// reads no directory again.
    pub record: Record,
}

/// How a file in `__pycache__` is named.
#[derive(Debug, PartialEq, Eq)]
enum CacheName<'a> {
    Pyc {
        stem: &'a [u8],
        tag: &'a str,
        level: u8,
    },
    /// `NAME.pyc.<digits>`: importlib's and py_compile's atomic write, interrupted.
    ImportlibTemp,
    /// Why it is no pyc name.
    Other(&'static str),
}

fn parse_cache_name(name: &[u8]) -> CacheName<'_> {
    if let Some((_, digits)) = name.rsplit_once_bytes(b".pyc.") {
        if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
            return CacheName::ImportlibTemp;
        }
    }
    let Some(rest) = name.strip_suffix(b".pyc") else {
        return CacheName::Other("not a pyc: only NAME.TAG.pyc and NAME.TAG.opt-N.pyc of a NAME.py beside __pycache__ belong here");
    };
    let (rest, level) = match rest.rsplit_once_bytes(b".opt-") {
        Some((r, b"1")) => (r, 1),
        Some((r, b"2")) => (r, 2),
        Some(_) => return CacheName::Other(
            "a pyc name with an optimization level CPython never writes (opt-1 and opt-2 exist)",
        ),
        None => (rest, 0),
    };
    match rest.rsplit_once_bytes(b".") {
        Some((stem, tag)) if !stem.is_empty() && !tag.is_empty() => {
            match std::str::from_utf8(tag) {
                Ok(tag) => CacheName::Pyc { stem, tag, level },
                Err(_) => CacheName::Other("a pyc name whose cache tag is not text"),
            }
        }
        _ => {
            CacheName::Other("a pyc name without a cache tag (NAME.TAG.pyc): import never reads it")
        }
    }
}

/// Whether `name` (in `__pycache__`) is a pyc of the module `stem`, of any cache tag or level.
pub(crate) fn is_cache_pyc_of(name: &[u8], stem: &[u8]) -> bool {
    cache_pyc_stem(name) == Some(stem)
}

/// The module of a pyc name in `__pycache__` (`NAME.TAG[.opt-N].pyc`).
pub(crate) fn cache_pyc_stem(name: &[u8]) -> Option<&[u8]> {
    match parse_cache_name(name) {
        CacheName::Pyc { stem, .. } => Some(stem),
        _ => None,
    }
}

trait SplitBytes {
    fn rsplit_once_bytes(&self, sep: &[u8]) -> Option<(&[u8], &[u8])>;
}

impl SplitBytes for [u8] {
    fn rsplit_once_bytes(&self, sep: &[u8]) -> Option<(&[u8], &[u8])> {
        let at = memchr::memmem::rfind(self, sep)?;
        Some((&self[..at], &self[at + sep.len()..]))
    }
}

/// What `NAME.py` beside a pyc is.
enum Source {
    None,
    /// A `.py` that is not a file (a directory, a FIFO): no module.
    NotAFile,
    File(u64),
    Symlink,
}

fn source_at(root: &Root, rel: &Path) -> Source {
    match std::fs::symlink_metadata(root.host_path(rel)) {
        Err(_) => Source::None,
        Ok(m) if m.file_type().is_symlink() => Source::Symlink,
        Ok(m) if m.is_file() => Source::File(m.len()),
        Ok(_) => Source::NotAFile,
    }
}

fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "a symlink"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "a device"
    }
}

/// Walk `tops` (root-relative; the whole root when empty) and sort what is found.
pub fn scan(root: &Root, tops: &[PathBuf], excludes: &Excludes) -> Scan {
    let mut scan = Scan::default();
    let whole = [PathBuf::new()];
    let tops = if tops.is_empty() { &whole[..] } else { tops };
    for top in tops {
        let mut it = root.walk(top);
        while let Some(entry) = it.next() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let rel = root.walk_error_path(&e, top);
                    scan.problems.push(Problem::new(
                        Kind::Unreadable,
                        display_in_root(rel),
                        format!("cannot read: {}", Root::walk_error_reason(&e)),
                    ));
                    continue;
                }
            };
            let Ok(rel) = entry.path().strip_prefix(root.path()) else {
                continue;
            };
            let rel = rel.to_path_buf();
            let ft = entry.file_type();
            let in_pycache = rel
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == PYCACHE);
            if ft.is_dir() && entry.depth() > 0 {
                if in_pycache {
                    scan.stray(&rel, "a directory in __pycache__".into());
                    it.skip_current_dir();
                } else if excludes.matches(&rel) {
                    it.skip_current_dir();
                } else {
                    scan.record.push(&rel, &entry);
                }
                continue;
            }
            scan.record.push(&rel, &entry);
            scan.entry(root, &rel, entry.file_name(), ft, excludes);
        }
        if std::fs::symlink_metadata(root.host_path(top)).is_ok_and(|m| !m.is_dir()) {
            // A source named as a PATH is compiled whatever -x says, so its pycs are checked
            // whatever -x says too.
            let none = Excludes::new(&[]).expect("no pattern is always valid");
            scan.pycs_of_source(root, top, &none);
        }
    }
    scan
}

impl Scan {
    /// Sort one non-directory entry of the walk.
    fn entry(
        &mut self,
        root: &Root,
        rel: &Path,
        name: &OsStr,
        ft: std::fs::FileType,
        excludes: &Excludes,
    ) {
        let in_pycache = rel
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == PYCACHE);
        if is_temp_name(name) {
            // Compiling cleans up only `__pycache__`; elsewhere (a legacy pyc rewritten by
            // `normalize`) the file stays until someone deletes it.
            let fate = if in_pycache {
                "the next pyclink run removes it"
            } else {
                "outside __pycache__ no pyclink run removes it; delete it"
            };
            self.problems.push(Problem::new(
                Kind::Partial,
                display_in_root(rel),
                format!("a temp file left by an interrupted pyclink run ({fate})"),
            ));
        } else if in_pycache {
            self.pycache_entry(root, rel, name, ft, excludes);
        } else if name == PYCACHE && !ft.is_dir() {
            self.stray(rel, format!("{}, not a directory", file_kind(ft)));
        } else if name.as_bytes().ends_with(b".pyc") {
            self.legacy_pyc(root, rel, ft, excludes);
        }
    }

    /// A PATH that names a source (`DIR/NAME.py`) stands for its module: the pycs of every
    /// cache tag in `DIR/__pycache__`, and a legacy `DIR/NAME.pyc`, which the walk of the file
    /// alone never meets.
    fn pycs_of_source(&mut self, root: &Root, source: &Path, excludes: &Excludes) {
        let (Some(dir), Some(stem)) = (source.parent(), source.file_stem()) else {
            return;
        };
        if !crate::python::has_py_suffix(source) {
            return;
        }
        let mut prefix = stem.as_bytes().to_vec();
        prefix.push(b'.');
        let legacy = source.with_extension("pyc");
        if let Ok(m) = std::fs::symlink_metadata(root.host_path(&legacy)) {
            let name = legacy.file_name().unwrap_or_default();
            self.entry(root, &legacy, name, m.file_type(), excludes);
        }
        let pycache = dir.join(PYCACHE);
        let Ok(m) = std::fs::symlink_metadata(root.host_path(&pycache)) else {
            return;
        };
        if !m.is_dir() {
            return self.entry(root, &pycache, OsStr::new(PYCACHE), m.file_type(), excludes);
        }
        let entries = match std::fs::read_dir(root.host_path(&pycache)) {
            Ok(entries) => entries,
            Err(e) => {
                return self.problems.push(Problem::new(
                    Kind::Unreadable,
                    display_in_root(&pycache),
                    format!("cannot read: {e}"),
                ))
            }
        };
        let mut mine: Vec<(OsString, std::fs::FileType)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().as_bytes().starts_with(&prefix))
            .filter_map(|e| Some((e.file_name(), e.file_type().ok()?)))
            .collect();
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in mine {
            // `a.b.TAG.pyc` starts with `a.`, but is module `a.b`'s.
            let ours = match parse_cache_name(name.as_bytes()) {
                CacheName::Pyc { stem: s, .. } => s == stem.as_bytes(),
                _ => true,
            };
            if ours {
                self.entry(root, &pycache.join(&name), &name, ft, excludes);
            }
        }
    }

    fn stray(&mut self, rel: &Path, why: String) {
        self.problems
            .push(Problem::new(Kind::Stray, display_in_root(rel), why));
    }

    fn pycache_entry(
        &mut self,
        root: &Root,
        rel: &Path,
        name: &OsStr,
        ft: std::fs::FileType,
        excludes: &Excludes,
    ) {
        let (stem, tag, level) = match parse_cache_name(name.as_bytes()) {
            CacheName::Pyc { stem, tag, level } => (stem, tag, level),
            CacheName::ImportlibTemp => {
                self.problems.push(Problem::new(
                    Kind::Partial,
                    display_in_root(rel),
                    "a temp file left by an interrupted importlib or py_compile write",
                ));
                return;
            }
            CacheName::Other(why) => return self.stray(rel, why.to_string()),
        };
        let pycache = rel.parent().unwrap_or(Path::new(""));
        let dir = pycache.parent().unwrap_or(Path::new("")).to_path_buf();
        let key = ModuleKey {
            dir,
            stem: OsStr::from_bytes(stem).to_os_string(),
            tag: tag.to_string(),
        };
        let source = key.source();
        if excludes.matches(&source) {
            return;
        }
        self.pycs += 1;
        let shown_source = crate::escape::shown(source.file_name().unwrap_or_default());
        let (symlink, size) = match source_at(root, &source) {
            Source::None => {
                return self.stray(
                    rel,
                    format!(
                        "no source {shown_source} beside __pycache__ (import never reads a \
                         __pycache__ pyc without its source)"
                    ),
                )
            }
            Source::NotAFile => {
                return self.stray(rel, format!("{shown_source} is not a file"));
            }
            Source::File(size) => (false, size),
            Source::Symlink => (true, 0),
        };
        if !ft.is_file() {
            return self.stray(rel, format!("{}, not a pyc file", file_kind(ft)));
        }
        let Some(version) = PyVersion::from_cache_tag(tag) else {
            self.problems.push(Problem::new(
                Kind::UnknownTag,
                display_in_root(rel),
                format!("cache tag '{tag}' names no Python version"),
            ));
            return;
        };
        let reader = Reader::of(pycache);
        if !reader.accepts(version) {
            self.problems.push(Problem::new(
                Kind::WrongVersion,
                display_in_root(rel),
                format!(
                    "cache tag '{tag}' is {version}'s, but {}: import never loads this pyc",
                    reader.describe()
                ),
            ));
            return;
        }
        let module = self.modules.entry(key).or_default();
        module.present[level as usize] = true;
        module.symlink = symlink;
        module.size = size;
    }

    /// A `*.pyc` outside `__pycache__`: Python 2's place, and the sourceless module's.
    fn legacy_pyc(&mut self, root: &Root, rel: &Path, ft: std::fs::FileType, excludes: &Excludes) {
        let source = rel.with_extension("py");
        if excludes.matches(&source) || excludes.matches(rel) {
            return;
        }
        if !ft.is_file() {
            self.pycs += 1;
            return self.stray(rel, format!("{}, not a pyc file", file_kind(ft)));
        }
        let magic = match read_magic(&root.host_path(rel)) {
            Ok(m) => m,
            Err(e) => {
                self.pycs += 1;
                self.problems.push(Problem::new(
                    Kind::Unreadable,
                    display_in_root(rel),
                    format!("cannot read: {e}"),
                ));
                return;
            }
        };
        let reader = Reader::of(rel.parent().unwrap_or(Path::new("")));
        if magic.is_some_and(table::is_python2_magic) && reader.reads_python2() {
            self.not_checked
                .push(format!("{}: a Python 2 pyc", display_in_root(rel)));
            return;
        }
        self.pycs += 1;
        let Some(magic) = magic else {
            self.problems.push(Problem::new(
                Kind::Partial,
                display_in_root(rel),
                "truncated: shorter than a magic number",
            ));
            return;
        };
        match source_at(root, &source) {
            Source::None | Source::NotAFile => match reader.refuses_magic(magic) {
                Some(why) => {
                    self.problems
                        .push(Problem::new(Kind::WrongVersion, display_in_root(rel), why))
                }
                None => self.sourceless.push(SourcelessPyc {
                    rel: rel.to_path_buf(),
                    magic,
                    // The tree's version where the path tells (refuses_magic has matched
                    // the magic number to it), else the magic number's.
                    version: reader
                        .version()
                        .or_else(|| table::by_magic(magic).map(|f| f.version)),
                }),
            },
            Source::File(_) | Source::Symlink => self.stray(
                rel,
                format!(
                    "beside its source {}: Python 3 imports the source (and its __pycache__), \
                     never this file",
                    crate::escape::shown(source.file_name().unwrap_or_default())
                ),
            ),
        }
    }
}

/// The first 4 bytes, or `None` if the file is shorter.
fn read_magic(path: &Path) -> std::io::Result<Option<[u8; 4]>> {
    let mut f = std::fs::File::options()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match f.read(&mut magic[got..])? {
            0 => return Ok(None),
            n => got += n,
        }
    }
    Ok(Some(magic))
}

fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::Implementation;

    #[test]
    fn cache_names() {
        assert_eq!(
            parse_cache_name(b"a.b.cpython-311.opt-2.pyc"),
            CacheName::Pyc {
                stem: b"a.b",
                tag: "cpython-311",
                level: 2
            }
        );
        assert_eq!(
            parse_cache_name(b"os.cpython-36.pyc"),
            CacheName::Pyc {
                stem: b"os",
                tag: "cpython-36",
                level: 0
            }
        );
        assert_eq!(
            parse_cache_name(b"os.cpython-311.pyc.140321"),
            CacheName::ImportlibTemp
        );
        for bad in [
            &b"os.pyc"[..],
            b".cpython-311.pyc",
            b"os.cpython-311.opt-3.pyc",
            b"README",
            b"os.cpython-311.pyc.bak",
        ] {
            assert!(
                matches!(parse_cache_name(bad), CacheName::Other(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_modules_version_is_its_readers() {
        let key = |dir: &str, tag: &str| ModuleKey {
            dir: dir.into(),
            stem: "m".into(),
            tag: tag.into(),
        };
        let v314 = PyVersion::cpython(3, 14);
        // A free-threaded tree's pycs carry the GIL build's tag; its own interpreter checks them.
        assert_eq!(
            key("usr/lib64/python3.14t", "cpython-314").version(),
            Some(v314.free_threaded())
        );
        assert_eq!(key("opt/app", "cpython-314").version(), Some(v314));
        // Another version's tag keeps its own (scan reports it as wrong-version).
        assert_eq!(
            key("usr/lib/python3.12", "cpython-311").version(),
            Some(PyVersion::cpython(3, 11))
        );
    }

    #[test]
    fn tags() {
        assert_eq!(
            PyVersion::from_cache_tag("cpython-311"),
            Some(PyVersion::cpython(3, 11))
        );
        assert_eq!(
            PyVersion::from_cache_tag("cpython-36"),
            Some(PyVersion::cpython(3, 6))
        );
        let pypy = PyVersion::from_cache_tag("pypy310").unwrap();
        assert_eq!(
            (pypy.implementation, pypy.minor),
            (Implementation::PyPy, 10)
        );
        assert_eq!(
            PyVersion::from_cache_tag("cpython-314t"),
            Some(PyVersion::cpython(3, 14).free_threaded())
        );
        for bad in [
            "cpython-3",
            "cpython-3x1",
            "pypy311t",
            "cpython-t",
            "jython-27",
            "cpython-",
            "cpython-301",
        ] {
            assert_eq!(PyVersion::from_cache_tag(bad), None, "{bad}");
        }
    }
}
