//! Checking one module: read its source and pycs, judge the headers and the links in Rust
//! ([`prepare`]), have the checker compare the code with a fresh compile (see `protocol`), and
//! turn its answer into problems ([`finish`]).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::fstat;

use crate::fsroot::{display_in_root, in_root_bytes, is_regular, open_file_nofollow, Root};

use crate::discover::interpreter::Interpreter;
use crate::python::marshal;
use crate::python::pyc::{mtime_field, PycFormat, PYCACHE};
use crate::python::{Levels, PyVersion};
use crate::worker::{Hello, Launch, Worker};

use super::protocol::{self, Answer, Body, Level, Loaded};
use super::report::{Kind, Problem};
use super::scan::{Module, ModuleKey};

/// The interpreter that checks one version's pycs.
pub struct Target {
    pub version: PyVersion,
    pub launch: Launch,
    pub hello: Hello,
    /// The checker that proved the interpreter, until a thread of the pool takes it.
    first: Mutex<Option<Worker>>,
}

impl Target {
    pub fn new(version: PyVersion, interpreter: Interpreter) -> Target {
        let Interpreter {
            launch,
            first_worker,
        } = interpreter;
        Target {
            version,
            launch,
            hello: first_worker.hello.clone(),
            first: Mutex::new(Some(first_worker)),
        }
    }

    /// The checker that proved the interpreter, the first time it is asked for.
    pub fn take_first(&self) -> Option<Worker> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn format(&self) -> &PycFormat {
        &self.hello.format
    }
}

/// One unit of work: a module (a source and its pycs of one tag), or a sourceless pyc.
#[derive(Clone, Debug)]
pub enum Job {
    Module {
        version: PyVersion,
        key: ModuleKey,
        module: Module,
        /// Levels that must have a pyc.
        required: Levels,
        /// Why they must.
        rule: Rule,
    },
    Sourceless {
        version: PyVersion,
        rel: PathBuf,
    },
}

/// Why a source must have a pyc at a level, for the message when it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `-o` asked for the level.
    Optimize,
    /// The default: level 0, and every level some other pyc in the root has.
    Complete,
}

impl Job {
    pub fn version(&self) -> PyVersion {
        match self {
            Job::Module { version, .. } | Job::Sourceless { version, .. } => *version,
        }
    }

    /// For scheduling: largest first.
    pub fn size(&self) -> u64 {
        match self {
            Job::Module { module, .. } => module.size,
            Job::Sourceless { .. } => 0,
        }
    }
}

/// What checking one job found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub problems: Vec<Problem>,
    /// The source was compiled.
    pub compiled: bool,
    /// `path:line: Type: message` if the source does not compile.
    pub does_not_compile: Option<String>,
}

/// A pyc that was read.
#[derive(Debug)]
struct PycFile {
    level: u8,
    name: OsString,
    rel: PathBuf,
    inode: (u64, u64),
    /// Its header fits the source: its code goes to the checker.
    sent: bool,
}

/// A job read and judged as far as Rust can, waiting for the checker.
#[derive(Debug)]
pub struct Prepared {
    pub payload: Vec<u8>,
    /// Levels in the request.
    pub levels: usize,
    state: State,
}

impl Prepared {
    /// The file the job is about, as the installed system sees it.
    pub fn shown(&self) -> &str {
        &self.state.shown
    }
}

#[derive(Debug)]
struct State {
    shown: String,
    dfile: String,
    files: Vec<PycFile>,
    /// Levels in the request, ascending, with whether a pyc was sent for each.
    requested: Vec<(u8, bool)>,
    /// Required levels with no pyc: (level, root-relative path it should have).
    missing: Vec<(u8, PathBuf)>,
    rule: Rule,
    problems: Vec<Problem>,
}

pub enum Step {
    Done(Outcome),
    Check(Prepared),
}

/// Read a job's files and judge what needs no interpreter: headers, freshness, links.
pub fn prepare(root: &Root, job: &Job, target: &Target, link: bool) -> Step {
    match job {
        Job::Module {
            key,
            module,
            required,
            rule,
            ..
        } => prepare_module(root, key, module, (*required, *rule), target, link),
        Job::Sourceless { rel, .. } => prepare_sourceless(root, rel, target),
    }
}

fn unreadable(rel: &Path, what: &str, e: impl std::fmt::Display) -> Problem {
    Problem::new(
        Kind::Unreadable,
        display_in_root(rel),
        format!("{what}: {e}"),
    )
}

fn done(problems: Vec<Problem>) -> Step {
    Step::Done(Outcome {
        problems,
        ..Outcome::default()
    })
}

