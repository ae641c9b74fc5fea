//! The checker's requests and answers (`checker.py`'s header documents them). The framing, the
//! hello and the cursor that reads a frame's fields are the compile worker's, so
//! [`crate::worker::Worker`] starts and speaks to it; only the vocabulary is the checker's own.

use crate::worker::protocol::Cursor;
use crate::worker::ProtocolError;

/// The checker: the compile worker's `framing.py` (imports, framing, hello), then `checker.py`.
pub const SCRIPT: &str = concat!(
    include_str!("../worker/framing.py"),
    include_str!("checker.py")
);

/// A level's length field: no pyc at this level, only compile it.
pub const NO_PYC: u32 = u32::MAX;
/// A level's length field: the same marshal data as the previous level that had some.
pub const SAME_BODY: u32 = u32::MAX - 1;
/// Request flag: no source; the pyc is only loaded and its file names checked.
pub const FLAG_SOURCELESS: u8 = 1;

/// What a level of a request carries.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// The pyc's marshal data (after the header).
    Pyc(&'a [u8]),
    /// No pyc: compile the level only (does the source compile at all?).
    CompileOnly,
}

/// Encode a request: `levels` ascending, each at most once.
pub fn encode(dfile: &[u8], source: Option<&[u8]>, levels: &[(u8, Body)]) -> Vec<u8> {
    let size = 10 + dfile.len() + source.map_or(0, <[u8]>::len);
    let bodies: usize = levels
        .iter()
        .map(|(_, b)| match b {
            Body::Pyc(d) => 4 + d.len(),
            Body::CompileOnly => 4,
        })
        .sum();
    let mut out = Vec::with_capacity(size + bodies);
    out.push(levels.iter().fold(0u8, |m, (l, _)| m | 1 << l));
    out.push(if source.is_none() { FLAG_SOURCELESS } else { 0 });
    out.extend_from_slice(&(dfile.len() as u32).to_le_bytes());
    out.extend_from_slice(dfile);
    let source = source.unwrap_or_default();
    out.extend_from_slice(&(source.len() as u32).to_le_bytes());
    out.extend_from_slice(source);
    let mut previous: Option<&[u8]> = None;
    for (_, body) in levels {
        match body {
            Body::CompileOnly => out.extend_from_slice(&NO_PYC.to_le_bytes()),
            Body::Pyc(d) if previous == Some(*d) => out.extend_from_slice(&SAME_BODY.to_le_bytes()),
            Body::Pyc(d) => {
                out.extend_from_slice(&(d.len() as u32).to_le_bytes());
                out.extend_from_slice(d);
                previous = Some(d);
            }
        }
    }
    out
}

/// The checker's answer for one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The source does not compile (at the first level tried).
    DoesNotCompile {
        line: u32,
        kind: String,
        message: String,
    },
    /// Per requested level, ascending.
    Levels(Vec<Level>),
    /// The checker failed on this request (a bug in it).
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Level {
    CompiledOnly,
    /// `marshal.loads` refused the data: "ExceptionType: message".
    DoesNotLoad(String),
    Loaded(Loaded),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Bit M: the code equals a fresh compile at level M.
    pub matches: u8,
    /// Code objects whose `co_filename` is not the expected path, out of `code_objects`.
    pub wrong_filenames: u32,
    pub code_objects: u32,
    /// The wrong names (a few, as Python's repr).
    pub filename_examples: Vec<String>,
    /// How the code differs from its own level's fresh compile (a few).
    pub differences: Vec<String>,
}

/// Decode an answer to a request of `levels` levels.
pub fn decode(payload: &[u8], levels: usize) -> Result<Answer, ProtocolError> {
    let mut f = Cursor::new(payload, "checker answer");
    let answer = match f.take(1)? {
        b"E" => Answer::DoesNotCompile {
            line: f.u32()?,
            kind: f.string()?,
            message: f.string()?,
        },
        b"X" => Answer::Failed(f.string()?),
        b"K" => {
            let mut out = Vec::with_capacity(levels);
            for _ in 0..levels {
                out.push(match f.u8()? {
                    0 => Level::CompiledOnly,
                    1 => Level::DoesNotLoad(f.string()?),
                    2 => Level::Loaded(Loaded {
                        matches: f.u8()?,
                        wrong_filenames: f.u32()?,
                        code_objects: f.u32()?,
                        filename_examples: f.strings()?,
                        differences: f.strings()?,
                    }),
                    other => return Err(ProtocolError(format!("unknown level status {other}"))),
                });
            }
            Answer::Levels(out)
        }
        other => return Err(ProtocolError(format!("unknown answer tag {other:?}"))),
    };
    if !f.rest().is_empty() {
        return Err(ProtocolError(format!(
            "{} byte(s) after the checker's answer",
            f.rest().len()
        )));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_bodies_are_sent_once() {
        let req = encode(
            b"/m.py",
            Some(b"x = 1\n"),
            &[
                (0, Body::Pyc(b"abc")),
                (1, Body::Pyc(b"abc")),
                (2, Body::CompileOnly),
            ],
        );
        assert_eq!(req[0], 0b111);
        assert_eq!(req[1], 0);
        let tail = &req[2 + 4 + 5 + 4 + 6..];
        let mut want = 3u32.to_le_bytes().to_vec();
        want.extend_from_slice(b"abc");
        want.extend_from_slice(&SAME_BODY.to_le_bytes());
        want.extend_from_slice(&NO_PYC.to_le_bytes());
        assert_eq!(tail, want);
        let sourceless = encode(b"/m.py", None, &[(0, Body::Pyc(b"abc"))]);
        assert_eq!(sourceless[1], FLAG_SOURCELESS);
    }

    #[test]
    fn decodes_answers() {
        let mut k = b"K\x00\x01".to_vec();
        k.extend_from_slice(&3u32.to_le_bytes());
        k.extend_from_slice(b"EOF");
        k.extend_from_slice(b"\x02\x05");
        for n in [1u32, 7, 1] {
            k.extend_from_slice(&n.to_le_bytes());
        }
        k.extend_from_slice(&2u32.to_le_bytes());
        k.extend_from_slice(b"f:");
        k.extend_from_slice(&0u32.to_le_bytes());
        let a = decode(&k, 3).unwrap();
        let Answer::Levels(levels) = a else {
            panic!("{a:?}")
        };
        assert_eq!(levels[0], Level::CompiledOnly);
        assert_eq!(levels[1], Level::DoesNotLoad("EOF".into()));
        let Level::Loaded(l) = &levels[2] else {
            panic!()
        };
        assert_eq!((l.matches, l.wrong_filenames, l.code_objects), (5, 1, 7));
        assert_eq!(l.filename_examples, vec!["f:".to_string()]);
        assert!(decode(&k[..k.len() - 1], 3).is_err());
        assert!(decode(&k, 2).is_err(), "bytes left over");
        let mut huge = b"K\x02\x00".to_vec();
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge, 1).is_err());
    }
}
