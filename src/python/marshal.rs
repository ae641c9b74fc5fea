//! CPython's marshal format (the body of a pyc after its header): a walker, the normal form
//! that makes the bytes independent of the writing process's history, and the code objects'
//! file names.
//!
//! # Why a normal form
//! `marshal.dumps` marks an object with `FLAG_REF` (0x80 on its type byte) when its reference
//! count is above one at the time of writing, and writes a later occurrence of the *same
//! object* as `TYPE_REF n`. Reference counts and object identity depend on what the process
//! did before (other modules compiled, interned strings, caches), so the same source compiled
//! in two workers can give two different byte strings that load to equal code.
//!
//! Fedora's add-determinism (`add-det`, pyc handler) rewrites such files into a form that
//! depends only on the loaded value. [`normalize`] produces that same form, byte for byte:
//! - every object *equal* to one written earlier in the file is written as `TYPE_REF` to the
//!   first one (equal: same type code and contents, recursively, references seen through;
//!   a string keeps its kind, so an interned `'Z'` and a plain `'z'` with the same text stay
//!   two objects; `None`, `True`, `False`, `...`, `StopIteration` and `NULL` are never shared);
//! - `FLAG_REF` is set on exactly the objects that some `TYPE_REF` refers to;
//! - references are numbered in the order the flagged objects start in the file, which is
//!   the order `marshal.loads` registers them.
//!
//! Everything else (type codes, lengths, payloads, code-object integer fields) is kept as
//! read. The result is a function of the data with its references expanded and its flags
//! cleared, so it is idempotent and equal for any two inputs that load to the same value with
//! the same string kinds. It can differ from the input by more than flags: equal constants
//! that the compiler kept as two objects become one (a loaded pyc then shares them, which
//! only `is` can tell). Clearing unused flags alone, as fedora-python's marshalparser does,
//! would leave those copies and not match what Fedora ships (checked against add-det 0.7.3,
//! whose pyc handler shares them).
//!
//! # Robustness
//! The walker takes arbitrary bytes: it never panics, never recurses on the call stack (an
//! explicit stack, limited to CPython's `MAX_MARSHAL_STACK_DEPTH`), allocates in proportion to
//! the input and never from a length field, and reports what it could not read as an
//! [`Error`] with the byte offset.

mod code;
#[cfg(test)]
mod tests;
mod walk;

use std::borrow::Cow;
use std::fmt;

use crate::escape::plural;

pub use code::{CodeInfo, MarshalStr};

/// How one version's marshal data is laid out: what [`crate::python::table`] says of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Format {
    pub layout: CodeLayout,
    /// `TYPE_SLICE` (marshal version 5, CPython 3.14).
    pub slices: bool,
    /// `TYPE_FROZENDICT` (marshal version 6, CPython 3.15): a dict's NULL-terminated pairs,
    /// registered for references when it starts, like a frozenset.
    pub frozendicts: bool,
}

/// The fields of a code object, in the order `marshal` writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeLayout {
    /// CPython 3.6 and 3.7.
    Py36,
    /// CPython 3.8 to 3.10 (`co_posonlyargcount`), and PyPy 3.9.
    Py38,
    /// CPython 3.11 on (`co_qualname`, localsplus, the exception table).
    Py311,
    /// PyPy 3.11: 3.8's fields plus `co_qualname` and the exception table.
    PyPy311,
}

/// CPython's limit on nesting when reading (`MAX_MARSHAL_STACK_DEPTH`, non-Windows): data
/// nested deeper cannot be loaded, so it is refused here too.
pub const MAX_DEPTH: usize = 2000;

