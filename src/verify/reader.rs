//! Which Python reads the pycs of a directory, as far as its path tells. A pyc that no reader of
//! its tree can load is wrong whatever its content: python3.12 looks for `cpython-312` in a
//! `__pycache__` of `usr/lib/python3.12` and refuses a sourceless pyc of any other magic number
//! ("bad magic number"), so checking such a pyc with the interpreter its own tag or magic
//! number names would accept what the package's Python cannot import.

use std::path::{Path, PathBuf};

use crate::discover::{DIST_PACKAGES, PYPY_DIST_PACKAGES};
use crate::escape::shown_in_root;
use crate::python::{table, Implementation, PyVersion};

/// Who imports from a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reader {
    /// Inside `lib/pythonX.Y`, `lib64/pythonX.Y` or `lib/pypyX.Y` (the innermost, at any
    /// depth: a virtualenv's or another prefix's too): only that version.
    Version { version: PyVersion, tree: PathBuf },
    /// Debian's dist-packages: every Python 3 of one implementation (PyPy has its own).
    Implementation {
        implementation: Implementation,
        tree: PathBuf,
    },
    /// A private directory: whichever Python its application runs.
    Any,
}

impl Reader {
    /// The reader of the pycs in `dir` (root-relative).
    pub fn of(dir: &Path) -> Reader {
        let parts: Vec<&std::ffi::OsStr> = dir.iter().collect();
        let innermost = (1..parts.len()).rev().find_map(|i| {
            let lib = parts[i - 1] == "lib" || parts[i - 1] == "lib64";
            let version = parts[i].to_str().and_then(PyVersion::from_dir_name)?;
            lib.then(|| (version, parts[..=i].iter().collect::<PathBuf>()))
        });
        if let Some((version, tree)) = innermost {
            return Reader::Version { version, tree };
        }
        for (dist, implementation) in [
            (DIST_PACKAGES, Implementation::CPython),
            (PYPY_DIST_PACKAGES, Implementation::PyPy),
        ] {
            if dir.starts_with(dist) {
                return Reader::Implementation {
                    implementation,
                    tree: PathBuf::from(dist),
                };
            }
        }
        Reader::Any
    }

    /// The one version that reads here, if one does.
    pub fn version(&self) -> Option<PyVersion> {
        match self {
            Reader::Version { version, .. } => Some(*version),
            _ => None,
        }
    }

    /// Whether a pyc of `version` can be loaded here. A free-threaded build reads its GIL
    /// build's pycs: one cache tag and one magic number serve both.
    pub fn accepts(&self, version: PyVersion) -> bool {
        match self {
            Reader::Version { version: v, .. } => {
                (v.implementation, v.major, v.minor)
                    == (version.implementation, version.major, version.minor)
            }
            Reader::Implementation { implementation, .. } => {
                version.implementation == *implementation && version.major == 3
            }
            Reader::Any => true,
        }
    }

    /// Whether a Python 2 pyc is at home here: a Python 2 tree, or a directory no path tells
    /// the reader of. Elsewhere no reader can load one.
    pub fn reads_python2(&self) -> bool {
        match self {
            Reader::Version { version, .. } => version.major == 2,
            Reader::Implementation { .. } => false,
            Reader::Any => true,
        }
    }

