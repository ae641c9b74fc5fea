//! What pyclink knows about each Python version, in one table: its pycs' magic numbers, header
//! and marshal format, whether hash-based pycs exist, and how far pyclink has validated its own
//! work for it (the normal form, level prediction). Every stage asks here; nothing else in the
//! tree compares version numbers to decide what a version can do.
//!
//! A version is *validated* when the test suite runs it on a real interpreter: its pycs are in
//! the normal form whatever `-j`, order and history, equal to compileall + add-det where add-det
//! knows the version, and prediction is fuzzed against its compiler. A version that the table
//! does not know (a newer CPython, a PyPy whose magic number was never seen), or knows but has
//! not validated (a free-threaded build, which no machine here runs), is still compiled, never
//! in silence: every level is compiled, the interpreter's raw bytes are written, and the summary
//! and JSON say so; the RPM hook then leaves add-det's pyc pass on.

use std::ops::RangeInclusive;

use super::marshal::{CodeLayout, Format};
use super::{Implementation, PyVersion};

/// What one version's pycs are, and what pyclink may do with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub version: PyVersion,
    /// The magic numbers (the little-endian u16 before `\r\n`) of its pycs, its development
    /// releases' included.
    pub magics: RangeInclusive<u16>,
    /// The cache tag in `__pycache__` names.
    pub cache_tag: String,
    /// 8 bytes before 3.3, 12 before PEP 552 (3.7), then 16.
    pub header_len: usize,
    /// PEP 552 hash-based pycs (3.7 on).
    pub hash_pycs: bool,
    /// How pyclink reads its marshal data (`None`: it does not).
    pub marshal: Option<Format>,
    /// `Err(why)` for a version pyclink does not compile at all.
    pub compiles: Result<(), &'static str>,
    /// Its pycs are written in a form that depends on nothing but the source (see
    /// [`Determinism`]), and that is proven on a real interpreter.
    pub normal_form_validated: bool,
    /// Level prediction (`predict`) is fuzzed against this version's compiler.
    pub prediction_validated: bool,
    /// How its bytes are kept free of the worker's history.
    pub determinism: Determinism,
    /// CPython also comes in a free-threaded build of this version (`X.Yt`).
    pub free_threaded_build: bool,
}

/// How a version's pyc bytes are made independent of `-j`, order and what a worker compiled
/// before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Determinism {
    /// CPython: add-determinism's normal form (`marshal::normalize`), from workers that retire
    /// once their interning state moves (see worker.py).
    NormalForm,
    /// PyPy: each source compiled in a fresh fork of a worker that never compiles. PyPy marks a
    /// string interned when an equal string was interned before, by anything the process did,
    /// so the same source gives other bytes after other sources; a fresh fork gives the bytes of
    /// that file compiled alone. The normal form is applied as well, so references and their
    /// flags follow the value, not PyPy's object identities.
    FreshProcess,
}

const NOT_PEP3147: &str = "Python 2 writes NAME.pyc beside the source, not PEP 3147 \
    __pycache__ files; leave it to the Python 2 tools";
const TOO_OLD: &str = "pyclink compiles for Python 3.6 and later";

/// One row: CPython 3.`minor`.
struct CPython {
    minor: u32,
    magics: RangeInclusive<u16>,
    layout: Option<CodeLayout>,
    validated: bool,
    free_threaded_build: bool,
}

/// CPython's magic-number blocks (`_bootstrap_external.py`, `pycore_magic_number.h`), and what
/// the suite has proven. 3.14 reads 3.11's code layout plus slices (marshal version 5), 3.15
/// adds frozendict (version 6).
const CPYTHON: &[CPython] = &[
    row(0, 3000, 3140, None, false, false),
    row(1, 3141, 3159, None, false, false),
    row(2, 3160, 3189, None, false, false),
    row(3, 3190, 3249, None, false, false),
    row(4, 3250, 3319, None, false, false),
    row(5, 3320, 3359, None, false, false),
    row(6, 3360, 3389, Some(CodeLayout::Py36), true, false),
    row(7, 3390, 3399, Some(CodeLayout::Py36), true, false),
    row(8, 3400, 3419, Some(CodeLayout::Py38), true, false),
    row(9, 3420, 3429, Some(CodeLayout::Py38), true, false),
    row(10, 3430, 3449, Some(CodeLayout::Py38), true, false),
    row(11, 3450, 3499, Some(CodeLayout::Py311), true, false),
    row(12, 3500, 3549, Some(CodeLayout::Py311), true, false),
    row(13, 3550, 3599, Some(CodeLayout::Py311), true, true),
    row(14, 3600, 3649, Some(CodeLayout::Py311), true, true),
    row(15, 3650, 3699, Some(CodeLayout::Py311), true, true),
];

