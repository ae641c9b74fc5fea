//! A second, deliberately naive implementation of the normal form, to check the real one:
//! read the data into a tree (references resolved by sharing the target), key every object
//! by its fully expanded bytes (no flags, no references), and write it the way add-det does.
//! Quadratic in nesting depth and only for valid data written by CPython: fine for tests.

use pyclink::python::marshal::{CodeLayout, Format};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

pub enum Obj {
    Single(u8),
    Leaf(u8, Vec<u8>),
    Node(u8, Vec<Part>),
}

pub enum Part {
    Raw(Vec<u8>),
    Child(Rc<Obj>),
}

struct Reader<'a> {
    d: &'a [u8],
    pos: usize,
    refs: Vec<Option<Rc<Obj>>>,
    format: Format,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let v = self.d[self.pos..self.pos + n].to_vec();
        self.pos += n;
        v
    }

    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn read(&mut self) -> Rc<Obj> {
        let byte = self.d[self.pos];
        self.pos += 1;
        let code = byte & 0x7f;
        if b"0NFTS.".contains(&code) {
            return Rc::new(Obj::Single(code));
        }
        if code == b'r' {
            let n = self.u32() as usize;
            return self.refs[n]
                .clone()
                .expect("reference to a finished object");
        }
        let slot = (byte & 0x80 != 0).then(|| {
            self.refs.push(None);
            self.refs.len() - 1
        });
        let leaf_len = match code {
            b'i' => Some(4),
            b'g' | b'I' => Some(8),
            b'f' => Some(1 + self.d[self.pos] as usize),
            b'x' => {
                let real = 1 + self.d[self.pos] as usize;
                Some(real + 1 + self.d[self.pos + real] as usize)
            }
            b'y' => Some(16),
            b'l' => {
                let n = self.u32() as i32;
                self.pos -= 4;
                Some(4 + 2 * n.unsigned_abs() as usize)
            }
            b's' | b't' | b'u' | b'a' | b'A' => {
                let n = self.u32() as usize;
                self.pos -= 4;
                Some(4 + n)
            }
            b'z' | b'Z' => Some(1 + self.d[self.pos] as usize),
            _ => None,
        };
        let obj = match leaf_len {
            Some(n) => Obj::Leaf(code, self.take(n)),
            None => {
                let mut parts = Vec::new();
                match code {
                    b')' => {
                        let n = self.take(1);
                        let count = n[0];
                        parts.push(Part::Raw(n));
                        for _ in 0..count {
                            parts.push(Part::Child(self.read()));
                        }
                    }
                    b'(' | b'[' | b'<' | b'>' => {
                        let count = self.u32();
                        parts.push(Part::Raw(count.to_le_bytes().to_vec()));
                        for _ in 0..count {
                            parts.push(Part::Child(self.read()));
                        }
                    }
                    b':' if self.format.slices => {
                        for _ in 0..3 {
                            parts.push(Part::Child(self.read()));
                        }
                    }
                    b'{' | b'}' if code == b'{' || self.format.frozendicts => loop {
                        let key = self.read();
                        let end = matches!(*key, Obj::Single(b'0'));
                        parts.push(Part::Child(key));
                        if end {
                            break;
                        }
                        parts.push(Part::Child(self.read()));
                    },
                    b'c' => {
                        // true: a 4-byte integer field, false: an object.
                        let layout: &[bool] = match self.format.layout {
                            CodeLayout::Py311 => &[
                                true, true, true, true, true, false, false, false, false, false,
                                false, false, false, true, false, false,
                            ],
                            CodeLayout::Py38 => &[
                                true, true, true, true, true, true, false, false, false, false,
                                false, false, false, false, true, false,
                            ],
                            CodeLayout::PyPy311 => &[
                                true, true, true, true, true, true, false, false, false, false,
                                false, false, false, false, false, true, false, false,
                            ],
                            CodeLayout::Py36 => &[
                                true, true, true, true, true, false, false, false, false, false,
                                false, false, false, true, false,
                            ],
                        };
                        for &int in layout {
                            parts.push(if int {
                                Part::Raw(self.take(4))
                            } else {
                                Part::Child(self.read())
                            });
                        }
                    }
                    _ => panic!("oracle: type code {code:#x} at {}", self.pos - 1),
                }
                Obj::Node(code, parts)
            }
        };
        let obj = Rc::new(obj);
        if let Some(slot) = slot {
            self.refs[slot] = Some(obj.clone());
        }
        obj
    }
}

pub fn read(data: &[u8], format: Format) -> Rc<Obj> {
    let mut r = Reader {
        d: data,
        pos: 0,
        refs: Vec::new(),
        format,
    };
    let obj = r.read();
    assert_eq!(r.pos, data.len(), "oracle: trailing bytes");
    obj
}

/// The object written out in full: no FLAG_REF, no references.
pub fn expand(obj: &Obj) -> Vec<u8> {
    let mut out = Vec::new();
    expand_into(obj, &mut out);
    out
}

fn expand_into(obj: &Obj, out: &mut Vec<u8>) {
    match obj {
        Obj::Single(c) => out.push(*c),
        Obj::Leaf(c, payload) => {
            out.push(*c);
            out.extend_from_slice(payload);
        }
        Obj::Node(c, parts) => {
            out.push(*c);
            for p in parts {
                match p {
                    Part::Raw(b) => out.extend_from_slice(b),
                    Part::Child(o) => expand_into(o, out),
                }
            }
        }
    }
}

#[derive(Default)]
struct Writer {
    out: Vec<u8>,
    seen: HashMap<Vec<u8>, usize>,
    refs: Vec<(usize, usize)>,
    referenced: BTreeSet<usize>,
}

impl Writer {
    fn write(&mut self, obj: &Obj) {
        if let Obj::Single(c) = obj {
            self.out.push(*c);
            return;
        }
        let key = expand(obj);
        if let Some(&at) = self.seen.get(&key) {
            self.referenced.insert(at);
            self.refs.push((self.out.len(), at));
            self.out.extend_from_slice(&[b'r', 0, 0, 0, 0]);
            return;
        }
        let at = self.out.len();
        match obj {
            Obj::Single(_) => unreachable!(),
            Obj::Leaf(c, payload) => {
                self.out.push(*c);
                self.out.extend_from_slice(payload);
            }
            Obj::Node(c, parts) => {
                self.out.push(*c);
                for p in parts {
                    match p {
                        Part::Raw(b) => self.out.extend_from_slice(b),
                        Part::Child(o) => self.write(o),
                    }
                }
            }
        }
        self.seen.insert(key, at);
    }
}

/// The normal form, computed the slow and obvious way.
pub fn normalize(data: &[u8], format: Format) -> Vec<u8> {
    let mut w = Writer::default();
    w.write(&read(data, format));
    let number: HashMap<usize, u32> = w
        .referenced
        .iter()
        .enumerate()
        .map(|(i, &at)| (at, i as u32))
        .collect();
    for &at in &w.referenced {
        w.out[at] |= 0x80;
    }
    for &(pos, at) in &w.refs {
        w.out[pos + 1..pos + 5].copy_from_slice(&number[&at].to_le_bytes());
    }
    w.out
}
