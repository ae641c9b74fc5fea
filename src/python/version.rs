//! Which Python a tree belongs to: implementation plus `X.Y`, as spelled in directory names
//! (`python3.12`, `pypy3.10`) and on the command line (`3.12`, `pypy3.10`).

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
}

impl PyVersion {
    pub fn cpython(major: u32, minor: u32) -> Self {
        PyVersion {
            implementation: Implementation::CPython,
            major,
            minor,
        }
    }

    /// The command name of this version's interpreter, which is also its library directory name.
    pub fn command(&self) -> String {
        match self.implementation {
            Implementation::CPython => format!("python{}.{}", self.major, self.minor),
            Implementation::PyPy => format!("pypy{}.{}", self.major, self.minor),
        }
    }

    /// Parse a library directory name: `python3.12` or `pypy3.10`.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix("python") {
            parse_xy(rest).map(|(x, y)| PyVersion::cpython(x, y))
        } else if let Some(rest) = name.strip_prefix("pypy") {
            parse_xy(rest).map(|(major, minor)| PyVersion {
                implementation: Implementation::PyPy,
                major,
                minor,
            })
        } else {
            None
        }
    }

    /// pyclink writes PEP 3147 `__pycache__` files (Python 3.2 on) and its worker needs 3.6.
    pub fn is_supported(&self) -> bool {
        match self.implementation {
            Implementation::CPython => (self.major, self.minor) >= (3, 6),
            Implementation::PyPy => self.major >= 3,
        }
    }

    /// Why a version is not compiled, for messages.
    pub fn unsupported_reason(&self) -> String {
        let why = if self.major < 3 {
            "Python 2 writes NAME.pyc beside the source, not PEP 3147 __pycache__ files; \
             leave it to the Python 2 tools"
        } else {
            "pyclink compiles for Python 3.6 and later"
        };
        format!("{self} is not supported ({why})")
    }
}

fn parse_xy(s: &str) -> Option<(u32, u32)> {
    let (x, y) = s.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.len() <= 3 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(x) || !digits(y) {
        return None;
    }
    Some((x.parse().ok()?, y.parse().ok()?))
}

impl fmt::Display for PyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command())
    }
}

impl FromStr for PyVersion {
    type Err = String;

    /// `3.12`, `python3.12`, `pypy3.10`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = match parse_xy(s) {
            Some((x, y)) => Some(PyVersion::cpython(x, y)),
            None => PyVersion::from_dir_name(s),
        };
        parsed.ok_or_else(|| {
            format!("'{s}' is not a Python version (expected X.Y, pythonX.Y or pypyX.Y)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!PyVersion::cpython(2, 7).is_supported());
        assert!(!PyVersion::cpython(3, 5).is_supported());
        assert!(PyVersion::cpython(3, 6).is_supported());
        assert_eq!(PyVersion::from_dir_name("python3"), None);
        assert_eq!(PyVersion::from_dir_name("site-packages"), None);
    }
}
