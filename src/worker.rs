//! One compile worker: a real interpreter running `worker.py`, spoken to over its stdin/stdout.
//! The protocol is documented at the top of `worker.py`. Every exchange has a deadline, so a
//! hung interpreter is detected; a dead one shows up as EOF and its exit status is reported.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};

use crate::predict::Same;
use crate::pyc::{PycFormat, SourceHash};
use crate::settings::Levels;
use crate::version::{Implementation, PyVersion};

pub const SCRIPT: &str = include_str!("worker.py");

/// How to start an interpreter: the program and the complete environment it gets.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub env: Vec<(OsString, OsString)>,
}

impl Launch {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        // Not -I: it would ignore PYTHONHASHSEED, and frozenset constants would be written in
        // a random order. The environment is cleared instead, which -E/-I exist to approximate.
        cmd.args(["-s", "-S", "-c", SCRIPT])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a Ctrl-C in the terminal reaches pyclink, which stops the
            // workers itself, instead of every worker printing a KeyboardInterrupt traceback.
            .process_group(0);
        // SAFETY: only an async-signal-safe prctl between fork and exec.
        unsafe {
            // If pyclink itself is killed (kill -9), the worker goes too.
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        cmd
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
        }
    }

    fn parse(payload: &[u8]) -> Result<Hello, String> {
        let text = String::from_utf8_lossy(payload);
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .ok_or_else(|| format!("hello lacks '{key}'"))
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
                SourceHash::identify(magic, probe)
                    .ok_or("the interpreter's source hash is neither SipHash-1-3 nor 2-4")?,
            )
        };
        Ok(Hello {
            version: (major, minor, micro),
            implementation: get("implementation")?.to_string(),
            executable: get("executable")?.to_string(),
            build: get("build")?.to_string(),
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
    pub same: Same,
    /// The source may have a non-ASCII name: compiling it may leave a latin-1 character
    /// interned in the worker, which then compiles later sources that it could affect afresh.
    pub non_ascii_names: bool,
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

/// Why a worker could not answer.
#[derive(Debug)]
pub enum Failure {
    Died(String),
    TimedOut(Duration),
    Protocol(String),
    Start(io::Error),
    /// The interpreter is older than pyclink's worker needs (Python 2, or 3 before 3.6).
    Unsupported(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Died(how) => write!(f, "the worker {how}"),
            Failure::TimedOut(t) => {
                write!(f, "the worker did not answer within {}s", t.as_secs_f64())
            }
            Failure::Protocol(what) => write!(f, "the worker broke the protocol: {what}"),
            Failure::Start(e) => write!(f, "cannot start: {e}"),
            Failure::Unsupported(version) => write!(
                f,
                "it is Python {version}; pyclink compiles for Python 3.6 and later (CPython, PyPy)"
            ),
        }
    }
}

pub struct Worker {
    child: Child,
    /// `None` once closed (shutting down).
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    pub hello: Hello,
    /// The deadline of the request sent and not yet answered.
    in_flight: Option<Instant>,
}

/// Request hint bit: the source may have a non-ASCII name (see worker.py).
const NON_ASCII_NAMES: u8 = 0x80;

/// A level's length field meaning "the same bytes as the previous requested level".
const SAME_AS_PREVIOUS: u32 = u32::MAX;

/// The pipe buffer asked for in each direction.
const PIPE_SIZE: usize = 1 << 20;

/// Responses larger than this are a protocol error, not an allocation: a real answer is a few
/// times its source, and a 32-bit pyclink could not hold much more anyway.
const MAX_FRAME: usize = 1 << 30;

impl Worker {
    /// Start the interpreter and read its hello (within `timeout`).
    pub fn start(launch: &Launch, timeout: Duration) -> Result<Worker, Failure> {
        let mut child = spawn(launch.command()).map_err(Failure::Start)?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        for fd in [stdin.as_fd(), stdout.as_fd()] {
            let flags = fcntl_getfl(fd).map_err(|e| Failure::Start(e.into()))?;
            fcntl_setfl(fd, flags | OFlags::NONBLOCK).map_err(|e| Failure::Start(e.into()))?;
            // Most requests and answers then fit the pipe whole, and each side wakes once per
            // message. Only a hint: the system's limit (pipe-max-size) may refuse it.
            let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_SIZE);
        }
        crate::cleanup::register_worker(child.id());
        let mut w = Worker {
            child,
            stdin: Some(stdin),
            stdout,
            hello: placeholder_hello(),
            in_flight: None,
        };
        let deadline = Instant::now() + timeout;
        let payload = w.read_frame(deadline, timeout)?;
        if let Some(version) = payload.strip_prefix(b"unsupported=") {
            return Err(Failure::Unsupported(
                String::from_utf8_lossy(version).into_owned(),
            ));
        }
        w.hello = Hello::parse(&payload).map_err(Failure::Protocol)?;
        Ok(w)
    }

    /// Compile `source` as `dfile` at `levels`.
    /// Compile one source. The levels `req.same` says are identical are compiled once (the
    /// worker may still compile them all, see worker.py).
    pub fn compile(&mut self, req: &Request, timeout: Duration) -> Result<Compiled, Failure> {
        let payload = self.exchange(req, timeout)?;
        parse_response(payload, req.levels.len()).map_err(Failure::Protocol)
    }

    /// Send one request and return the raw response payload (see [`parse_response`]).
    pub fn exchange(&mut self, req: &Request, timeout: Duration) -> Result<Vec<u8>, Failure> {
        self.send(req, timeout)?;
        self.recv(timeout)
    }

    /// Send one request (one at a time); [`Worker::recv`] returns its answer. In between, the
    /// worker compiles and the caller is free.
    pub fn send(&mut self, req: &Request, timeout: Duration) -> Result<(), Failure> {
        if self.in_flight.is_some() {
            return Err(Failure::Protocol("a request is already in flight".into()));
        }
        let (source, dfile, levels) = (req.source, req.dfile, req.levels);
        let deadline = Instant::now() + timeout;
        let len = 2 + 4 + dfile.len() + source.len();
        let frame_len =
            u32::try_from(len).map_err(|_| Failure::Protocol("source larger than 4 GiB".into()))?;
        let mut head = Vec::with_capacity(10 + dfile.len());
        head.extend_from_slice(&frame_len.to_le_bytes());
        head.push(levels.bits());
        let hint = if req.non_ascii_names {
            NON_ASCII_NAMES
        } else {
            0
        };
        head.push(req.same.bits() | hint);
        head.extend_from_slice(&(dfile.len() as u32).to_le_bytes());
        head.extend_from_slice(dfile);
        self.write_all(&head, source, deadline, timeout)?;
        self.in_flight = Some(deadline);
        Ok(())
    }

    /// The raw response payload (see [`parse_response`]) to the request sent, within
    /// `timeout` of sending it.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, Failure> {
        let deadline = self
            .in_flight
            .take()
            .ok_or_else(|| Failure::Protocol("no request in flight".into()))?;
        self.read_frame(deadline, timeout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Write `head` then `body`, together where the pipe has room: the worker then wakes
    /// once per request, not once per part.
    fn write_all(
        &mut self,
        mut head: &[u8],
        mut body: &[u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), Failure> {
        while !head.is_empty() || !body.is_empty() {
            let Some(stdin) = self.stdin.as_mut() else {
                return Err(self.death());
            };
            match stdin.write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(body)]) {
                Ok(n) if n < head.len() => head = &head[n..],
                Ok(n) => {
                    body = &body[n - head.len()..];
                    head = &[];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_ready(true, deadline, timeout)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(self.death()),
            }
        }
        Ok(())
    }

    fn read_exact(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stdout.read(&mut buf[filled..]) {
                Ok(0) => return Err(self.death()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_ready(false, deadline, timeout)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(self.death()),
            }
        }
        Ok(())
    }

    fn read_frame(&mut self, deadline: Instant, timeout: Duration) -> Result<Vec<u8>, Failure> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len, deadline, timeout)?;
        let len = u32::from_le_bytes(len) as usize;
        if len >= MAX_FRAME {
            return Err(Failure::Protocol(format!("frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload, deadline, timeout)?;
        Ok(payload)
    }

    fn wait_ready(
        &mut self,
        write: bool,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::TimedOut(timeout));
        }
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        let events = if write { PollFlags::OUT } else { PollFlags::IN };
        let result = if write {
            match &self.stdin {
                Some(stdin) => poll(&mut [PollFd::new(stdin, events)], Some(&ts)),
                None => return Err(Failure::Protocol("stdin is closed".into())),
            }
        } else {
            poll(&mut [PollFd::new(&self.stdout, events)], Some(&ts))
        };
        match result {
            Ok(0) => Err(Failure::TimedOut(timeout)),
            Ok(_) => Ok(()),
            Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(Failure::Protocol(format!("poll: {e}"))),
        }
    }

    /// The pipe closed: reap the child and say how it ended.
    fn death(&mut self) -> Failure {
        kill_group(self.child.id());
        match self.child.wait() {
            Ok(status) => Failure::Died(describe_exit(status)),
            Err(e) => Failure::Died(format!("vanished ({e})")),
        }
    }
}

impl Worker {
    /// End a worker that failed (hung, broke the protocol): the whole process group goes.
    pub fn kill(mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    /// An idle worker ends on EOF: its compile child exits, the zygote reaps it and exits, and
    /// every process's CPU time is accounted to pyclink. One that does not end promptly (or its
    /// compile child) must not outlive pyclink: the whole process group goes.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        kill_group(self.child.id());
        let _ = self.child.wait();
        crate::cleanup::unregister_worker(self.child.id());
    }
}

/// Spawn on one thread that lives as long as the process: a worker's parent-death signal
/// fires when the *thread* that forked it ends, and a compile thread that finishes its share
/// must not take down workers other threads are still using.
fn spawn(mut cmd: Command) -> std::io::Result<Child> {
    type Reply = std::sync::mpsc::Sender<std::io::Result<Child>>;
    static SPAWNER: std::sync::OnceLock<
        std::sync::Mutex<std::sync::mpsc::Sender<(Command, Reply)>>,
    > = std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<(Command, Reply)>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the spawner thread");
        std::sync::Mutex::new(tx)
    });
    let (reply, answer) = std::sync::mpsc::channel();
    let sent = spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply));
    match sent {
        Ok(()) => answer
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread is gone"))),
        Err(std::sync::mpsc::SendError((c, _))) => {
            cmd = c;
            cmd.spawn()
        }
    }
}

