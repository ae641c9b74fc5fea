//! One pass over marshal data that checks it, puts every object in its *class* (a small
//! integer shared by exactly the objects that are equal in the normal form's sense: same type
//! code and contents, references seen through) and, when asked, writes the normal form as it
//! goes.
//!
//! Classes are hash-consed bottom-up: a scalar's key is its type code and payload bytes, a
//! container's key its type code and its children's classes (and, for code objects, the
//! integer fields), so comparing two subtrees costs their number of children, not their size.
//!
//! Writing: every byte of the input is copied in order, except that type bytes lose
//! FLAG_REF and an object of a class already written becomes a 5-byte TYPE_REF holding the
//! class for now (the caller numbers and patches them once all are known). A container's
//! class is known only at its end: if it was written before, the output is cut back to where
//! the container started and the reference written instead. Nothing in the cut part was the
//! first of its class, since an equal container came earlier with all its parts.

use std::collections::hash_map::Entry;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::ops::Range;

use super::code::CodeFields;
use super::{CodeLayout, Error, Format, MAX_DEPTH};

pub(super) const FLAG_REF: u8 = 0x80;

/// No class, no slot, not written.
pub(super) const NONE: u32 = u32::MAX;

/// Up to this size, every output offset fits in u32 (a reference can be longer than what it
/// replaces: an empty string is 2 bytes).
const MAX_INPUT: usize = 1 << 30;

/// The type codes of the fixed objects (NULL, None, False, True, StopIteration, Ellipsis),
/// never flagged and never shared; their position here is their class.
const SINGLETONS: [u8; 6] = *b"0NFTS.";

/// One field of a code object as `w_complex_object` writes it.
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

#[rustfmt::skip]
const CODE_3_6: &[Field] = &[
    Int, Int, Int, Int, Int, // argcount kwonlyargcount nlocals stacksize flags
    Obj, Obj, Obj, Obj, Obj, Obj, // code consts names varnames freevars cellvars
    Filename, Name, FirstLineNo, Obj, // lnotab
];
#[rustfmt::skip]
const CODE_3_8: &[Field] = &[
    Int, Int, Int, Int, Int, Int, // argcount posonlyargcount kwonlyargcount nlocals stacksize flags
    Obj, Obj, Obj, Obj, Obj, Obj, // code consts names varnames freevars cellvars
    Filename, Name, FirstLineNo, Obj, // lnotab (3.10: linetable)
];
#[rustfmt::skip]
const CODE_PYPY_3_11: &[Field] = &[
    Int, Int, Int, Int, Int, Int, // argcount posonlyargcount kwonlyargcount nlocals stacksize flags
    Obj, Obj, Obj, Obj, Obj, Obj, // code consts names varnames freevars cellvars
    Filename, Name, Qualname, FirstLineNo, Obj, Obj, // linetable exceptiontable
];
#[rustfmt::skip]
const CODE_3_11: &[Field] = &[
    Int, Int, Int, Int, Int, // argcount posonlyargcount kwonlyargcount stacksize flags
    Obj, Obj, Obj, Obj, Obj, // code consts names localsplusnames localspluskinds
    Filename, Name, Qualname, FirstLineNo, Obj, Obj, // linetable exceptiontable
];

/// What an open container reads next.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Items(u32),
    DictKey,
    DictValue,
    Code(usize),
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    expect: Expect,
    code: u8,
    /// Offset of the container's type byte in the input.
    start: u32,
    /// Where the container starts in the output.
    out_start: u32,
    /// Start of this container's key in `Walker::pending`.
    base: u32,
    /// Reference slot reserved by FLAG_REF, filled when the container is complete.
    slot: u32,
}

/// What identifies one class.
#[derive(Clone, Copy, Debug)]
struct Class {
    code: u8,
    leaf: bool,
    /// Payload range in the input (leaf) or key range in `Walker::keys` (container).
    key_start: u32,
    key_len: u32,
    /// The previous class with the same hash.
    next: u32,
}

