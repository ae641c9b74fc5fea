//! What the walk tells about code objects: file name, name, qualified name, first line.

use std::borrow::Cow;

use super::walk::Walker;
use super::Error;

/// A string as marshal stores it: the type code tells ASCII (`a A z Z`, read as Latin-1) or
/// UTF-8 with surrogates passed through (`u t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MarshalStr<'a> {
    pub type_code: u8,
    pub bytes: &'a [u8],
}

impl<'a> MarshalStr<'a> {
    /// The text, with anything that is not valid UTF-8 (lone surrogates) replaced.
    pub fn to_string_lossy(&self) -> Cow<'a, str> {
        match self.type_code {
            b'a' | b'A' | b'z' | b'Z' if !self.bytes.is_ascii() => {
                Cow::Owned(self.bytes.iter().map(|&b| char::from(b)).collect())
            }
            _ => String::from_utf8_lossy(self.bytes),
        }
    }

    /// The file system bytes this string stands for. Python decodes undecodable path bytes
    /// to lone surrogates U+DC80..U+DCFF (surrogateescape), which marshal writes as the three
    /// bytes ED B2|B3 xx; this undoes that, so the result compares with a real path.
    pub fn fs_bytes(&self) -> Cow<'a, [u8]> {
        let b = self.bytes;
        if !matches!(self.type_code, b'u' | b't') || !b.contains(&0xED) {
            return Cow::Borrowed(b);
        }
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == 0xED && i + 2 < b.len() && matches!(b[i + 1], 0xB2 | 0xB3) {
                let c = 0xD000 | ((b[i + 1] as u32 & 0x3F) << 6) | (b[i + 2] as u32 & 0x3F);
                if (0xDC80..=0xDCFF).contains(&c) {
                    out.push((c - 0xDC00) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        Cow::Owned(out)
    }
}

/// What [`super::code_objects`] tells about one code object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo<'a> {
    /// Offset of the code object's type byte in the marshal body.
    pub offset: usize,
    /// `co_filename`.
    pub filename: MarshalStr<'a>,
    /// `co_name`.
    pub name: MarshalStr<'a>,
    /// `co_qualname` (3.11 and later).
    pub qualname: Option<MarshalStr<'a>>,
    pub firstlineno: i32,
}

/// A code object's fields as the walk saw them: the classes of its strings.
#[derive(Clone, Copy, Debug)]
pub(super) struct CodeFields {
    pub offset: u32,
    pub filename: u32,
    pub name: u32,
    pub qualname: Option<u32>,
    pub firstlineno: i32,
}

/// The code objects of the last walk of `data`, outermost first.
pub(super) fn code_infos<'a>(walker: &Walker, data: &'a [u8]) -> Result<Vec<CodeInfo<'a>>, Error> {
    let string = |class: u32, offset: u32, field: &'static str| {
        let (type_code, range) = walker.string(class).ok_or(Error::NotAString {
            offset: offset as usize,
            field,
        })?;
        Ok(MarshalStr {
            type_code,
            bytes: &data[range],
        })
    };
    let mut out = walker
        .codes()
        .iter()
        .map(|f| {
            Ok(CodeInfo {
                offset: f.offset as usize,
                filename: string(f.filename, f.offset, "co_filename")?,
                name: string(f.name, f.offset, "co_name")?,
                qualname: match f.qualname {
                    Some(q) => Some(string(q, f.offset, "co_qualname")?),
                    None => None,
                },
                firstlineno: f.firstlineno,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // Recorded as each code object ends: inner ones first.
    out.sort_by_key(|c| c.offset);
    Ok(out)
}
