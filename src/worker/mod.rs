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
#[derive(Clone, Debug)]
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
        if let Some(version) = payload.strip_prefix(UNSUPPORTED_PREFIX) {
            return Err(Failure::Unsupported(
                String::from_utf8_lossy(version).into_owned(),
            ));
        }
        w.hello = Hello::parse(&payload)?;
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