fn prepare_module(
    root: &Root,
    key: &ModuleKey,
    module: &Module,
    (required, rule): (Levels, Rule),
    target: &Target,
    link: bool,
) -> Step {
    let source_rel = key.source();
    let (source, st) = match read_source(root, key, module) {
        Ok(read) => read,
        Err(problems) => return done(problems),
    };
    // The pycs, read whole, each judged by its header.
    let mut problems = Vec::new();
    let pycs = match read_pycs(root, key, module, target, (&st, &source), &mut problems) {
        Ok(pycs) => pycs,
        Err(problem) => return done(vec![problem]),
    };
    // Identical levels must be one file (pyclink and compileall --hardlink-dupes link them).
    if link {
        problems.extend(missed_links(&pycs));
    }
    let missing: Vec<(u8, PathBuf)> = required
        .iter()
        .filter(|&l| !module.present[l as usize])
        .map(|l| (l, key.pyc_path(l)))
        .collect();
    let mut levels: Vec<(u8, Body)> = pycs
        .iter()
        .filter(|p| p.file.sent)
        .map(|p| (p.file.level, Body::Pyc(&p.data[p.header_len..])))
        .collect();
    // Missing levels only need to know whether the source compiles: one compile tells.
    if levels.is_empty() {
        if let Some(&(l, _)) = missing.first() {
            levels.push((l, Body::CompileOnly));
        }
    }
    if levels.is_empty() {
        return done(problems);
    }
    let dfile = in_root_bytes(&source_rel);
    let payload = protocol::encode(&dfile, Some(&source), &levels);
    let requested = levels
        .iter()
        .map(|(l, b)| (*l, matches!(b, Body::Pyc(_))))
        .collect();
    Step::Check(Prepared {
        payload,
        levels: levels.len(),
        state: State {
            shown: display_in_root(&source_rel),
            dfile: String::from_utf8_lossy(&dfile).into_owned(),
            files: pycs.into_iter().map(|p| p.file).collect(),
            requested,
            missing,
            rule,
            problems,
        },
    })
}

/// The module's source, as import sees it (a symlink resolved inside the root), and its
/// status; else the problems (none for a symlink out of the root with no pyc: pyclink compiles
/// no such source either, its target is not in this package).
fn read_source(
    root: &Root,
    key: &ModuleKey,
    module: &Module,
) -> Result<(Vec<u8>, rustix::fs::Stat), Vec<Problem>> {
    let source_rel = key.source();
    let any_pyc = module.present.iter().any(|&p| p);
    let file = if module.symlink {
        root.open_resolved_in_root(&source_rel)
    } else {
        root.open_dir(&key.dir).and_then(|d| {
            let name = source_rel.file_name().unwrap_or_default();
            open_file_nofollow(&d, name)
        })
    };
    let mut file = match file {
        Ok(f) => f,
        Err(e) if module.symlink && e.kind() == std::io::ErrorKind::NotFound && !any_pyc => {
            return Err(Vec::new())
        }
        Err(e) if module.symlink && e.kind() == std::io::ErrorKind::NotFound => {
            return Err(vec![Problem::new(
                Kind::Unreadable,
                display_in_root(&source_rel),
                "a symlink whose target is not in the root: its pycs cannot be checked",
            )])
        }
        Err(e) => return Err(vec![unreadable(&source_rel, "cannot open the source", e)]),
    };
    let st = match fstat(&file) {
        Ok(st) if is_regular(&st) => st,
        Ok(_) => {
            return Err(vec![Problem::new(
                Kind::Unreadable,
                display_in_root(&source_rel),
                "the source is not a regular file",
            )])
        }
        Err(e) => return Err(vec![unreadable(&source_rel, "cannot stat the source", e)]),
    };
    let mut source = Vec::with_capacity(st.st_size as usize);
    if let Err(e) = file.read_to_end(&mut source) {
        return Err(vec![unreadable(&source_rel, "cannot read the source", e)]);
    }
    Ok((source, st))
}

/// A pyc read whole, with its header judged.
struct ReadPyc {
    file: PycFile,
    data: Vec<u8>,
    /// The header's length when it fits the source (0 when not sent).
    header_len: usize,
}