/// Why marshal data could not be walked. Offsets count from the start of the marshal body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The data ends inside an object.
    Truncated { offset: usize, needed: usize },
    /// A type code that marshal does not write (or not for this version).
    UnknownType { offset: usize, code: u8 },
    /// A negative or impossible length or count.
    BadSize { offset: usize, size: i64 },
    /// A long integer whose digits marshal.loads refuses (out of range, not normalized).
    BadLong { offset: usize },
    /// `TYPE_NULL` where an object is required (only a dict's end marker may be NULL).
    Null { offset: usize },
    /// A `TYPE_REF` to an index that no flagged object has registered.
    BadRef {
        offset: usize,
        index: u32,
        registered: usize,
    },
    /// A `TYPE_REF` to an object that is still being read (a recursive structure; code
    /// objects and their constants never are).
    RecursiveRef { offset: usize, index: u32 },
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep { offset: usize },
    /// Bytes left after the top-level object. marshal.loads ignores them; add-det drops them
    /// and rewrites the rest, which is what normalizing `body[..offset]` gives.
    TrailingBytes { offset: usize, count: usize },
    /// Input of 4 GiB or more.
    TooLarge { len: usize },
    /// A code object field that must be a string is not (only [`code_objects`] checks).
    NotAString { offset: usize, field: &'static str },
    /// A pyc whose magic number names no version whose marshal data pyclink reads.
    UnknownMagic([u8; 4]),
    /// A pyc shorter than its header.
    ShortHeader { len: usize, header: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { offset, needed } => write!(
                f,
                "marshal data truncated: {} needed at offset {offset}",
                plural(*needed as u64, "more byte")
            ),
            Error::UnknownType { offset, code } => write!(
                f,
                "unknown marshal type code 0x{code:02x} ({:?}) at offset {offset}",
                char::from(*code)
            ),
            Error::BadSize { offset, size } => {
                write!(f, "bad marshal size {size} at offset {offset}")
            }
            Error::BadLong { offset } => write!(
                f,
                "bad marshal long at offset {offset} (digit out of range or unnormalized)"
            ),
            Error::Null { offset } => write!(f, "NULL object in marshal data at offset {offset}"),
            Error::BadRef {
                offset,
                index,
                registered,
            } => write!(
                f,
                "marshal reference {index} at offset {offset}, but only {} {} flagged before it",
                plural(*registered as u64, "object"),
                if *registered == 1 { "is" } else { "are" }
            ),
            Error::RecursiveRef { offset, index } => write!(
                f,
                "marshal reference {index} at offset {offset} points into an object still being read"
            ),
            Error::TooDeep { offset } => write!(
                f,
                "marshal data nested deeper than {MAX_DEPTH} at offset {offset}"
            ),
            Error::TrailingBytes { offset, count } => write!(
                f,
                "{} after the marshalled object at offset {offset}",
                plural(*count as u64, "byte")
            ),
            Error::TooLarge { len } => write!(f, "marshal data of {len} bytes is too large"),
            Error::NotAString { offset, field } => write!(
                f,
                "{field} of the code object at offset {offset} is not a string"
            ),
            Error::UnknownMagic(m) => write!(
                f,
                "unknown pyc magic number {:02x} {:02x} {:02x} {:02x}",
                m[0], m[1], m[2], m[3]
            ),
            Error::ShortHeader { len, header } => {
                write!(f, "pyc of {len} bytes is shorter than its {header}-byte header")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Walks and normalizes marshal data, keeping its buffers between calls: one per thread in a
/// loop over many pycs allocates only while files grow.
#[derive(Default)]
pub struct Normalizer {
    walker: walk::Walker,
    number: Vec<u32>,
    referenced: Vec<u32>,
}

impl Normalizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The normal form of `body` (see the module documentation): `Cow::Borrowed(body)` when
    /// `body` already is normal, so callers can tell "unchanged" without comparing.
    pub fn normalize<'a>(
        &mut self,
        body: &'a [u8],
        format: Format,
    ) -> Result<Cow<'a, [u8]>, Error> {
        self.walker.walk(body, format, true, false)?;
        self.number_references();
        let (out, _, _) = self.walker.output();
        if out[..] == *body {
            Ok(Cow::Borrowed(body))
        } else {
            Ok(Cow::Owned(out.clone()))
        }
    }

    /// Whether `body` is in normal form (valid marshal data that [`normalize`] leaves as is).
    pub fn is_normal(&mut self, body: &[u8], format: Format) -> Result<bool, Error> {
        Ok(matches!(self.normalize(body, format)?, Cow::Borrowed(_)))
    }

    /// Every code object in `body`, outermost first (the order they start in the data). A
    /// code object written as a reference to an equal one is not listed again.
    pub fn code_objects<'a>(
        &mut self,
        body: &'a [u8],
        format: Format,
    ) -> Result<Vec<CodeInfo<'a>>, Error> {
        self.walker.walk(body, format, false, true)?;
        code::code_infos(&self.walker, body)
    }

    /// The walk wrote each reference with its target's class: flag the targets and number
    /// them in the order they start, as marshal.loads registers them.
    fn number_references(&mut self) {
        self.number.clear();
        self.number.resize(self.walker.class_count(), walk::NONE);
        self.referenced.clear();
        let (out, first, patches) = self.walker.output();
        let class_at = |out: &[u8], at: u32| {
            let at = at as usize;
            u32::from_le_bytes([out[at + 1], out[at + 2], out[at + 3], out[at + 4]])
        };
        for &at in patches {
            let class = class_at(out, at);
            if self.number[class as usize] == walk::NONE {
                self.number[class as usize] = 0;
                self.referenced.push(class);
            }
        }
        self.referenced.sort_unstable_by_key(|&c| first[c as usize]);
        for (n, &class) in self.referenced.iter().enumerate() {
            self.number[class as usize] = n as u32;
            out[first[class as usize] as usize] |= walk::FLAG_REF;
        }
        for &at in patches {
            let class = class_at(out, at);
            let at = at as usize;
            out[at + 1..at + 5].copy_from_slice(&self.number[class as usize].to_le_bytes());
        }
    }
}

