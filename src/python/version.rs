//! Which Python a tree belongs to: implementation, `X.Y` and build (the free-threaded `t`), as
//! spelled in directory names (`python3.12`, `python3.14t`, `pypy3.10`) and on the command line
//! (`3.12`, `3.14t`, `pypy3.10`). What pyclink knows about each version is in [`super::table`].

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Implementation {
    CPython,
    PyPy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PyVersion {
    pub implementation: Implementation,
    pub major: u32,
    pub minor: u32,
    /// A free-threaded build (PEP 703: `--disable-gil`, `sys.abiflags` holds `t`), which has
    /// its own interpreter (`python3.14t`) and library directory (`lib64/python3.14t`).
    pub free_threaded: bool,
}

impl PyVersion {
    pub fn cpython(major: u32, minor: u32) -> Self {
        PyVersion {
            implementation: Implementation::CPython,
            major,
            minor,
            free_threaded: false,
        }
    }

    pub fn pypy(major: u32, minor: u32) -> Self {
        PyVersion {
            implementation: Implementation::PyPy,
            ..PyVersion::cpython(major, minor)
        }
    }

    /// The same version's free-threaded build.
    pub fn free_threaded(self) -> Self {
        PyVersion {
            free_threaded: true,
            ..self
        }
    }

    /// The command name of this version's interpreter, which is also its library directory name.
    pub fn command(&self) -> String {
        let t = if self.free_threaded { "t" } else { "" };
        match self.implementation {
            Implementation::CPython => format!("python{}.{}{t}", self.major, self.minor),
            Implementation::PyPy => format!("pypy{}.{}{t}", self.major, self.minor),
        }
    }

    /// `X.Y`, or `X.Yt` for a free-threaded build: how `--interpreter` and `--python-version`
    /// spell a CPython version.
    pub fn short(&self) -> String {
        let t = if self.free_threaded { "t" } else { "" };
        match self.implementation {
            Implementation::CPython => format!("{}.{}{t}", self.major, self.minor),
            Implementation::PyPy => self.command(),
        }
    }

    /// Whether pyclink compiles this version at all (the version table decides).
    pub fn is_supported(&self) -> bool {
        super::table::unsupported_reason(*self).is_none()
    }

    /// Why pyclink does not compile this version, for messages.
    pub fn unsupported_reason(&self) -> String {
        super::table::unsupported_reason(*self).unwrap_or_else(|| format!("{self} is supported"))
    }

    /// Parse a library directory name: `python3.12`, `python3.14t` or `pypy3.10`.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix("python") {
            parse_xy(rest).map(|(x, y, t)| PyVersion {
                free_threaded: t,
                ..PyVersion::cpython(x, y)
            })
        } else if let Some(rest) = name.strip_prefix("pypy") {
            // PyPy has no free-threaded build.
            parse_xy(rest)
                .filter(|&(_, _, t)| !t)
                .map(|(x, y, _)| PyVersion::pypy(x, y))
        } else {
            None
        }
    }

    /// The version a cache tag names: `cpython-311` (CPython 3.11), `pypy310` (PyPy 3.10); the
    /// inverse of the table's `cache_tag` (`table::facts`).
    pub fn from_cache_tag(tag: &str) -> Option<Self> {
        let (implementation, digits) = if let Some(d) = tag.strip_prefix("cpython-") {
            (Implementation::CPython, d)
        } else if let Some(d) = tag.strip_prefix("pypy") {
            (Implementation::PyPy, d)
        } else {
            return None;
        };
        // A free-threaded build's tag, should it have its own (`cpython-314t`).
        let (digits, free_threaded) = match digits.strip_suffix('t') {
            Some(d) if implementation == Implementation::CPython => (d, true),
            _ => (digits, false),
        };
        if digits.len() < 2 || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // One digit of major version: there is no Python 10 to tell apart.
        let (major, minor) = digits.split_at(1);
        if minor.len() > 1 && minor.starts_with('0') {
            return None;
        }
        let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
        Some(match implementation {
            Implementation::CPython if free_threaded => {
                PyVersion::cpython(major, minor).free_threaded()
            }
            Implementation::CPython => PyVersion::cpython(major, minor),
            Implementation::PyPy => PyVersion::pypy(major, minor),
        })
    }
}

/// `X.Y` or `X.Yt`: the digits and whether the free-threaded `t` follows.
fn parse_xy(s: &str) -> Option<(u32, u32, bool)> {
    let (x, y) = s.split_once('.')?;
    let (y, t) = match y.strip_suffix('t') {
        Some(y) => (y, true),
        None => (y, false),
    };
    let digits = |t: &str| !t.is_empty() && t.len() <= 3 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(x) || !digits(y) {
        return None;
    }
    Some((x.parse().ok()?, y.parse().ok()?, t))
}

impl fmt::Display for PyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command())
    }
}

impl FromStr for PyVersion {
    type Err = String;

    /// `3.12`, `3.14t`, `python3.12`, `python3.14t`, `pypy3.10`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = match parse_xy(s) {
            Some((x, y, t)) => Some(PyVersion {
                free_threaded: t,
                ..PyVersion::cpython(x, y)
            }),
            None => PyVersion::from_dir_name(s),
        };
        parsed.ok_or_else(|| {
            format!(
                "'{s}' is not a Python version (expected X.Y, X.Yt, pythonX.Y, pythonX.Yt or pypyX.Y)"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every version of the table is named back from its cache tag.
    #[test]
    fn cache_tags_name_the_tables_versions() {
        for facts in super::super::table::all() {
            let tagged = PyVersion::from_cache_tag(&facts.cache_tag);
            // A free-threaded build writes its GIL build's tag.
            let gil = PyVersion {
                free_threaded: false,
                ..facts.version
            };
            assert_eq!(tagged, Some(gil), "{}", facts.cache_tag);
        }
    }

    #[test]
    fn parses_the_spellings() {
        assert_eq!(
            "3.12".parse::<PyVersion>().unwrap(),
            PyVersion::cpython(3, 12)
        );
        assert_eq!(
            "python3.6".parse::<PyVersion>().unwrap(),
            PyVersion::cpython(3, 6)
        );
        let pypy: PyVersion = "pypy3.10".parse().unwrap();
        assert_eq!(pypy.implementation, Implementation::PyPy);
        assert_eq!(pypy.to_string(), "pypy3.10");
        for ft in ["3.14t", "python3.14t"] {
            let v: PyVersion = ft.parse().unwrap();
            assert_eq!(v, PyVersion::cpython(3, 14).free_threaded());
            assert_eq!(v.to_string(), "python3.14t");
            assert_eq!(v.short(), "3.14t");
        }
        for bad in [
            "3",
            "3.",
            ".12",
            "3.12.1",
            "python",
            "python3",
            "py3.1",
            "3.x",
            "python3.12-config",
            "3.14tt",
            "3.t",
            "pypy3.11t",
        ] {
            assert!(bad.parse::<PyVersion>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn dir_names() {
        assert_eq!(
            PyVersion::from_dir_name("python2.7"),
            Some(PyVersion::cpython(2, 7))
        );
        assert_eq!(
            PyVersion::from_dir_name("python3.14t"),
            Some(PyVersion::cpython(3, 14).free_threaded())
        );
        assert_eq!(PyVersion::from_dir_name("pypy3.11t"), None);
        assert_eq!(PyVersion::from_dir_name("python3"), None);
        assert_eq!(PyVersion::from_dir_name("site-packages"), None);
    }
}
