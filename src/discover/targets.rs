//! The versions an unversioned tree is compiled for: Debian's dist-packages, PyPy's, and PATHs
//! outside every `pythonX.Y` tree (private directories). One rule for every entry point: the
//! CLI, the RPM hook, `%py_byte_compile` (which passes `--interpreter`) and `dh_pyclink`.
//!
//! A tree is CPython's or PyPy's ([`flavour`]), and only versions of its implementation compile
//! it: PyPy never reads a `cpython-311` pyc, so PyPy's `dist-packages` compiled by the host's
//! python3 would ship pycs nobody loads.

use std::collections::BTreeSet;
use std::path::Path;

use super::{interpreter, Error};
use crate::python::{Implementation, PyVersion};

/// Debian's public module directory, shared by every installed Python 3.
pub const DIST_PACKAGES: &str = "usr/lib/python3/dist-packages";
/// Debian's public module directory for PyPy 3 (compiled by `pypy3compile` at install time).
pub const PYPY_DIST_PACKAGES: &str = "usr/lib/pypy3/dist-packages";

/// Whose sources an unversioned tree holds: PyPy's under a `pypy3` directory (Debian's
/// `usr/lib/pypy3`, a `/opt/pypy3/...` prefix), CPython's anywhere else.
pub fn flavour(rel: &Path) -> Implementation {
    let pypy = rel.iter().any(|c| {
        c.to_str()
            .is_some_and(|c| c == "pypy3" || c.strip_prefix("pypy3.").is_some_and(is_digits))
    });
    if pypy {
        Implementation::PyPy
    } else {
        Implementation::CPython
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// What the command line and the root say about versions.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    /// `--python-version`.
    pub named: &'a [PyVersion],
    /// The versions given with `--interpreter`.
    pub given: &'a [PyVersion],
    /// Every version with a tree in the root.
    pub in_root: &'a BTreeSet<PyVersion>,
}

/// The versions the `implementation`'s unversioned trees (`shown`, for messages) are compiled
/// for, and why: those named with `--python-version`; else those given with `--interpreter`;
/// else every version found anywhere in the root (whatever PATHs restrict the run to: the
/// package's code runs on the package's Python), free-threaded builds left to be named; else the
/// host's `python3` (or `pypy3`).
pub fn unversioned_targets(
    implementation: Implementation,
    asked: Asked,
    shown: &str,
    starter: &interpreter::Starter,
) -> Result<(Vec<PyVersion>, &'static str), Error> {
    let ours = |v: &&PyVersion| v.implementation == implementation && v.major == 3;
    if !asked.named.is_empty() {
        let set: BTreeSet<PyVersion> = asked.named.iter().filter(ours).copied().collect();
        if set.is_empty() {
            return Err(Error::NoVersionOfFlavour {
                trees: shown.to_string(),
                implementation,
            });
        }
        return Ok((set.into_iter().collect(), "named with --python-version"));
    }
    let given: BTreeSet<PyVersion> = asked.given.iter().filter(ours).copied().collect();
    if !given.is_empty() {
        return Ok((given.into_iter().collect(), "given with --interpreter"));
    }
    // A free-threaded build has its own library directory; a tree shared by the builds is
    // compiled for it only when asked (it may share the GIL build's cache tag).
    let found: Vec<PyVersion> = asked
        .in_root
        .iter()
        .filter(ours)
        .filter(|v| !v.free_threaded)
        .copied()
        .collect();
    if !found.is_empty() {
        let why = match implementation {
            Implementation::CPython => "the Python 3 versions found in the build root",
            Implementation::PyPy => "the PyPy versions found in the build root",
        };
        return Ok((found, why));
    }
    let host = host_default(implementation, shown, starter)?;
    Ok((
        vec![host],
        match implementation {
            Implementation::CPython => "no Python 3 tree in the build root: the host's python3",
            Implementation::PyPy => "no PyPy tree in the build root: the host's pypy3",
        },
    ))
}

/// The version of the host's `python3` (`pypy3`), for trees that name none.
fn host_default(
    implementation: Implementation,
    trees: &str,
    starter: &interpreter::Starter,
) -> Result<PyVersion, Error> {
    let command = match implementation {
        Implementation::CPython => "python3",
        Implementation::PyPy => "pypy3",
    };
    let program = interpreter::find_on_path(command).ok_or_else(|| Error::NoHostDefault {
        command,
        trees: trees.to_string(),
    })?;
    let version = starter
        .version_of(&program)
        .map_err(|failure| Error::HostDefault {
            path: program.clone(),
            trees: trees.to_string(),
            failure,
        })?;
    if version.implementation != implementation {
        return Err(Error::NoVersionOfFlavour {
            trees: trees.to_string(),
            implementation,
        });
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    const NEVER: Duration = Duration::ZERO;

    #[test]
    fn flavours() {
        for p in [
            PYPY_DIST_PACKAGES,
            "usr/lib/pypy3/dist-packages/foo",
            "opt/pypy3.11/share/x",
        ] {
            assert_eq!(flavour(Path::new(p)), Implementation::PyPy, "{p}");
        }
        for p in [
            DIST_PACKAGES,
            "usr/share/pypy3ish",
            "opt/app",
            "usr/share/pypy3.x",
        ] {
            assert_eq!(flavour(Path::new(p)), Implementation::CPython, "{p}");
        }
    }

    #[test]
    fn target_order() {
        let v311 = PyVersion::cpython(3, 11);
        let v312 = PyVersion::cpython(3, 12);
        let v314t = PyVersion::cpython(3, 14).free_threaded();
        let pypy = PyVersion::pypy(3, 11);
        let found = BTreeSet::from([v312, PyVersion::cpython(2, 7), v314t, pypy]);
        let targets = |i, named: &[PyVersion], given: &[PyVersion]| {
            let asked = Asked {
                named,
                given,
                in_root: &found,
            };
            unversioned_targets(i, asked, "t", &interpreter::Starter::new("", NEVER)).map(|t| t.0)
        };
        use Implementation::{CPython, PyPy};
        assert_eq!(targets(CPython, &[v311], &[v312]).unwrap(), vec![v311]);
        assert_eq!(targets(CPython, &[], &[v311]).unwrap(), vec![v311]);
        // Found in the root: the GIL builds of CPython 3, never Python 2, never 3.14t unasked.
        assert_eq!(targets(CPython, &[], &[]).unwrap(), vec![v312]);
        assert_eq!(targets(CPython, &[v314t], &[]).unwrap(), vec![v314t]);
        // PyPy's trees get PyPy's versions only; a CPython version named is no answer.
        assert_eq!(targets(PyPy, &[], &[v311]).unwrap(), vec![pypy]);
        let err = targets(PyPy, &[v311], &[]).unwrap_err().to_string();
        assert!(err.contains("PyPy"), "{err}");
    }
}