const fn row(
    minor: u32,
    first: u16,
    last: u16,
    layout: Option<CodeLayout>,
    validated: bool,
    free_threaded_build: bool,
) -> CPython {
    CPython {
        minor,
        magics: first..=last,
        layout,
        validated,
        free_threaded_build,
    }
}

/// PyPy's magic number is its own counter (`pypy_incremental_magic`), bumped by PyPy releases
/// independently of the Python version, so only the numbers measured on real PyPys are known:
/// PyPy 7.3.11 (3.9) and PyPy 8.0 (3.11).
struct PyPy {
    minor: u32,
    magic: u16,
    layout: CodeLayout,
}

const PYPY: &[PyPy] = &[
    PyPy {
        minor: 9,
        magic: 336,
        layout: CodeLayout::Py38,
    },
    PyPy {
        minor: 11,
        magic: 432,
        layout: CodeLayout::PyPy311,
    },
];

/// Python 2.7's magic numbers (2.7a0 to 2.7), to name a pyc that is not Python 3's.
const PYTHON27: RangeInclusive<u16> = 62171..=62211;

/// What pyclink knows of `version`; `None` for a version it has never heard of.
pub fn facts(version: PyVersion) -> Option<Facts> {
    match version.implementation {
        Implementation::CPython if version.major == 3 => {
            let r = CPYTHON.iter().find(|r| r.minor == version.minor)?;
            if version.free_threaded && !r.free_threaded_build {
                return None;
            }
            Some(cpython_facts(r, version.free_threaded))
        }
        Implementation::CPython if (version.major, version.minor) == (2, 7) => Some(Facts {
            version,
            magics: PYTHON27,
            cache_tag: String::new(),
            header_len: 8,
            hash_pycs: false,
            marshal: None,
            compiles: Err(NOT_PEP3147),
            normal_form_validated: false,
            prediction_validated: false,
            determinism: Determinism::NormalForm,
            free_threaded_build: false,
        }),
        Implementation::PyPy if version.major == 3 && !version.free_threaded => {
            let r = PYPY.iter().find(|r| r.minor == version.minor)?;
            Some(pypy_facts(r))
        }
        _ => None,
    }
}

/// The version whose pycs start with `magic` (a GIL build for CPython: both builds of a version
/// write the same format).
pub fn by_magic(magic: [u8; 4]) -> Option<Facts> {
    if magic[2..] != *b"\r\n" {
        return None;
    }
    let n = u16::from_le_bytes([magic[0], magic[1]]);
    if let Some(r) = CPYTHON.iter().find(|r| r.magics.contains(&n)) {
        return Some(cpython_facts(r, false));
    }
    if let Some(r) = PYPY.iter().find(|r| r.magic == n) {
        return Some(pypy_facts(r));
    }
    PYTHON27
        .contains(&n)
        .then(|| facts(PyVersion::cpython(2, 7)))
        .flatten()
}

/// Is this magic number Python 2's (or 1.x)? Those pycs sit beside their sources by design.
pub fn is_python2_magic(magic: [u8; 4]) -> bool {
    magic[2..] == *b"\r\n" && u16::from_le_bytes([magic[0], magic[1]]) >= 20000
}

/// Every version the table knows that pyclink compiles, GIL builds then free-threaded ones, for
/// the README's table and the tests.
pub fn all() -> Vec<Facts> {
    let mut out: Vec<Facts> = CPYTHON
        .iter()
        .map(|r| cpython_facts(r, false))
        .chain(
            CPYTHON
                .iter()
                .filter(|r| r.free_threaded_build)
                .map(|r| cpython_facts(r, true)),
        )
        .chain(PYPY.iter().map(pypy_facts))
        .filter(|f| f.compiles.is_ok())
        .collect();
    out.sort_by_key(|f| f.version);
    out
}