/// The module's pycs, each judged by its header against the source (`st`, `source`): the
/// problems go to `problems`; `Err` when `__pycache__` cannot be opened.
fn read_pycs(
    root: &Root,
    key: &ModuleKey,
    module: &Module,
    target: &Target,
    (st, source): (&rustix::fs::Stat, &[u8]),
    problems: &mut Vec<Problem>,
) -> Result<Vec<ReadPyc>, Problem> {
    let mut pycs = Vec::new();
    if !module.present.iter().any(|&p| p) {
        return Ok(pycs);
    }
    let cache_rel = key.dir.join(PYCACHE);
    let cache = root
        .open_dir(&cache_rel)
        .map_err(|e| unreadable(&cache_rel, "cannot open", e))?;
    for level in (0..3u8).filter(|&l| module.present[l as usize]) {
        let name = key.pyc_name(level);
        let rel = key.pyc_path(level);
        let (inode, data) = match read_whole(&cache, &name) {
            Ok(r) => r,
            Err(e) => {
                problems.push(unreadable(&rel, "cannot read", e));
                continue;
            }
        };
        let header = check_header(target, &data, st, source)
            .and_then(|len| check_marshal(&data).map(|()| len));
        let (sent, header_len) = match header {
            Ok(len) => (true, len),
            Err((kind, message)) => {
                problems.push(Problem::new(kind, display_in_root(&rel), message));
                (false, 0)
            }
        };
        let file = PycFile {
            level,
            name,
            rel,
            inode,
            sent,
        };
        pycs.push(ReadPyc {
            file,
            data,
            header_len,
        });
    }
    Ok(pycs)
}

/// The file `name` in `dir`, never through a symlink: its (device, inode) and its bytes.
fn read_whole(
    dir: &impl std::os::fd::AsFd,
    name: &std::ffi::OsStr,
) -> std::io::Result<((u64, u64), Vec<u8>)> {
    let mut f = open_file_nofollow(dir, name)?;
    let st = fstat(&f)?;
    let mut data = Vec::with_capacity(st.st_size as usize);
    f.read_to_end(&mut data)?;
    #[allow(clippy::unnecessary_cast)]
    Ok(((st.st_dev as u64, st.st_ino as u64), data))
}

/// The levels identical to a lower one that are not a hardlink of it.
fn missed_links(pycs: &[ReadPyc]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for j in 1..pycs.len() {
        if let Some(i) = (0..j).find(|&i| pycs[i].data == pycs[j].data) {
            if pycs[i].file.inode != pycs[j].file.inode {
                problems.push(Problem::new(
                    Kind::MissedLink,
                    display_in_root(&pycs[j].file.rel),
                    format!(
                        "identical to {} but not a hardlink of it",
                        crate::escape::shown(&pycs[i].file.name)
                    ),
                ));
            }
        }
    }
    problems
}

/// The marshal data after the header, walked as `pyclink normalize` walks it: the problem if it
/// is not one object as marshal writes it. `marshal.loads` ignores bytes after the object, so
/// only this walk sees them; a format the table does not know is left to the checker.
fn check_marshal(data: &[u8]) -> Result<(), (Kind, String)> {
    let Ok((format, header)) = marshal::pyc_layout(data) else {
        return Ok(());
    };
    match marshal::Normalizer::new().normalize(&data[header..], format) {
        Ok(_) => Ok(()),
        Err(e @ marshal::Error::Truncated { .. }) => Err((
            Kind::Partial,
            format!("truncated: its marshal data ends early ({e})"),
        )),
        Err(e @ marshal::Error::TrailingBytes { .. }) => Err((
            Kind::BadMarshal,
            format!(
                "{e}: marshal.loads ignores them, but no compiler writes them (pyclink \
                 normalize refuses this file)"
            ),
        )),
        Err(e) => Err((
            Kind::BadMarshal,
            format!("its marshal data does not parse: {e}"),
        )),
    }
}

