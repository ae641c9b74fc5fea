//! The wire protocol between pyclink and `worker.py`, whose header documents it: frames,
//! the hello, requests and responses. Encoding and decoding live here; `super` only moves frames
//! over pipes. The constants below are also in worker.py, and a test ties the two files together.

use std::ops::Range;

use crate::python::predict::IdenticalLevels;
use crate::python::pyc::{PycFormat, SourceHash};
use crate::python::{Implementation, Levels, PyVersion};

/// A level's length field meaning "the same bytes as the previous requested level".
pub const SAME_AS_PREVIOUS: u32 = u32::MAX;

/// The hint bit asking for the source to be compiled in a fresh fork of the worker, which then
/// serves the next request from another fresh fork (see `python::table::Determinism`).
pub const FRESH_PROCESS: u8 = 4;

/// The hint bit saying that pyclink normalizes the bytes (see `marshal`): the worker may then
/// compile a source without string literals before it has loaded compileall's modules (see
/// `_load_compileall_modules` in worker.py).
pub const NORMALIZED: u8 = 8;

/// What the hello hashes with `_imp.source_hash` to tell SipHash-1-3 from 2-4.
pub const HASH_PROBE_INPUT: &[u8] = b"pyclink";

/// The pipe size each side asks for, and up to which worker.py writes a frame in one call.
pub const PIPE_SIZE: usize = 1 << 20;

/// Responses larger than this are a protocol error, not an allocation: a real answer is a few
/// times its source, and a 32-bit pyclink could not hold much more anyway.
pub const MAX_FRAME: usize = 1 << 30;
const _: () = assert!(MAX_FRAME < u32::MAX as usize && MAX_FRAME <= isize::MAX as usize);

/// The hello of an interpreter too old for worker.py: this prefix, then its version.
pub const UNSUPPORTED_PREFIX: &[u8] = b"unsupported=";

/// The protocol was broken: a frame or field that cannot be what worker.py sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

impl From<&str> for ProtocolError {
    fn from(s: &str) -> Self {
        ProtocolError(s.to_string())
    }
}

/// What an interpreter says about itself when it starts.
#[derive(Clone, Debug)]
pub struct Hello {
    pub version: (u32, u32, u32),
    pub implementation: String,
    pub executable: String,
    /// `sys.version`: release, build date and compiler, on one line.
    pub build: String,
    /// `sys.abiflags` has a `t`: a free-threaded build.
    pub free_threaded: bool,
    pub format: PycFormat,
}

impl Hello {
    pub fn py_version(&self) -> PyVersion {
        let implementation = match self.implementation.as_str() {
            "pypy" => Implementation::PyPy,
            _ => Implementation::CPython,
        };
        PyVersion {
            implementation,
            major: self.version.0,
            minor: self.version.1,
            free_threaded: self.free_threaded,
        }
    }

    pub(crate) fn parse(payload: &[u8]) -> Result<Hello, ProtocolError> {
        let text = String::from_utf8_lossy(payload);
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .ok_or_else(|| ProtocolError(format!("hello lacks '{key}'")))
        };
        let nums: Vec<u32> = get("version")?
            .split('.')
            .filter_map(|n| n.parse().ok())
            .collect();
        let [major, minor, micro] = nums[..] else {
            return Err("hello has a bad version".into());
        };
        let magic = hex_bytes::<4>(get("magic")?).ok_or("hello has a bad magic number")?;
        let probe = get("source_hash_probe")?;
        let source_hash = if probe.is_empty() {
            None
        } else {
            let probe = hex_bytes::<8>(probe).ok_or("hello has a bad hash probe")?;
            Some(
                SourceHash::identify(magic, HASH_PROBE_INPUT, probe)
                    .ok_or("the interpreter's source hash is neither SipHash-1-3 nor 2-4")?,
            )
        };
        Ok(Hello {
            version: (major, minor, micro),
            implementation: get("implementation")?.to_string(),
            executable: get("executable")?.to_string(),
            build: get("build")?.to_string(),
            // Only worker scripts of this pyclink speak to it, but a hello without the line
            // (an interpreter with no sys.abiflags says "") is a GIL build.
            free_threaded: get("abiflags").is_ok_and(|f| f.contains('t')),
            format: PycFormat {
                magic,
                cache_tag: get("cache_tag")?.to_string(),
                source_hash,
            },
        })
    }
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What to compile: one source at some levels.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub source: &'a [u8],
    /// The path the code will report (`co_filename`): `/` + the path inside the root.
    pub dfile: &'a [u8],
    pub levels: Levels,
    /// Levels certainly identical to the one below (see `predict`).
    pub same: IdenticalLevels,
    /// Compile it in a fresh fork of the worker.
    pub fresh_process: bool,
    /// pyclink brings the bytes to the normal form (FLAG_REF only where referenced again).
    pub normalized: bool,
}