    /// `only python3.12 imports from /usr/lib/python3.12`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Reader::Version { version, tree } => {
                format!("only {version} imports from {}", shown_in_root(tree))
            }
            Reader::Implementation {
                implementation,
                tree,
            } => {
                let which = match implementation {
                    Implementation::CPython => "CPython 3",
                    Implementation::PyPy => "PyPy 3",
                };
                format!("only {which} imports from {}", shown_in_root(tree))
            }
            Reader::Any => "any Python may import from here".into(),
        }
    }

    /// Why a sourceless pyc starting with `magic` cannot be loaded here, if the table tells:
    /// a Python 2 pyc outside Python 2's places, or a magic number of a version this reader is
    /// not. A magic number the table does not know is left to the reader's interpreter.
    pub fn refuses_magic(&self, magic: [u8; 4]) -> Option<String> {
        let number = u16::from_le_bytes([magic[0], magic[1]]);
        if table::is_python2_magic(magic) && !self.reads_python2() {
            return Some(format!(
                "a Python 2 pyc (magic number {number}), but {}: it cannot load it",
                self.describe()
            ));
        }
        let whose = table::by_magic(magic)?.version;
        (!self.accepts(whose)).then(|| {
            format!(
                "magic number {number} is {whose}'s, but {}: it cannot load this pyc \
                 (\"bad magic number\")",
                self.describe()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn magic(n: u16) -> [u8; 4] {
        let b = n.to_le_bytes();
        [b[0], b[1], b'\r', b'\n']
    }

    #[test]
    fn readers_of_paths() {
        let v312 = PyVersion::cpython(3, 12);
        assert_eq!(
            Reader::of(Path::new("usr/lib/python3.12/site-packages/pkg")),
            Reader::Version {
                version: v312,
                tree: "usr/lib/python3.12".into()
            }
        );
        // A virtualenv inside another tree: its own version reads it.
        let venv = Reader::of(Path::new(
            "usr/lib/python3/dist-packages/x/lib/python3.11/a",
        ));
        assert_eq!(venv.version(), Some(PyVersion::cpython(3, 11)));
        assert_eq!(
            Reader::of(Path::new("usr/lib/pypy3.11/json")).version(),
            Some(PyVersion::pypy(3, 11))
        );
        assert_eq!(
            Reader::of(Path::new("usr/lib64/python3.14t")).version(),
            Some(PyVersion::cpython(3, 14).free_threaded())
        );
        assert!(matches!(
            Reader::of(Path::new("usr/lib/pypy3/dist-packages/m")),
            Reader::Implementation {
                implementation: Implementation::PyPy,
                ..
            }
        ));
        for any in [
            "opt/app",
            "usr/share/python3.12",
            "usr/lib/python3.12-config",
            "",
        ] {
            assert_eq!(Reader::of(Path::new(any)), Reader::Any, "{any}");
        }
    }

    #[test]
    fn what_each_reader_loads() {
        let tree = Reader::of(Path::new("usr/lib/python3.12"));
        assert!(tree.accepts(PyVersion::cpython(3, 12)));
        assert!(!tree.accepts(PyVersion::cpython(3, 11)));
        assert!(!tree.accepts(PyVersion::pypy(3, 12)));
        let ft = Reader::of(Path::new("usr/lib/python3.14t"));
        assert!(ft.accepts(PyVersion::cpython(3, 14)));
        let dist = Reader::of(Path::new(DIST_PACKAGES));
        assert!(dist.accepts(PyVersion::cpython(3, 9)) && !dist.accepts(PyVersion::pypy(3, 9)));

        let v311 = table::facts(PyVersion::cpython(3, 11)).unwrap();
        let m311 = magic(*v311.magics.end());
        assert!(tree.refuses_magic(m311).unwrap().contains("python3.11's"));
        assert!(tree
            .refuses_magic(magic(62211))
            .unwrap()
            .contains("Python 2"));
        assert!(dist.refuses_magic(magic(62211)).is_some());
        assert_eq!(Reader::Any.refuses_magic(magic(62211)), None);
        let py27 = Reader::of(Path::new("usr/lib/python2.7"));
        assert_eq!(py27.refuses_magic(magic(62211)), None);
        assert!(py27.refuses_magic(m311).is_some());
        // PyPy's tree refuses CPython's pycs of the same X.Y.
        let pypy = Reader::of(Path::new("usr/lib/pypy3.11"));
        assert!(pypy.refuses_magic(m311).is_some());
        // A magic number the table does not know: the interpreter decides.
        assert_eq!(tree.refuses_magic(magic(3999)), None);
    }
}