/// [`Normalizer::normalize`] with fresh buffers.
pub fn normalize(body: &[u8], format: Format) -> Result<Cow<'_, [u8]>, Error> {
    Normalizer::new().normalize(body, format)
}

/// [`Normalizer::is_normal`] with fresh buffers.
pub fn is_normal(body: &[u8], format: Format) -> Result<bool, Error> {
    Normalizer::new().is_normal(body, format)
}

/// [`Normalizer::code_objects`] with fresh buffers.
pub fn code_objects(body: &[u8], format: Format) -> Result<Vec<CodeInfo<'_>>, Error> {
    Normalizer::new().code_objects(body, format)
}

/// The marshal format and header length of a whole pyc file, from its magic number.
pub fn pyc_layout(pyc: &[u8]) -> Result<(Format, usize), Error> {
    let magic: [u8; 4] = match pyc.get(..4) {
        Some(m) => [m[0], m[1], m[2], m[3]],
        None => {
            return Err(Error::ShortHeader {
                len: pyc.len(),
                header: 4,
            })
        }
    };
    let facts = crate::python::table::by_magic(magic);
    let Some((format, header)) = facts.and_then(|f| Some((f.marshal?, f.header_len))) else {
        return Err(Error::UnknownMagic(magic));
    };
    if pyc.len() < header {
        return Err(Error::ShortHeader {
            len: pyc.len(),
            header,
        });
    }
    Ok((format, header))
}

/// A whole pyc file (header and body) in normal form; the header is kept as it is.
pub fn normalize_pyc(pyc: &[u8]) -> Result<Cow<'_, [u8]>, Error> {
    let (format, header) = pyc_layout(pyc)?;
    Ok(match normalize(&pyc[header..], format)? {
        Cow::Borrowed(_) => Cow::Borrowed(pyc),
        Cow::Owned(body) => {
            let mut v = Vec::with_capacity(header + body.len());
            v.extend_from_slice(&pyc[..header]);
            v.extend_from_slice(&body);
            Cow::Owned(v)
        }
    })
}