/// The header of `data` against the source: `Ok(header length)`, or the problem.
// st_mtime is not i64 on every target.
#[allow(clippy::unnecessary_cast)]
fn check_header(
    target: &Target,
    data: &[u8],
    st: &rustix::fs::Stat,
    source: &[u8],
) -> Result<usize, (Kind, String)> {
    let format = target.format();
    let len = format.header_len();
    if data.len() < len {
        return Err((
            Kind::Partial,
            format!(
                "truncated: {} bytes, shorter than a {len}-byte pyc header",
                data.len()
            ),
        ));
    }
    check_magic(target, data)?;
    let u32_at =
        |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    let flags = if len == 16 { u32_at(4) } else { 0 };
    let stamp = len - 8;
    match flags {
        0 => {
            let (mtime, size) = (u32_at(stamp), u32_at(stamp + 4));
            let want_mtime = mtime_field(st.st_mtime as i64, st.st_mtime_nsec as i64);
            let want_size = st.st_size as u64 as u32;
            if (mtime, size) != (want_mtime, want_size) {
                return Err((
                    Kind::Stale,
                    format!(
                        "its header records the source's mtime {mtime} and size {size}; \
                         the source has mtime {want_mtime} and size {want_size}"
                    ),
                ));
            }
        }
        1 | 3 => {
            let Some(hash) = format.source_hash else {
                return Err((Kind::BadHeader, "hash-based, before PEP 552".into()));
            };
            let want = hash.compute(format.magic, source);
            if data[stamp..stamp + 8] != want {
                let mode = if flags == 3 { "checked" } else { "unchecked" };
                return Err((
                    Kind::Stale,
                    format!(
                        "its header records source hash {} ({mode}-hash); the source's is {}",
                        hex(&data[stamp..stamp + 8]),
                        hex(&want)
                    ),
                ));
            }
        }
        other => {
            return Err((
                Kind::BadHeader,
                format!("flags {other:#x} in its header (PEP 552 defines 0, 1 and 3)"),
            ))
        }
    }
    Ok(len)
}