impl Request<'_> {
    /// The hints byte: which levels are certainly identical, [`FRESH_PROCESS`], [`NORMALIZED`].
    pub fn hints(&self) -> u8 {
        self.same.bits()
            | if self.fresh_process { FRESH_PROCESS } else { 0 }
            | if self.normalized { NORMALIZED } else { 0 }
    }
}

/// The answer for one source.
#[derive(Debug)]
pub enum Compiled {
    Code(Code),
    /// The source does not compile (SyntaxError, ValueError for NUL bytes, RecursionError...).
    Error(CompileError),
}

/// Marshalled code per requested level (ascending), kept in the response buffer it came in:
/// a large module is held once, not copied per level.
#[derive(Debug)]
pub struct Code {
    payload: Vec<u8>,
    bodies: Vec<std::ops::Range<usize>>,
    /// How many levels the interpreter really compiled (the others repeat a previous one).
    pub compiled: usize,
    pub warnings: Vec<CompileWarning>,
}

impl Code {
    pub fn bodies(&self) -> impl Iterator<Item = &[u8]> {
        self.bodies.iter().map(|r| &self.payload[r.clone()])
    }

    /// The response as the worker sent it (what the cache keeps).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

#[derive(Clone, Debug)]
pub struct CompileWarning {
    pub line: u32,
    pub category: String,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct CompileError {
    pub line: u32,
    pub kind: String,
    pub message: String,
}

/// The frame that carries `req`, split where the source starts: the head (length, level mask,
/// hints, dfile) and the source itself, which is sent as it is, never copied.
pub fn encode_request<'a>(req: &Request<'a>) -> Result<(Vec<u8>, &'a [u8]), ProtocolError> {
    let (source, dfile) = (req.source, req.dfile);
    let len = 2 + 4 + dfile.len() + source.len();
    let frame_len = u32::try_from(len)
        .ok()
        .filter(|&n| (n as usize) < MAX_FRAME)
        .ok_or("source larger than 1 GiB")?;
    let mut head = Vec::with_capacity(10 + dfile.len());
    head.extend_from_slice(&frame_len.to_le_bytes());
    head.push(req.levels.bits());
    head.push(req.hints());
    head.extend_from_slice(&(dfile.len() as u32).to_le_bytes());
    head.extend_from_slice(dfile);
    Ok((head, source))
}

/// A cursor over a frame's payload, reading fields as `framing.py` writes them: u8, u32
/// little-endian, u32 length + bytes. The compile worker's responses and `pyclink verify`'s
/// checker answers are both read with it (one framing, two vocabularies).
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
    /// What is read, for the message when it ends early ("response", "checker answer").
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(payload: &'a [u8], what: &'static str) -> Cursor<'a> {
        Cursor {
            rest: payload,
            what,
        }
    }

    /// What is left unread.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(ProtocolError(format!("truncated {}", self.what)));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub(crate) fn string(&mut self) -> Result<String, ProtocolError> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    /// A u32 count, then that many strings.
    pub(crate) fn strings(&mut self) -> Result<Vec<String>, ProtocolError> {
        let n = self.u32()?;
        // Never trust a count for an allocation: each string needs at least 4 bytes.
        if n as usize > self.rest.len() / 4 {
            return Err("a string count larger than the answer".into());
        }
        (0..n).map(|_| self.string()).collect()
    }
}