fn cpython_facts(r: &CPython, free_threaded: bool) -> Facts {
    let minor = r.minor;
    let version = PyVersion {
        free_threaded,
        ..PyVersion::cpython(3, minor)
    };
    Facts {
        version,
        magics: r.magics.clone(),
        cache_tag: format!("cpython-3{minor}"),
        header_len: match minor {
            0..=2 => 8,
            3..=6 => 12,
            _ => 16,
        },
        hash_pycs: minor >= 7,
        marshal: r.layout.map(|layout| Format {
            layout,
            slices: minor >= 14,
            frozendicts: minor >= 15,
        }),
        compiles: if minor >= 6 { Ok(()) } else { Err(TOO_OLD) },
        // No free-threaded interpreter runs in the suite: its builds keep the raw bytes and
        // compile every level until one does.
        normal_form_validated: r.validated && !free_threaded,
        prediction_validated: r.validated && !free_threaded,
        determinism: Determinism::NormalForm,
        free_threaded_build: r.free_threaded_build,
    }
}

fn pypy_facts(r: &PyPy) -> Facts {
    Facts {
        version: PyVersion::pypy(3, r.minor),
        magics: r.magic..=r.magic,
        cache_tag: format!("pypy3{}", r.minor),
        header_len: 16,
        hash_pycs: true,
        marshal: Some(Format {
            layout: r.layout,
            slices: false,
            frozendicts: false,
        }),
        compiles: Ok(()),
        normal_form_validated: true,
        prediction_validated: true,
        determinism: Determinism::FreshProcess,
        free_threaded_build: false,
    }
}

impl Facts {
    /// The magic number as the first four bytes of a pyc.
    pub fn has_magic(&self, magic: [u8; 4]) -> bool {
        magic[2..] == *b"\r\n"
            && self
                .magics
                .contains(&u16::from_le_bytes([magic[0], magic[1]]))
    }
}

/// How one run compiles a version, decided here from the table and what the interpreter said
/// (its magic number): the table's facts apply only to the pyc format they describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Rewrite into the normal form, read as this format; `None`: the interpreter's bytes.
    pub normalize: Option<Format>,
    /// Prediction may skip levels it proves identical.
    pub predict: bool,
    /// Compile every source in a fresh fork of the worker (see [`Determinism::FreshProcess`]).
    pub fresh_process: bool,
    /// What the pycs get for want of validation, and why (`raw interpreter bytes, every level
    /// compiled (pyclink does not know python3.16 yet)`), for the summary; `None` when the
    /// version is validated.
    pub unvalidated: Option<String>,
}

/// The policy for `version`, whose interpreter writes pycs starting with `magic`.
pub fn policy(version: PyVersion, magic: [u8; 4]) -> Policy {
    let known = facts(version).filter(|f| f.compiles.is_ok());
    let Some(f) = known.filter(|f| f.has_magic(magic)) else {
        let why = match facts(version) {
            Some(_) => format!(
                "its magic number {} is not one pyclink knows for {version}",
                u16::from_le_bytes([magic[0], magic[1]])
            ),
            None => format!("pyclink does not know {version} yet"),
        };
        // Fresh forks cost little and keep PyPy's interning out of the bytes whatever it is.
        return with_note(
            Policy {
                normalize: None,
                predict: false,
                fresh_process: version.implementation == Implementation::PyPy,
                unvalidated: None,
            },
            &why,
        );
    };
    let not_yet = match (f.normal_form_validated, f.prediction_validated) {
        (true, true) => None,
        (false, true) => Some("its normal form is"),
        (true, false) => Some("level prediction is"),
        (false, false) => Some("its normal form and level prediction are"),
    };
    let policy = Policy {
        normalize: f.marshal.filter(|_| f.normal_form_validated),
        predict: f.prediction_validated,
        fresh_process: f.determinism == Determinism::FreshProcess,
        unvalidated: None,
    };
    match not_yet {
        None => policy,
        Some(what) => with_note(
            policy,
            &format!("{what} not validated on a real {version} yet"),
        ),
    }
}