fn check_magic(target: &Target, data: &[u8]) -> Result<(), (Kind, String)> {
    let format = target.format();
    if data[..4] == format.magic {
        return Ok(());
    }
    let magic = [data[0], data[1], data[2], data[3]];
    let whose = match crate::python::table::by_magic(magic) {
        Some(f) => format!(", a {} magic number", f.version),
        None => String::new(),
    };
    let (x, y, z) = target.hello.version;
    Err((
        Kind::BadHeader,
        format!(
            "magic number {} is not {}'s ({}, {x}.{y}.{z}){whose}",
            hex(&magic),
            target.version,
            hex(&format.magic),
        ),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn prepare_sourceless(root: &Root, rel: &Path, target: &Target) -> Step {
    let (dir, name) = (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or_default(),
    );
    let read = root.open_dir(dir).and_then(|d| read_whole(&d, name));
    let (inode, data) = match read {
        Ok(r) => r,
        Err(e) => return done(vec![unreadable(rel, "cannot read", e)]),
    };
    let len = target.format().header_len();
    let fail =
        |kind, message: String| done(vec![Problem::new(kind, display_in_root(rel), message)]);
    if data.len() < len {
        return fail(
            Kind::Partial,
            format!(
                "truncated: {} bytes, shorter than a {len}-byte pyc header",
                data.len()
            ),
        );
    }
    if let Err((kind, message)) = check_magic(target, &data) {
        return fail(kind, message);
    }
    if let Err((kind, message)) = check_marshal(&data) {
        return fail(kind, message);
    }
    if len == 16 {
        let flags = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
        if !matches!(flags, 0 | 1 | 3) {
            return fail(
                Kind::BadHeader,
                format!("flags {flags:#x} in its header (PEP 552 defines 0, 1 and 3)"),
            );
        }
    }
    // A sourceless pyc stands for the source it was compiled from (compileall -b): its code
    // reports that path.
    let dfile = in_root_bytes(&rel.with_extension("py"));
    let payload = protocol::encode(&dfile, None, &[(0, Body::Pyc(&data[len..]))]);
    Step::Check(Prepared {
        payload,
        levels: 1,
        state: State {
            shown: display_in_root(rel),
            dfile: String::from_utf8_lossy(&dfile).into_owned(),
            files: vec![PycFile {
                level: 0,
                name: name.to_os_string(),
                rel: rel.to_path_buf(),
                inode,
                sent: true,
            }],
            requested: vec![(0, true)],
            missing: Vec::new(),
            rule: Rule::Optimize,
            problems: Vec::new(),
        },
    })
}

/// Turn the checker's answer (or why there is none) into the job's outcome.
pub fn finish(prepared: Prepared, answer: Result<Answer, String>, sourceless: bool) -> Outcome {
    let mut state = prepared.state;
    let mut outcome = Outcome {
        compiled: !sourceless,
        ..Outcome::default()
    };
    let levels = match answer {
        Err(why) => {
            state.problems.push(Problem::new(
                Kind::CheckFailed,
                state.shown,
                format!("could not be checked: {why}"),
            ));
            outcome.problems = state.problems;
            return outcome;
        }
        Ok(Answer::Failed(why)) => {
            state.problems.push(Problem::new(
                Kind::CheckFailed,
                state.shown,
                format!("the checker failed on it: {why}"),
            ));
            outcome.problems = state.problems;
            return outcome;
        }
        Ok(Answer::DoesNotCompile {
            line,
            kind,
            message,
        }) => {
            for f in state.files.iter().filter(|f| f.sent) {
                state.problems.push(Problem::new(
                    Kind::CodeMismatch,
                    display_in_root(&f.rel),
                    format!(
                        "the source does not compile ({kind} at line {line}: {message}), so \
                         this pyc cannot be its compilation"
                    ),
                ));
            }
            outcome.does_not_compile = Some(format!("{}:{line}: {kind}: {message}", state.shown));
            outcome.problems = state.problems;
            return outcome;
        }
        Ok(Answer::Levels(levels)) => levels,
    };
    for (&(level, sent), answer) in state.requested.iter().zip(&levels) {
        let Some(file) = state.files.iter().find(|f| f.level == level && sent) else {
            continue;
        };
        let found = level_problems(level, file, answer, &state, sourceless);
        state.problems.extend(found);
    }
    let missing = std::mem::take(&mut state.missing);
    state.problems.extend(missing_problems(missing, state.rule));
    outcome.problems = state.problems;
    outcome
}

/// What the checker's answer for the pyc `file` (of `level`) shows to be wrong with it.
fn level_problems(
    level: u8,
    file: &PycFile,
    answer: &Level,
    state: &State,
    sourceless: bool,
) -> Vec<Problem> {
    let path = display_in_root(&file.rel);
    let loaded = match answer {
        Level::Loaded(l) => l,
        Level::CompiledOnly => return Vec::new(),
        Level::DoesNotLoad(why) if why.starts_with("EOFError") => {
            return vec![Problem::new(
                Kind::Partial,
                path,
                format!("truncated: its marshal data ends early ({why})"),
            )];
        }
        Level::DoesNotLoad(why) => {
            return vec![match why.strip_prefix("NotCode: ") {
                Some(what) => Problem::new(Kind::CodeMismatch, path, what),
                None => Problem::new(
                    Kind::BadMarshal,
                    path,
                    format!("its marshal data does not load ({why})"),
                ),
            }];
        }
    };
    let mut problems = Vec::new();
    if loaded.wrong_filenames > 0 {
        problems.push(Problem::new(
            Kind::WrongFilename,
            path.clone(),
            format!(
                "co_filename is {} in {} of its {} code objects; it must be '{}', \
                 the source's path inside the root",
                loaded.filename_examples.join(" or "),
                loaded.wrong_filenames,
                loaded.code_objects,
                state.dfile,
            ),
        ));
    }
    if !sourceless && loaded.matches & (1 << level) == 0 {
        problems.push(code_problem(level, file, loaded, &state.files, path));
    }
    problems
}

/// The required levels with no pyc, and why each is required.
fn missing_problems(missing: Vec<(u8, PathBuf)>, rule: Rule) -> Vec<Problem> {
    missing
        .into_iter()
        .map(|(level, rel)| {
            let why = match (rule, level) {
                (Rule::Optimize, _) => String::new(),
                (Rule::Complete, 0) => {
                    "; without -o every source of the Python trees needs level 0: was the root \
                     byte-compiled?"
                        .into()
                }
                (Rule::Complete, l) => format!("; other pycs in the root have level {l}"),
            };
            Problem::new(
                Kind::Missing,
                display_in_root(&rel),
                format!("no pyc for optimize={level} (the source compiles{why})"),
            )
        })
        .collect()
}

/// The code of `file` (level `level`) is not its level's: a wrong hardlink if it is the code
/// of a level it shares its inode with, else a mismatch.
fn code_problem(
    level: u8,
    file: &PycFile,
    loaded: &Loaded,
    files: &[PycFile],
    path: String,
) -> Problem {
    let partner = files.iter().find(|o| {
        o.level != level && o.inode == file.inode && loaded.matches & (1 << o.level) != 0
    });
    if let Some(o) = partner {
        return Problem::new(
            Kind::WrongLink,
            path,
            format!(
                "a hardlink of {}, but optimize={level} and optimize={} compile differently \
                 (this file holds optimize={}'s code)",
                crate::escape::shown(&o.name),
                o.level,
                o.level
            ),
        );
    }
    let others: Vec<String> = (0..3u8)
        .filter(|&m| m != level && loaded.matches & (1 << m) != 0)
        .map(|m| format!("optimize={m}"))
        .collect();
    let mut message = format!(
        "its code differs from a fresh compile at optimize={level}: {}",
        loaded.differences.join("; ")
    );
    if !others.is_empty() {
        message += &format!(" (it is the code of {})", others.join(" and "));
    }
    Problem::new(Kind::CodeMismatch, path, message)
}
