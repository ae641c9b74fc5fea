//! One compile worker: a real interpreter running `worker.py`, spoken to over its stdin/stdout.
//! The protocol is documented at the top of `worker.py` and encoded in [`protocol`]; this module
//! starts the process and moves frames. Every exchange has a deadline, so a hung interpreter is
//! detected; a dead one shows up as EOF and its exit status is reported.

pub mod protocol;

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};

use crate::python::pyc::PycFormat;
pub use protocol::{parse_response, Compiled, Hello, ProtocolError, Request};
use protocol::{MAX_FRAME, PIPE_SIZE, UNSUPPORTED_PREFIX};

/// The worker: `framing.py` (shared with `pyclink verify`'s checker), then `worker.py`.
pub const SCRIPT: &str = concat!(include_str!("framing.py"), include_str!("worker.py"));

/// How to start an interpreter: the program and the complete environment it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub program: PathBuf,
    pub env: Vec<(OsString, OsString)>,
}

impl Launch {
    /// The interpreter running `script` (worker.py, or another script that speaks the same
    /// framing and hello, such as `pyclink verify`'s checker).
    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new(&self.program);
        // Not -I: it would ignore PYTHONHASHSEED, and frozenset constants would be written in
        // a random order. The environment is cleared instead, which -E/-I exist to approximate.
        cmd.args(["-s", "-S", "-c", script])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Through a tap (see StderrTap): held back until the hello, passed on after it.
            .stderr(Stdio::piped())
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

/// Why a worker could not answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the worker {0}")]
    Died(String),
    #[error("the worker did not answer within {}s", .0.as_secs_f64())]
    TimedOut(Duration),
    #[error("the worker broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("cannot start: {0}")]
    Start(#[source] io::Error),
    /// The interpreter is older than pyclink's worker needs (Python 2, or 3 before 3.6).
    #[error("it is Python {0}; pyclink compiles for Python 3.6 and later (CPython, PyPy)")]
    Unsupported(String),
    /// It failed before its hello (an interpreter that cannot start: a wrong PYTHONHOME, a
    /// missing libpython), and wrote `stderr` (its last lines), which is kept out of the log:
    /// the gist of it ends this one-line message.
    #[error("{failure}: {}", gist(.stderr))]
    Starting {
        failure: Box<Failure>,
        stderr: Vec<String>,
    },
}

impl Failure {
    /// The last lines the interpreter wrote to stderr before it failed to start, if any.
    pub fn stderr(&self) -> &[String] {
        match self {
            Failure::Starting { stderr, .. } => stderr,
            _ => &[],
        }
    }
}

/// The one line that says why an interpreter did not start, from the last lines of its
/// stderr: CPython's "Fatal Python error: ..." and the exception under it, else the last
/// exception line (a traceback's), else the last unindented line (the dynamic loader's
/// "error while loading shared libraries: ...").
fn gist(stderr: &[String]) -> String {
    let is_exception = |l: &str| {
        let name = l.split(':').next().unwrap_or_default();
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && ["Error", "Exception", "Exit", "Interrupt"]
                .iter()
                .any(|end| name.ends_with(end))
    };
    let fatal = stderr
        .iter()
        .position(|l| l.starts_with("Fatal Python error: "));
    let exception = stderr
        .iter()
        .skip(fatal.unwrap_or(0))
        .rfind(|l| is_exception(l));
    let mut parts: Vec<&str> = fatal
        .map(|i| stderr[i].as_str())
        .into_iter()
        .chain(exception.map(String::as_str))
        .collect();
    if parts.is_empty() {
        parts.extend(
            stderr
                .iter()
                .rfind(|l| !l.trim().is_empty() && !l.starts_with([' ', '\t']))
                .map(String::as_str),
        );
    }
    let mut text = parts.join("; ");
    if text.len() > GIST_MAX {
        let mut end = GIST_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

const GIST_MAX: usize = 400;

pub struct Worker {
    child: Child,
    /// `None` once closed (shutting down).
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    pub hello: Hello,
    /// The deadline of the request sent and not yet answered.
    in_flight: Option<Instant>,
}

impl Worker {
    /// Start the interpreter and read its hello (within `timeout`).
    pub fn start(launch: &Launch, timeout: Duration) -> Result<Worker, Failure> {
        Worker::start_script(launch, SCRIPT, timeout)
    }

    /// Start the interpreter on another script that sends the same hello and speaks the same
    /// framing (see [`Worker::send_payload`]).
    pub fn start_script(
        launch: &Launch,
        script: &str,
        timeout: Duration,
    ) -> Result<Worker, Failure> {
        let mut child = spawn(launch.command(script)).map_err(Failure::Start)?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let tap = StderrTap::start(child.stderr.take().expect("piped stderr"));
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
        let hello = w.read_frame(deadline, timeout).and_then(|payload| {
            match payload.strip_prefix(UNSUPPORTED_PREFIX) {
                Some(version) => Ok(Err(String::from_utf8_lossy(version).into_owned())),
                None => Ok(Ok(Hello::parse(&payload)?)),
            }
        });
        let hello = match hello {
            Ok(Ok(hello)) => hello,
            Ok(Err(version)) => return Err(Failure::Unsupported(version)),
            Err(failure) => {
                // Ended (and the whole group with it) before its stderr is read to the end.
                drop(w);
                let stderr = tap.finish(TAP_WAIT);
                if stderr.is_empty() {
                    return Err(failure);
                }
                return Err(Failure::Starting {
                    failure: Box::new(failure),
                    stderr,
                });
            }
        };
        w.hello = hello;
        for line in tap.pass_through() {
            log::debug!(
                "{} wrote before its hello: {line}",
                crate::escape::shown(&launch.program)
            );
        }
        log::debug!(
            "worker {} started: {}",
            w.child.id(),
            crate::escape::shown(&launch.program)
        );
        Ok(w)
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
            return Err(ProtocolError::from("a request is already in flight").into());
        }
        let deadline = Instant::now() + timeout;
        let (head, source) = protocol::encode_request(req)?;
        self.write_all(&head, source, deadline, timeout)?;
        self.in_flight = Some(deadline);
        Ok(())
    }

    /// Send one frame whose payload is `payload` (another script's request); [`Worker::recv`]
    /// returns its answer.
    pub fn send_payload(&mut self, payload: &[u8], timeout: Duration) -> Result<(), Failure> {
        if self.in_flight.is_some() {
            return Err(ProtocolError::from("a request is already in flight").into());
        }
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&n| (n as usize) < MAX_FRAME)
            .ok_or_else(|| ProtocolError::from("request larger than 1 GiB"))?;
        let deadline = Instant::now() + timeout;
        self.write_all(&len.to_le_bytes(), payload, deadline, timeout)?;
        self.in_flight = Some(deadline);
        Ok(())
    }

    /// The raw response payload (see [`parse_response`]) to the request sent, within
    /// `timeout` of sending it.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, Failure> {
        let deadline = self
            .in_flight
            .take()
            .ok_or_else(|| ProtocolError::from("no request in flight"))?;
        self.read_frame(deadline, timeout)
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
            return Err(ProtocolError(format!(
                "a frame of {len} bytes (the limit is {MAX_FRAME})"
            ))
            .into());
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
                None => return Err(ProtocolError::from("stdin is closed").into()),
            }
        } else {
            poll(&mut [PollFd::new(&self.stdout, events)], Some(&ts))
        };
        match result {
            Ok(0) => Err(Failure::TimedOut(timeout)),
            Ok(_) => Ok(()),
            Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(Failure::Died(format!("cannot be waited for (poll: {e})"))),
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

/// How long a worker that failed to start is given to have its stderr read to the end, once
/// its process group is killed (a process that escaped the group may hold the pipe open).
const TAP_WAIT: Duration = Duration::from_secs(1);
/// What a tap keeps of a worker's stderr before its hello: the last lines, each cut short.
const TAP_LINES: usize = 30;
const TAP_LINE_BYTES: usize = 1000;

/// A worker's stderr, read on a thread of its own. Until the hello, the last lines are kept,
/// not printed: an interpreter that cannot start writes a page of diagnostics ("Python path
/// configuration: ... Fatal Python error: ..."), which would otherwise land in the build log,
/// `-q` or not, for a candidate pyclink passes over. After the hello everything is passed on to
/// pyclink's stderr as it comes, as an inherited stderr would be (a compiler crash's report).
struct StderrTap(std::sync::Arc<TapShared>);

#[derive(Default)]
struct TapShared {
    state: std::sync::Mutex<TapState>,
    ended: std::sync::Condvar,
}

#[derive(Default)]
struct TapState {
    passing: bool,
    ended: bool,
    lines: std::collections::VecDeque<String>,
    partial: Vec<u8>,
}

impl TapState {
    fn keep(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.add_partial(&bytes[..nl]);
            self.end_line();
            bytes = &bytes[nl + 1..];
        }
        self.add_partial(bytes);
    }

    fn add_partial(&mut self, bytes: &[u8]) {
        let room = TAP_LINE_BYTES.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_string();
        self.partial.clear();
        if self.lines.len() == TAP_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn take(&mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            self.end_line();
        }
        std::mem::take(&mut self.lines).into()
    }
}