/// Say what a version pyclink has not validated gets, and why.
fn with_note(mut p: Policy, why: &str) -> Policy {
    let what = match (p.normalize.is_none(), p.predict) {
        (true, false) => "raw interpreter bytes, every level compiled",
        (true, true) => "raw interpreter bytes",
        (false, false) => "every level compiled",
        (false, true) => return p,
    };
    p.unvalidated = Some(format!("{what} ({why})"));
    p
}

/// Why pyclink does not compile `version`, or `None` if it does (a version the table does not
/// know is compiled, raw: see [`policy`]).
pub fn unsupported_reason(version: PyVersion) -> Option<String> {
    let base = PyVersion {
        free_threaded: false,
        ..version
    };
    let why = match facts(version) {
        Some(f) => f.compiles.err()?,
        None if version.major < 3 => NOT_PEP3147,
        // A known version without a free-threaded build (python3.12t); a version newer than
        // the table is compiled, raw.
        None if version.free_threaded && facts(base).is_some() => {
            "CPython has no free-threaded build of it"
        }
        None => return None,
    };
    Some(format!("{version} is not supported ({why})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn magic(n: u16) -> [u8; 4] {
        let b = n.to_le_bytes();
        [b[0], b[1], b'\r', b'\n']
    }

    #[test]
    fn every_magic_names_one_version() {
        for f in all() {
            for n in f.magics.clone() {
                let by = by_magic(magic(n)).unwrap();
                assert_eq!(
                    PyVersion {
                        free_threaded: false,
                        ..by.version
                    },
                    PyVersion {
                        free_threaded: false,
                        ..f.version
                    }
                );
            }
        }
        assert_eq!(
            by_magic(magic(3666)).unwrap().version,
            PyVersion::cpython(3, 15)
        );
        assert_eq!(
            by_magic(magic(3627)).unwrap().version,
            PyVersion::cpython(3, 14)
        );
        assert_eq!(
            by_magic(magic(432)).unwrap().version,
            PyVersion::pypy(3, 11)
        );
        assert_eq!(
            by_magic(magic(62211)).unwrap().version,
            PyVersion::cpython(2, 7)
        );
        assert_eq!(by_magic(magic(3700)), None);
        assert_eq!(by_magic([0x55, 0x0d, 0x0d, 0x0b]), None);
    }

    #[test]
    fn what_is_compiled_and_how() {
        let v315 = PyVersion::cpython(3, 15);
        let p = policy(v315, magic(3666));
        assert!(p.normalize.is_some_and(|f| f.frozendicts) && p.predict && !p.fresh_process);
        assert_eq!(p.unvalidated, None);

        // The free-threaded build: compiled, every level, raw, and said so.
        let t = policy(PyVersion::cpython(3, 14).free_threaded(), magic(3627));
        assert_eq!((t.normalize, t.predict), (None, false));
        assert!(t.unvalidated.unwrap().contains("python3.14t"));
        assert_eq!(facts(PyVersion::cpython(3, 12).free_threaded()), None);

        // A version or magic number the table does not know.
        let next = policy(PyVersion::cpython(3, 16), magic(3700));
        assert_eq!((next.normalize, next.predict), (None, false));
        assert!(next
            .unvalidated
            .unwrap()
            .contains("does not know python3.16"));
        let dev = policy(v315, magic(3700));
        assert!(dev.unvalidated.unwrap().contains("3700"));

        let pypy = policy(PyVersion::pypy(3, 11), magic(432));
        assert!(pypy.fresh_process && pypy.normalize.is_some() && pypy.predict);
        let pypy310 = policy(PyVersion::pypy(3, 10), magic(400));
        assert!(pypy310.fresh_process && pypy310.normalize.is_none());
    }

    #[test]
    fn unsupported_versions() {
        assert!(unsupported_reason(PyVersion::cpython(3, 5))
            .unwrap()
            .contains("3.6 and later"));
        assert!(unsupported_reason(PyVersion::cpython(2, 7))
            .unwrap()
            .contains("PEP 3147"));
        assert!(unsupported_reason(PyVersion::cpython(2, 6)).is_some());
        assert!(unsupported_reason(PyVersion::cpython(3, 12).free_threaded()).is_some());
        assert_eq!(unsupported_reason(PyVersion::cpython(3, 6)), None);
        assert_eq!(unsupported_reason(PyVersion::cpython(3, 16)), None);
        assert_eq!(unsupported_reason(PyVersion::pypy(3, 10)), None);
    }
}