/// SIGKILL a worker and the children it forked (it leads its own process group).
pub fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

fn placeholder_hello() -> Hello {
    Hello {
        version: (0, 0, 0),
        implementation: String::new(),
        executable: String::new(),
        build: String::new(),
        format: PycFormat {
            magic: [0; 4],
            cache_tag: String::new(),
            source_hash: None,
        },
    }
}

/// How a worker ended, in words. worker.py's zygote exits with 128 + N when a signal N killed
/// its compile process (a compiler crash), so that the crash is named, not just "status 139".
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) if code > 128 && code - 128 < 65 => format!(
            "crashed: its compile process was killed by {} (the interpreter's compiler failed \
             on this source)",
            signal_words(code - 128)
        ),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by {}", signal_words(sig)),
        _ => format!("ended ({status})"),
    }
}

fn signal_words(sig: i32) -> String {
    match signal_hook::low_level::signal_name(sig) {
        Some(name) => format!("signal {sig} ({name})"),
        None => format!("signal {sig}"),
    }
}

/// A cursor over a response payload.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated response".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

/// Decode a response payload (from a worker or the cache) for `nlevels` requested levels.
pub fn parse_response(payload: Vec<u8>, nlevels: usize) -> Result<Compiled, String> {
    let mut f = Fields(&payload);
    match f.take(1)? {
        b"K" => {
            let mut bodies: Vec<std::ops::Range<usize>> = Vec::with_capacity(nlevels);
            for _ in 0..nlevels {
                if f.0.get(..4) == Some(&SAME_AS_PREVIOUS.to_le_bytes()) {
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
        other => Err(format!("unknown response tag {other:?}")),
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
}