/// Decode a response payload (from a worker or the cache) for `nlevels` requested levels.
pub fn parse_response(payload: Vec<u8>, nlevels: usize) -> Result<Compiled, ProtocolError> {
    let mut f = Cursor::new(&payload, "response");
    match f.take(1)? {
        b"K" => {
            let mut bodies: Vec<Range<usize>> = Vec::with_capacity(nlevels);
            for _ in 0..nlevels {
                if f.rest().get(..4) == Some(&SAME_AS_PREVIOUS.to_le_bytes()) {
                    f.take(4)?;
                    let prev = bodies
                        .last()
                        .ok_or("the first level cannot repeat a previous one")?;
                    bodies.push(prev.clone());
                    continue;
                }
                let body = f.bytes()?;
                let start = body.as_ptr() as usize - payload.as_ptr() as usize;
                bodies.push(start..start + body.len());
            }
            let n = f.u32()?;
            let mut warnings = Vec::new();
            for _ in 0..n {
                warnings.push(CompileWarning {
                    line: f.u32()?,
                    category: f.string()?,
                    message: f.string()?,
                });
            }
            let compiled = bodies
                .iter()
                .enumerate()
                .filter(|(i, r)| *i == 0 || bodies[i - 1] != **r)
                .count();
            Ok(Compiled::Code(Code {
                compiled,
                payload,
                bodies,
                warnings,
            }))
        }
        b"E" => Ok(Compiled::Error(CompileError {
            line: f.u32()?,
            kind: f.string()?,
            message: f.string()?,
        })),
        other => Err(ProtocolError(format!("unknown response tag {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hello() {
        let h = Hello::parse(
            b"version=3.11.7\nimplementation=cpython\ncache_tag=cpython-311\nmagic=a70d0d0a\n\
              source_hash_probe=897d4970bd8e8f62\npid=1\nexecutable=/usr/bin/python3.11\nbuild=3.11.7 (main)",
        )
        .unwrap();
        assert_eq!(h.py_version(), PyVersion::cpython(3, 11));
        assert_eq!(h.format.cache_tag, "cpython-311");
        assert_eq!(h.format.source_hash, Some(SourceHash::Sip13));
        let old = Hello::parse(
            b"version=3.6.15\nimplementation=cpython\ncache_tag=cpython-36\nmagic=330d0d0a\nsource_hash_probe=\nexecutable=x\nbuild=3.6.15",
        )
        .unwrap();
        assert_eq!(old.format.header_len(), 12);
        assert!(Hello::parse(b"version=3\n").is_err());
    }

    #[test]
    fn parses_responses() {
        let mut ok = b"K".to_vec();
        for body in [&b"abc"[..], b"de"] {
            ok.extend_from_slice(&(body.len() as u32).to_le_bytes());
            ok.extend_from_slice(body);
        }
        ok.extend_from_slice(&1u32.to_le_bytes());
        ok.extend_from_slice(&7u32.to_le_bytes());
        for s in ["SyntaxWarning", "bad escape"] {
            ok.extend_from_slice(&(s.len() as u32).to_le_bytes());
            ok.extend_from_slice(s.as_bytes());
        }
        match parse_response(ok.clone(), 2).unwrap() {
            Compiled::Code(code) => {
                assert_eq!(code.bodies().collect::<Vec<_>>(), vec![&b"abc"[..], b"de"]);
                assert_eq!(code.warnings[0].line, 7);
                assert_eq!(code.warnings[0].message, "bad escape");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_response(ok[..5].to_vec(), 2).is_err());
        assert!(parse_response(b"X".to_vec(), 1).is_err());
    }

    /// The constants worker.py and this file share, read from the worker script itself
    /// (framing.py + worker.py): if one side changes, this fails until the other does.
    #[test]
    fn worker_py_speaks_this_protocol() {
        let py = super::super::SCRIPT;
        let assignment = |name: &str| {
            py.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("worker.py assigns no {name}"))
                .trim()
                .to_string()
        };
        let int = |text: &str| -> u64 {
            if let Some(hex) = text.strip_prefix("0x") {
                u64::from_str_radix(hex, 16).unwrap()
            } else if let Some((a, b)) = text.split_once(" << ") {
                a.parse::<u64>().unwrap() << b.parse::<u32>().unwrap()
            } else {
                text.parse().unwrap()
            }
        };
        assert_eq!(
            int(&assignment("SAME_AS_PREVIOUS")),
            SAME_AS_PREVIOUS as u64
        );
        assert_eq!(int(&assignment("_JOIN_LIMIT")), PIPE_SIZE as u64);
        assert_eq!(int(&assignment("FRESH_PROCESS")), FRESH_PROCESS as u64);
        assert_eq!(int(&assignment("NORMALIZED")), NORMALIZED as u64);
        let probe = format!(
            "_imp.source_hash(raw_magic, b'{}')",
            std::str::from_utf8(HASH_PROBE_INPUT).unwrap()
        );
        assert!(
            py.contains(&probe),
            "worker.py hashes another probe than {probe}"
        );
        let prefix = std::str::from_utf8(UNSUPPORTED_PREFIX).unwrap();
        assert!(
            py.contains(&format!("('{prefix}%d.%d.%d'")),
            "worker.py's old-interpreter hello does not start with {prefix}"
        );
        // The response tags parse_response knows, and the hello keys Hello::parse reads.
        for tag in ["out = [b'K']", "return [b'E',"] {
            assert!(py.contains(tag), "worker.py lacks {tag}");
        }
        for key in [
            "version",
            "implementation",
            "cache_tag",
            "magic",
            "source_hash_probe",
            "executable",
            "build",
            "abiflags",
        ] {
            assert!(
                py.contains(&format!("'{key}=")),
                "worker.py's hello lacks {key}"
            );
        }
    }
}
