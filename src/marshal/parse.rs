//! One pass over marshal data: a flat list of objects in the order they start (pre-order),
//! each with an *identity*: a small integer shared by exactly the objects that are equal in
//! the normal form's sense (same type code and contents, references seen through).
//!
//! Identities are hash-consed bottom-up: a scalar's key is its type code and payload bytes,
//! a container's key its type code and the identities (and, for code objects, the integer
//! fields) of its children, so two subtrees are compared in time proportional to their number
//! of children, not their size.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use super::{Error, Version, MAX_DEPTH, SUPPORTED};

pub(super) const FLAG_REF: u8 = 0x80;

/// Inputs up to this size keep every output offset (a reference can be longer than the
/// object it replaces) within u32.
const MAX_INPUT: usize = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// None, True, False, Ellipsis, StopIteration, NULL: never flagged, never shared.
    Singleton,
    /// A scalar, string or bytes: type byte then payload.
    Leaf,
    /// Tuple, list, set, frozenset, dict, code, slice: children follow.
    Container,
    /// TYPE_REF to an earlier flagged object.
    Ref,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Node {
    /// Offset of the type byte.
    pub start: u32,
    /// Offset just past the object, children included.
    pub end: u32,
    /// Equality class; a reference has its target's.
    pub id: u32,
    /// Index of the first node after this one's subtree.
    pub skip_to: u32,
    /// Type code without FLAG_REF.
    pub code: u8,
    pub kind: Kind,
}

/// What identifies one equality class.
#[derive(Clone, Copy, Debug)]
struct Class {
    code: u8,
    leaf: bool,
    /// Payload range in the input (leaf) or key range in `Tree::keys` (container).
    key_start: u32,
    key_len: u32,
    /// The previous class with the same hash.
    next: u32,
}

const NO_CLASS: u32 = u32::MAX;
/// A reserved reference slot whose object is still being read.
const UNFINISHED: u32 = u32::MAX;

/// The type codes that are one byte and a fixed object; their position is their identity.
const SINGLETONS: [u8; 6] = *b"0NFTS.";

#[derive(Clone, Copy, Debug)]
enum Field {
    Int,
    Obj,
    Filename,
    Name,
    Qualname,
    FirstLineNo,
}

use Field::*;

/// Code object fields as `w_complex_object` writes them.
const CODE_3_6: &[Field] = &[
    Int,
    Int,
    Int,
    Int,
    Int, // argcount kwonlyargcount nlocals stacksize flags
    Obj,
    Obj,
    Obj,
    Obj,
    Obj,
    Obj, // code consts names varnames freevars cellvars
    Filename,
    Name,
    FirstLineNo,
    Obj, // lnotab
];
const CODE_3_8: &[Field] = &[
    Int,
    Int,
    Int,
    Int,
    Int,
    Int, // argcount posonlyargcount kwonlyargcount nlocals stacksize flags
    Obj,
    Obj,
    Obj,
    Obj,
    Obj,
    Obj, // code consts names varnames freevars cellvars
    Filename,
    Name,
    FirstLineNo,
    Obj, // lnotab / linetable
];
const CODE_3_11: &[Field] = &[
    Int,
    Int,
    Int,
    Int,
    Int, // argcount posonlyargcount kwonlyargcount stacksize flags
    Obj,
    Obj,
    Obj,
    Obj,
    Obj, // code consts names localsplusnames localspluskinds
    Filename,
    Name,
    Qualname,
    FirstLineNo,
    Obj,
    Obj, // linetable exceptiontable
];

#[derive(Clone, Copy, Debug)]
enum Expect {
    Items(u32),
    DictKey,
    DictValue,
    Code(usize),
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    node: u32,
    expect: Expect,
    /// Start of this container's key in `Tree::pending`.
    base: u32,
    /// Reference slot reserved by FLAG_REF, filled when the container is complete.
    slot: u32,
}