/// Class-key hashes are already mixed: the map uses them as they are.
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
pub(super) struct Walker {
    classes: Vec<Class>,
    keys: Vec<u32>,
    /// Hash of a key → the newest class with that hash (older ones chain through `next`).
    index: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    /// Random, so that crafted input cannot make chains long.
    seed: u64,
    /// Input reference slots → class, in FLAG_REF order; NONE while the object is read.
    refs: Vec<u32>,
    stack: Vec<Frame>,
    /// The children's classes (and code objects' integer fields) of the open containers.
    pending: Vec<u32>,
    layout: &'static [Field],
    slices: bool,
    frozendicts: bool,

    collect_codes: bool,
    codes: Vec<CodeFields>,

    emit: bool,
    out: Vec<u8>,
    /// Per class: where its first copy starts in `out`, or NONE.
    first: Vec<u32>,
    /// Offsets in `out` of the references written, in order.
    patches: Vec<u32>,
    /// Input consumed into `out` so far.
    copied: usize,
}

/// Reads from the input, checking every length against what is left.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(Error::Truncated {
                offset: self.pos,
                needed: n - left,
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn skip(&mut self, n: usize) -> Result<(), Error> {
        self.take(n).map(|_| ())
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A 32-bit size that is not negative and fits in what is left (every element takes at
    /// least a byte), so nothing is ever sized from a length field alone.
    fn size(&mut self) -> Result<usize, Error> {
        let at = self.pos;
        let n = self.u32()? as i32;
        if n < 0 {
            return Err(Error::BadSize {
                offset: at,
                size: n as i64,
            });
        }
        let left = self.data.len() - self.pos;
        if n as usize > left {
            return Err(Error::Truncated {
                offset: self.pos,
                needed: n as usize - left,
            });
        }
        Ok(n as usize)
    }

    /// The old text form of a float: a length byte and that many characters.
    fn float_str(&mut self) -> Result<(), Error> {
        let n = self.byte()?;
        self.skip(n as usize)
    }

    /// TYPE_LONG: a signed count of 15-bit digits, least significant first. marshal.loads
    /// refuses digits of 2**15 and more and a zero top digit, so such data is an error here
    /// too, and equal values always have equal bytes.
    fn long(&mut self) -> Result<(), Error> {
        let at = self.pos;
        let n = self.u32()? as i32;
        let digits = self.take((n.unsigned_abs() as usize).saturating_mul(2))?;
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
}

impl Walker {
    /// The normal form written by the last walk with `emit`: references still hold classes.
    pub(super) fn output(&mut self) -> (&mut Vec<u8>, &[u32], &[u32]) {
        (&mut self.out, &self.first, &self.patches)
    }

    pub(super) fn class_count(&self) -> usize {
        self.classes.len()
    }

    pub(super) fn codes(&self) -> &[CodeFields] {
        &self.codes
    }

    /// A string class's type code and the range of its characters in the input.
    pub(super) fn string(&self, class: u32) -> Option<(u8, Range<usize>)> {
        let c = self.classes.get(class as usize)?;
        let prefix = match c.code {
            b'z' | b'Z' => 1,
            b'a' | b'A' | b'u' | b't' => 4,
            _ => return None,
        };
        let start = c.key_start as usize;
        (c.leaf && c.key_len >= prefix)
            .then(|| (c.code, start + prefix as usize..start + c.key_len as usize))
    }

    /// Walk all of `data`. With `emit`, write its normal form (see the module documentation);
    /// with `collect_codes`, note every code object's strings.
    pub(super) fn walk(
        &mut self,
        data: &[u8],
        format: Format,
        emit: bool,
        collect_codes: bool,
    ) -> Result<(), Error> {
        if data.len() > MAX_INPUT {
            return Err(Error::TooLarge { len: data.len() });
        }
        self.reset(format, emit, collect_codes);
        if emit {
            self.out.reserve(data.len() + data.len() / 8);
        }
        let mut cur = Cursor { data, pos: 0 };
        self.object(&mut cur, false)?;
        while let Some(top) = self.stack.last_mut() {
            match top.expect {
                Expect::Items(0) => self.finish(&cur),
                Expect::Items(n) => {
                    top.expect = Expect::Items(n - 1);
                    self.object(&mut cur, false)?;
                }
                Expect::DictKey => {
                    top.expect = Expect::DictValue;
                    if self.object(&mut cur, true)? {
                        self.finish(&cur);
                    }
                }
                Expect::DictValue => {
                    top.expect = Expect::DictKey;
                    self.object(&mut cur, false)?;
                }
                Expect::Code(step) => match self.layout.get(step) {
                    None => self.finish(&cur),
                    Some(field) => {
                        top.expect = Expect::Code(step + 1);
                        if let Int | FirstLineNo = field {
                            let v = cur.u32()?;
                            self.pending.push(v);
                        } else {
                            self.object(&mut cur, false)?;
                        }
                    }
                },
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

    fn reset(&mut self, format: Format, emit: bool, collect_codes: bool) {
        if self.seed == 0 {
            self.seed = RandomState::new().hash_one(0x5eed_u64) | 1;
        }
        self.classes.clear();
        self.keys.clear();
        self.index.clear();
        self.refs.clear();
        self.stack.clear();
        self.pending.clear();
        self.codes.clear();
        self.out.clear();
        self.first.clear();
        self.patches.clear();
        self.copied = 0;
        self.emit = emit;
        self.collect_codes = collect_codes;
        self.slices = format.slices;
        self.frozendicts = format.frozendicts;
        self.layout = match format.layout {
            CodeLayout::Py36 => CODE_3_6,
            CodeLayout::Py38 => CODE_3_8,
            CodeLayout::Py311 => CODE_3_11,
            CodeLayout::PyPy311 => CODE_PYPY_3_11,
        };
        for code in SINGLETONS {
            self.new_class(code, true, 0, 0, NONE);
        }
    }

    /// Read one object at the cursor. A scalar is complete on return; a container pushes a
    /// frame that the loop in [`Self::walk`] completes. Returns whether it was NULL, which
    /// is allowed only where `null_ok` (a dict's end).
    fn object(&mut self, cur: &mut Cursor<'_>, null_ok: bool) -> Result<bool, Error> {
        let start = cur.pos;
        if self.stack.len() >= MAX_DEPTH {
            return Err(Error::TooDeep { offset: start });
        }
        let byte = cur.byte()?;
        let code = byte & !FLAG_REF;
        let container = match code {
            b'0' if !null_ok => return Err(Error::Null { offset: start }),
            b'0' | b'N' | b'F' | b'T' | b'S' | b'.' => {
                self.singleton(cur.data, code, start);
                return Ok(code == b'0');
            }
            b'r' => {
                self.reference(cur, start)?;
                return Ok(false);
            }
            b'i' => cur.skip(4).map(|_| None)?,
            b'I' | b'g' => cur.skip(8).map(|_| None)?,
            b'y' => cur.skip(16).map(|_| None)?,
            b'f' => cur.float_str().map(|_| None)?,
            b'x' => cur
                .float_str()
                .and_then(|_| cur.float_str())
                .map(|_| None)?,
            b'l' => cur.long().map(|_| None)?,
            b's' | b't' | b'u' | b'a' | b'A' => {
                let n = cur.size()?;
                cur.skip(n).map(|_| None)?
            }
            b'z' | b'Z' => {
                let n = cur.byte()?;
                cur.skip(n as usize).map(|_| None)?
            }
            b')' => Some(Expect::Items(cur.byte()? as u32)),
            b'(' | b'[' | b'<' | b'>' => Some(Expect::Items(cur.size()? as u32)),
            b'{' => Some(Expect::DictKey),
            b'}' if self.frozendicts => Some(Expect::DictKey),
            b'c' => Some(Expect::Code(0)),
            b':' if self.slices => Some(Expect::Items(3)),
            _ => {
                return Err(Error::UnknownType {
                    offset: start,
                    code,
                })
            }
        };
        // Slots are numbered in the order objects start; a container's children come later.
        let slot = if byte & FLAG_REF != 0 {
            self.refs.push(NONE);
            (self.refs.len() - 1) as u32
        } else {
            NONE
        };
        let Some(expect) = container else {
            let class = self.leaf_class(code, cur.data, start + 1, cur.pos);
            if slot != NONE {
                self.refs[slot as usize] = class;
            }
            self.pending.push(class);
            if self.emit {
                self.copy_to(cur.data, start);
                if self.first[class as usize] == NONE {
                    self.first[class as usize] = self.out.len() as u32;
                    self.out.push(code);
                    self.out.extend_from_slice(&cur.data[start + 1..cur.pos]);
                } else {
                    self.write_ref(class);
                }
                self.copied = cur.pos;
            }
            return Ok(false);
        };
        let mut out_start = 0;
        if self.emit {
            self.copy_to(cur.data, start);
            out_start = self.out.len() as u32;
            self.out.push(code);
            self.copied = start + 1;
        }
        self.stack.push(Frame {
            expect,
            code,
            start: start as u32,
            out_start,
            base: self.pending.len() as u32,
            slot,
        });
        Ok(false)
    }

    /// CPython registers no reference for the fixed objects, flag or not.
    fn singleton(&mut self, data: &[u8], code: u8, start: usize) {
        let class = match code {
            b'0' => 0,
            b'N' => 1,
            b'F' => 2,
            b'T' => 3,
            b'S' => 4,
            _ => 5,
        };
        self.pending.push(class);
        if self.emit {
            self.copy_to(data, start);
            self.out.push(code);
            self.copied = start + 1;
        }
    }

    fn reference(&mut self, cur: &mut Cursor<'_>, start: usize) -> Result<(), Error> {
        let index = cur.u32()?;
        let class = match self.refs.get(index as usize) {
            None => {
                return Err(Error::BadRef {
                    offset: start,
                    index,
                    registered: self.refs.len(),
                })
            }
            Some(&NONE) => {
                return Err(Error::RecursiveRef {
                    offset: start,
                    index,
                })
            }
            Some(&class) => class,
        };
        self.pending.push(class);
        if self.emit {
            self.copy_to(cur.data, start);
            // The target, or an object equal to it, was complete before: it has been written.
            self.write_ref(class);
            self.copied = cur.pos;
        }
        Ok(())
    }

    /// Close the innermost container, which ends at the cursor.
    fn finish(&mut self, cur: &Cursor<'_>) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let base = frame.base as usize;
        if frame.code == b'c' && self.collect_codes {
            self.record_code(frame.start, base);
        }
        let class = self.container_class(frame.code, base);
        self.pending.truncate(base);
        self.pending.push(class);
        if frame.slot != NONE {
            self.refs[frame.slot as usize] = class;
        }
        if self.emit {
            self.copy_to(cur.data, cur.pos);
            if self.first[class as usize] == NONE {
                self.first[class as usize] = frame.out_start;
            } else {
                self.out.truncate(frame.out_start as usize);
                while self.patches.last().is_some_and(|&p| p >= frame.out_start) {
                    self.patches.pop();
                }
                self.write_ref(class);
            }
        }
    }

    fn record_code(&mut self, start: u32, base: usize) {
        let mut info = CodeFields {
            offset: start,
            filename: NONE,
            name: NONE,
            qualname: None,
            firstlineno: 0,
        };
        for (field, &value) in self.layout.iter().zip(&self.pending[base..]) {
            match field {
                Filename => info.filename = value,
                Name => info.name = value,
                Qualname => info.qualname = Some(value),
                FirstLineNo => info.firstlineno = value as i32,
                Int | Obj => {}
            }
        }
        self.codes.push(info);
    }

    /// Copy the input not yet copied up to `upto`: the length fields and integer fields of
    /// containers, which sit between their children.
    fn copy_to(&mut self, data: &[u8], upto: usize) {
        self.out.extend_from_slice(&data[self.copied..upto]);
        self.copied = upto;
    }

    fn write_ref(&mut self, class: u32) {
        self.patches.push(self.out.len() as u32);
        self.out.push(b'r');
        self.out.extend_from_slice(&class.to_le_bytes());
    }

    fn new_class(&mut self, code: u8, leaf: bool, key_start: u32, key_len: u32, next: u32) -> u32 {
        let id = self.classes.len() as u32;
        self.classes.push(Class {
            code,
            leaf,
            key_start,
            key_len,
            next,
        });
        self.first.push(NONE);
        id
    }

    fn leaf_class(&mut self, code: u8, data: &[u8], from: usize, to: usize) -> u32 {
        let payload = &data[from..to];
        let hash = hash_bytes(self.seed, code, payload);
        let classes = &self.classes;
        let found = |mut c: u32| {
            while c != NONE {
                let class = &classes[c as usize];
                let range = class.key_start as usize..(class.key_start + class.key_len) as usize;
                if class.leaf && class.code == code && data[range] == *payload {
                    return Some(c);
                }
                c = class.next;
            }
            None
        };
        let next = self.classes.len() as u32;
        let head = match self.index.entry(hash) {
            Entry::Occupied(mut e) => match found(*e.get()) {
                Some(c) => return c,
                None => std::mem::replace(e.get_mut(), next),
            },
            Entry::Vacant(e) => {
                e.insert(next);
                NONE
            }
        };
        self.new_class(code, true, from as u32, payload.len() as u32, head)
    }

    fn container_class(&mut self, code: u8, base: usize) -> u32 {
        let key = &self.pending[base..];
        let hash = hash_words(self.seed, code, key);
        let (classes, keys) = (&self.classes, &self.keys);
        let found = |mut c: u32| {
            while c != NONE {
                let class = &classes[c as usize];
                let range = class.key_start as usize..(class.key_start + class.key_len) as usize;
                if !class.leaf && class.code == code && keys[range] == *key {
                    return Some(c);
                }
                c = class.next;
            }
            None
        };
        let next = self.classes.len() as u32;
        let head = match self.index.entry(hash) {
            Entry::Occupied(mut e) => match found(*e.get()) {
                Some(c) => return c,
                None => std::mem::replace(e.get_mut(), next),
            },
            Entry::Vacant(e) => {
                e.insert(next);
                NONE
            }
        };
        let key_start = self.keys.len() as u32;
        let key_len = key.len() as u32;
        self.keys.extend_from_slice(&self.pending[base..]);
        self.new_class(code, false, key_start, key_len, head)
    }
}

/// 64x64 → 128-bit multiply, halves folded: the mixing step of fast keyed hashes (foldhash,
/// wyhash).
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

const K1: u64 = 0x243f_6a88_85a3_08d3;
const K2: u64 = 0x1319_8a2e_0370_7344;

/// A class key's hash: seeded, eight bytes per multiply. It only finds candidates, which are
/// then compared in full, so its quality affects speed, never the result.
fn hash_bytes(seed: u64, code: u8, bytes: &[u8]) -> u64 {
    let mut h = seed ^ (code as u64) ^ ((bytes.len() as u64) << 8);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = fold(h ^ w, K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = fold(h ^ u64::from_le_bytes(w), K1);
    }
    fold(h, K2)
}

fn hash_words(seed: u64, code: u8, words: &[u32]) -> u64 {
    let mut h = seed ^ (code as u64) ^ ((words.len() as u64) << 8) ^ K2;
    let mut pairs = words.chunks_exact(2);
    for p in &mut pairs {
        h = fold(h ^ (p[0] as u64 | (p[1] as u64) << 32), K1);
    }
    if let [last] = pairs.remainder() {
        h = fold(h ^ *last as u64, K1);
    }
    fold(h, K2)
}