impl StderrTap {
    fn start(mut pipe: std::process::ChildStderr) -> StderrTap {
        let shared = std::sync::Arc::new(TapShared::default());
        let theirs = shared.clone();
        let reader = move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut state = theirs.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.passing {
                    drop(state);
                    let _ = io::stderr().lock().write_all(&buf[..n]);
                } else {
                    state.keep(&buf[..n]);
                }
            }
            let mut state = theirs.state.lock().unwrap_or_else(|p| p.into_inner());
            state.ended = true;
            theirs.ended.notify_all();
        };
        let started = std::thread::Builder::new()
            .name("worker-stderr".into())
            .stack_size(64 * 1024)
            .spawn(reader);
        if started.is_err() {
            // No thread to read it: the pipe closes, and what the worker writes there is lost
            // (EPIPE) rather than blocking it.
            shared.state.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
        }
        StderrTap(shared)
    }

    /// From now on, pass everything on; returns what was kept until now.
    fn pass_through(&self) -> Vec<String> {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.passing = true;
        state.take()
    }

    /// What was kept, once the stderr has ended (or `wait` has passed).
    fn finish(&self, wait: Duration) -> Vec<String> {
        let state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut state, _) = self
            .0
            .ended
            .wait_timeout_while(state, wait, |s| !s.ended)
            .unwrap_or_else(|p| p.into_inner());
        state.take()
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
        free_threaded: false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    /// The one line of a start that failed, from what CPython and the dynamic loader write.
    #[test]
    fn the_gist_of_a_failed_start() {
        let fatal = lines(
            "Python path configuration:\n  PYTHONHOME = 'br/usr'\n  sys.path = [\n    'br/usr/lib/python3.12',\n  ]\n\
             Fatal Python error: init_fs_encoding: failed to get the Python codec of the filesystem encoding\n\
             Python runtime state: core initialized\n\
             ModuleNotFoundError: No module named 'encodings'\n\n\
             Current thread 0x00007f (most recent call first):\n  <no Python frame>",
        );
        assert_eq!(
            gist(&fatal),
            "Fatal Python error: init_fs_encoding: failed to get the Python codec of the \
             filesystem encoding; ModuleNotFoundError: No module named 'encodings'"
        );
        let traceback = lines(
            "Traceback (most recent call last):\n  File \"<string>\", line 3, in <module>\n\
             \x20   import struct\nencodings.CodecRegistryError: bad codec",
        );
        assert_eq!(gist(&traceback), "encodings.CodecRegistryError: bad codec");
        let loader = lines(
            "python3.12: error while loading shared libraries: libpython3.12.so.1.0: cannot \
             open shared object file: No such file or directory",
        );
        assert_eq!(gist(&loader), loader[0]);
        let long = vec!["x".repeat(5000)];
        assert!(gist(&long).len() <= GIST_MAX + 3);
    }

    /// Before the hello the tap keeps the last lines, each cut short; after it, nothing.
    #[test]
    fn the_tap_keeps_a_bounded_tail() {
        let mut state = TapState::default();
        for i in 0..100 {
            state.keep(format!("line {i}\n").as_bytes());
        }
        state.keep(&[b'y'; 5000]);
        state.keep(b"\r\nlast without a newline");
        let kept = state.take();
        assert_eq!(kept.len(), TAP_LINES);
        assert_eq!(kept[TAP_LINES - 1], "last without a newline");
        assert_eq!(kept[TAP_LINES - 2].len(), TAP_LINE_BYTES);
        assert_eq!(kept[0], format!("line {}", 100 - TAP_LINES + 2));
        assert!(state.take().is_empty());
    }
}