/// A string as marshal stores it: the type code tells ASCII/Latin-1 (`a A z Z`), UTF-8 with
/// surrogates passed through (`u t`) or bytes (`s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    /// The file system bytes this string stands for: Python decodes undecodable path bytes
    /// to lone surrogates U+DC80..U+DCFF (surrogateescape), which marshal writes as the
    /// three bytes ED B2|B3 xx; this undoes that, so the result compares with a real path.
    pub fn fs_bytes(&self) -> Cow<'a, [u8]> {
        let b = self.bytes;
        if !matches!(self.type_code, b'u' | b't') || !b.contains(&0xED) {
            return Cow::Borrowed(b);
        }
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == 0xED && i + 2 < b.len() && matches!(b[i + 1], 0xB2 | 0xB3) {
                let low = ((b[i + 1] as u32 & 0x3F) << 6) | (b[i + 2] as u32 & 0x3F);
                let c = 0xD000 | low;
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

/// The raw facts about one code object, resolved to strings after the walk.
#[derive(Clone, Copy, Debug)]
struct CodeFields {
    offset: u32,
    filename: u32,
    name: u32,
    qualname: u32,
    firstlineno: i32,
}

/// The hash of a class key is already well mixed: the map only needs to use it as is.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The walker's state, kept between calls so its buffers are reused.
#[derive(Default)]
pub(super) struct Tree {
    nodes: Vec<Node>,
    classes: Vec<Class>,
    keys: Vec<u32>,
    /// Hash of a key → the newest class with that hash (older ones chain through `next`).
    index: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    /// Randomly keyed, so crafted input cannot make chains long.
    hasher: RandomState,
    /// Input reference slots → class, in FLAG_REF order.
    refs: Vec<u32>,
    stack: Vec<Frame>,
    /// Children's identities (and code objects' integer fields) of the open containers.
    pending: Vec<u32>,
    codes: Vec<CodeFields>,
    collect_codes: bool,
    layout: &'static [Field],
}

/// Reads from the input, checking every length against what is left.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.data.len() - self.pos {
            return Err(Error::Truncated {
                offset: self.pos,
                needed: n - (self.data.len() - self.pos),
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative 32-bit size that fits in what is left, each element taking at least
    /// `unit` bytes.
    fn size(&mut self, unit: usize) -> Result<usize, Error> {
        let at = self.pos;
        let n = self.u32()? as i32;
        if n < 0 {
            return Err(Error::BadSize {
                offset: at,
                size: n as i64,
            });
        }
        let n = n as usize;
        let left = self.data.len() - self.pos;
        if n.saturating_mul(unit) > left {
            return Err(Error::Truncated {
                offset: self.pos,
                needed: n.saturating_mul(unit) - left,
            });
        }
        Ok(n)
    }
}

impl Tree {
    pub(super) fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub(super) fn id_count(&self) -> usize {
        self.classes.len()
    }

    /// Walk `data` completely; on success `nodes` describes it.
    pub(super) fn parse(
        &mut self,
        data: &[u8],
        version: Version,
        collect_codes: bool,
    ) -> Result<(), Error> {
        if !SUPPORTED.contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        if data.len() > MAX_INPUT {
            return Err(Error::TooLarge { len: data.len() });
        }
        self.nodes.clear();
        self.classes.clear();
        self.keys.clear();
        self.index.clear();
        self.refs.clear();
        self.stack.clear();
        self.pending.clear();
        self.codes.clear();
        self.collect_codes = collect_codes;
        for (i, &code) in SINGLETONS.iter().enumerate() {
            self.classes.push(Class {
                code,
                leaf: true,
                key_start: 0,
                key_len: 0,
                next: NO_CLASS,
            });
            debug_assert_eq!(self.classes.len(), i + 1);
        }

        self.layout = if version >= (3, 11) {
            CODE_3_11
        } else if version >= (3, 8) {
            CODE_3_8
        } else {
            CODE_3_6
        };
        let layout = self.layout;
        let slices = version >= (3, 14);
        let mut cur = Cursor { data, pos: 0 };

        self.read_object(&mut cur, false, slices)?;
        while let Some(top) = self.stack.last_mut() {
            match top.expect {
                Expect::Items(0) => self.finish_container(&cur),
                Expect::Items(n) => {
                    top.expect = Expect::Items(n - 1);
                    self.read_object(&mut cur, false, slices)?;
                }
                Expect::DictKey => {
                    top.expect = Expect::DictValue;
                    if self.read_object(&mut cur, true, slices)? {
                        self.finish_container(&cur);
                    }
                }
                Expect::DictValue => {
                    top.expect = Expect::DictKey;
                    self.read_object(&mut cur, false, slices)?;
                }
                Expect::Code(step) if step == layout.len() => self.finish_container(&cur),
                Expect::Code(step) => {
                    top.expect = Expect::Code(step + 1);
                    match layout[step] {
                        Int | FirstLineNo => {
                            let v = cur.u32()?;
                            self.pending.push(v);
                        }
                        _ => {
                            self.read_object(&mut cur, false, slices)?;
                        }
                    }
                }
            }
        }
        if cur.pos != data.len() {
            return Err(Error::TrailingBytes {
                offset: cur.pos,
                count: data.len() - cur.pos,
            });
        }
        Ok(())
    }

    /// Read one object at the cursor. Scalars are complete on return; a container pushes a
    /// frame that the caller's loop completes. Returns whether the object was NULL (allowed
    /// only where `null_ok`: a dict's end marker).
    fn read_object(
        &mut self,
        cur: &mut Cursor<'_>,
        null_ok: bool,
        slices: bool,
    ) -> Result<bool, Error> {
        let start = cur.pos;
        if self.stack.len() >= MAX_DEPTH {
            return Err(Error::TooDeep { offset: start });
        }
        let byte = cur.byte()?;
        let flagged = byte & FLAG_REF != 0;
        let code = byte & !FLAG_REF;
        let index = self.nodes.len() as u32;
        let mut node = Node {
            start: start as u32,
            end: 0,
            id: 0,
            skip_to: index + 1,
            code,
            kind: Kind::Leaf,
        };

        if let Some(id) = SINGLETONS.iter().position(|&c| c == code) {
            if code == b'0' && !null_ok {
                return Err(Error::Null { offset: start });
            }
            // CPython registers no reference for these, flag or not.
            node.kind = Kind::Singleton;
            node.id = id as u32;
            node.end = cur.pos as u32;
            self.nodes.push(node);
            self.pending.push(id as u32);
            return Ok(code == b'0');
        }

        if code == b'r' {
            let index = cur.u32()?;
            let class = match self.refs.get(index as usize) {
                None => {
                    return Err(Error::BadRef {
                        offset: start,
                        index,
                        registered: self.refs.len(),
                    })
                }
                Some(&UNFINISHED) => {
                    return Err(Error::RecursiveRef {
                        offset: start,
                        index,
                    })
                }
                Some(&class) => class,
            };
            node.kind = Kind::Ref;
            node.id = class;
            node.end = cur.pos as u32;
            self.nodes.push(node);
            self.pending.push(class);
            return Ok(false);
        }

        let slot = if flagged {
            self.refs.push(UNFINISHED);
            (self.refs.len() - 1) as u32
        } else {
            NO_CLASS
        };

        let expect = match code {
            b'i' => Some(cur.take(4).map(|_| ())),
            b'I' | b'g' => Some(cur.take(8).map(|_| ())),
            b'y' => Some(cur.take(16).map(|_| ())),
            b'f' => Some(Self::float_str(cur)),
            b'x' => Some(Self::float_str(cur).and_then(|_| Self::float_str(cur))),
            b'l' => Some(Self::long(cur)),
            b's' | b't' | b'u' | b'a' | b'A' => {
                Some(cur.size(1).and_then(|n| cur.take(n).map(|_| ())))
            }
            b'z' | b'Z' => Some(cur.byte().and_then(|n| cur.take(n as usize).map(|_| ()))),
            _ => None,
        };
        if let Some(read) = expect {
            read?;
            let id = self.intern_leaf(code, cur.data, start + 1, cur.pos);
            node.id = id;
            node.end = cur.pos as u32;
            self.nodes.push(node);
            if slot != NO_CLASS {
                self.refs[slot as usize] = id;
            }
            self.pending.push(id);
            return Ok(false);
        }

        let expect = match code {
            b')' => Expect::Items(cur.byte()? as u32),
            b'(' | b'[' | b'<' | b'>' => Expect::Items(cur.size(1)? as u32),
            b'{' => Expect::DictKey,
            b'c' => Expect::Code(0),
            b':' if slices => Expect::Items(3),
            _ => {
                return Err(Error::UnknownType {
                    offset: start,
                    code,
                })
            }
        };
        node.kind = Kind::Container;
        self.nodes.push(node);
        self.stack.push(Frame {
            node: index,
            expect,
            base: self.pending.len() as u32,
            slot,
        });
        Ok(false)
    }

    /// The old text form of a float: a length byte and that many ASCII characters.
    fn float_str(cur: &mut Cursor<'_>) -> Result<(), Error> {
        let n = cur.byte()?;
        cur.take(n as usize).map(|_| ())
    }

    /// TYPE_LONG: a signed count of 15-bit digits, least significant first. marshal.loads
    /// refuses digits of 2**15 and more and a zero top digit, so such data is an error here
    /// too (and equal values always have equal bytes).
    fn long(cur: &mut Cursor<'_>) -> Result<(), Error> {
        let at = cur.pos;
        let n = cur.u32()? as i32;
        let digits = cur.take((n.unsigned_abs() as usize).saturating_mul(2))?;
        let mut top = 0u16;
        for d in digits.chunks_exact(2) {
            top = u16::from_le_bytes([d[0], d[1]]);
            if top >= 0x8000 {
                return Err(Error::BadLong { offset: at });
            }
        }
        if n != 0 && top == 0 {
            return Err(Error::BadLong { offset: at });
        }
        Ok(())
    }

    fn finish_container(&mut self, cur: &Cursor<'_>) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let node = &self.nodes[frame.node as usize];
        let code = node.code;
        let start = node.start;
        let base = frame.base as usize;
        if code == b'c' && self.collect_codes {
            self.record_code(start, base);
        }
        let id = self.intern_container(code, base);
        self.pending.truncate(base);
        let skip_to = self.nodes.len() as u32;
        let node = &mut self.nodes[frame.node as usize];
        node.id = id;
        node.end = cur.pos as u32;
        node.skip_to = skip_to;
        if frame.slot != NO_CLASS {
            self.refs[frame.slot as usize] = id;
        }
        self.pending.push(id);
    }

    /// Keep what [`CodeInfo`] needs of the code object whose fields (integers and children's
    /// classes, in layout order) are `pending[base..]`.
    fn record_code(&mut self, start: u32, base: usize) {
        let fields = &self.pending[base..];
        let mut info = CodeFields {
            offset: start,
            filename: NO_CLASS,
            name: NO_CLASS,
            qualname: NO_CLASS,
            firstlineno: 0,
        };
        for (field, &value) in self.layout.iter().zip(fields) {
            match field {
                Filename => info.filename = value,
                Name => info.name = value,
                Qualname => info.qualname = value,
                FirstLineNo => info.firstlineno = value as i32,
                Int | Obj => {}
            }
        }
        self.codes.push(info);
    }

    fn hash_leaf(&self, code: u8, payload: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(code);
        h.write(payload);
        h.finish()
    }

    fn intern_leaf(&mut self, code: u8, data: &[u8], from: usize, to: usize) -> u32 {
        let payload = &data[from..to];
        let hash = self.hash_leaf(code, payload);
        let head = self.index.get(&hash).copied().unwrap_or(NO_CLASS);
        let mut c = head;
        while c != NO_CLASS {
            let class = &self.classes[c as usize];
            if class.leaf
                && class.code == code
                && class.key_len as usize == payload.len()
                && &data[class.key_start as usize..(class.key_start + class.key_len) as usize]
                    == payload
            {
                return c;
            }
            c = class.next;
        }
        let id = self.classes.len() as u32;
        self.classes.push(Class {
            code,
            leaf: true,
            key_start: from as u32,
            key_len: payload.len() as u32,
            next: head,
        });
        self.index.insert(hash, id);
        id
    }

    fn intern_container(&mut self, code: u8, base: usize) -> u32 {
        let key = &self.pending[base..];
        let mut h = self.hasher.build_hasher();
        h.write_u8(code);
        h.write_usize(key.len());
        for &k in key {
            h.write_u32(k);
        }
        let hash = h.finish();
        let head = self.index.get(&hash).copied().unwrap_or(NO_CLASS);
        let mut c = head;
        while c != NO_CLASS {
            let class = &self.classes[c as usize];
            if !class.leaf
                && class.code == code
                && class.key_len as usize == key.len()
                && &self.keys[class.key_start as usize..(class.key_start + class.key_len) as usize]
                    == key
            {
                return c;
            }
            c = class.next;
        }
        let id = self.classes.len() as u32;
        let key_start = self.keys.len() as u32;
        self.keys.extend_from_slice(key);
        self.classes.push(Class {
            code,
            leaf: false,
            key_start,
            key_len: key.len() as u32,
            next: head,
        });
        self.index.insert(hash, id);
        id
    }

    /// The code objects found by the last `parse(.., collect_codes = true)`, outermost first.
    pub(super) fn code_infos<'a>(&self, data: &'a [u8]) -> Result<Vec<CodeInfo<'a>>, Error> {
        let string =
            |class: u32, offset: u32, field: &'static str| -> Result<MarshalStr<'a>, Error> {
                let not_a_string = Error::NotAString {
                    offset: offset as usize,
                    field,
                };
                let c = self
                    .classes
                    .get(class as usize)
                    .ok_or(not_a_string.clone())?;
                let prefix = match c.code {
                    b'z' | b'Z' => 1,
                    b'a' | b'A' | b'u' | b't' => 4,
                    _ => return Err(not_a_string),
                };
                if !c.leaf {
                    return Err(not_a_string);
                }
                let from = c.key_start as usize + prefix;
                let to = (c.key_start + c.key_len) as usize;
                Ok(MarshalStr {
                    type_code: c.code,
                    bytes: &data[from..to],
                })
            };
        let mut out = Vec::with_capacity(self.codes.len());
        for f in &self.codes {
            out.push(CodeInfo {
                offset: f.offset as usize,
                filename: string(f.filename, f.offset, "co_filename")?,
                name: string(f.name, f.offset, "co_name")?,
                qualname: if f.qualname == NO_CLASS {
                    None
                } else {
                    Some(string(f.qualname, f.offset, "co_qualname")?)
                },
                firstlineno: f.firstlineno,
            });
        }
        out.sort_by_key(|c| c.offset);
        Ok(out)
    }
}
