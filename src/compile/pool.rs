//! Step 3's scheduling. One queue holds every version's sources, one version after another and
//! largest first within each, so no core idles at the end. There is one thread per worker
//! (`jobs` of them), and each keeps its worker busy: while the worker compiles one source, the
//! thread reads and checks the next; when the answer comes, it sends the next source at once and
//! only then writes the answered one's pycs. The worker thus waits for nothing but a pipe
//! write, and no thread has to wake another. Idle workers wait in a pool per version; once a
//! version's last source is handed out, its workers end as they come back, so memory holds one
//! version's workers at a time, not every version's. A worker that dies, hangs or breaks the
//! protocol is killed and replaced, and the source retried once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use super::cache::{self, Cache};
use super::source::{self, Options, Outcome, Prepared, Step, Target};
use crate::discover::interpreter::Interpreter;
use crate::fsroot::{display_in_root, Root};
use crate::plan::Job;
use crate::problem::{Problem, Retry};
use crate::python::PyVersion;
use crate::worker::{parse_response, Compiled, Failure, Launch, Request, Worker};

/// One version's compiler: how to start its workers, what its pycs look like, and its idle
/// workers (the one that proved the interpreter is the first).
pub struct Compiler {
    pub launch: Launch,
    pub target: Target,
    idle: Mutex<Vec<Worker>>,
    /// Sources of this version not yet handed to a compile thread.
    undispatched: AtomicUsize,
}

impl Compiler {
    pub fn new(interpreter: Interpreter, target: Target) -> Compiler {
        Compiler {
            launch: interpreter.launch,
            target,
            idle: Mutex::new(vec![interpreter.first_worker]),
            undispatched: AtomicUsize::new(0),
        }
    }

    fn take(&self, timeout: Duration) -> Result<Worker, Problem> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(w) => Ok(w),
            None => Worker::start(&self.launch, timeout).map_err(|failure| Problem::NoWorker {
                program: crate::escape::shown(&self.launch.program).to_string(),
                failure,
            }),
        }
    }

    /// Keep `w` for the next source of this version, or end it if none is left to hand out.
    fn give_back(&self, w: Worker) {
        if self.undispatched.load(Ordering::Acquire) > 0 {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(w);
        }
    }

    /// End the idle workers (gracefully: their CPU time is accounted to pyclink).
    fn retire_idle(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(idle);
    }
}

/// Source bytes that justify one more worker (and compile thread). Starting one, with
/// compileall's modules loaded, costs 30-40 ms of CPU, about what CPython's compiler takes for
/// this much source at the usual two or three distinct levels; with less work per worker, a
/// further one would end later than the ones already running.
const BYTES_PER_WORKER: u64 = 128 * 1024;

/// How often the calling thread collects the outcomes.
const OUTCOME_POLL: Duration = Duration::from_millis(10);

/// Where the compile threads' time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// Summed over threads: the time spent on jobs...
    pub busy: Duration,
    /// ...of which waiting for a worker's answer.
    pub waiting: Duration,
    /// Workers, each with its own compile thread.
    pub workers: usize,
}

/// How a run is carried out.
#[derive(Clone, Copy)]
pub struct Schedule<'a> {
    pub opts: Options,
    /// Compiles at once (workers busy).
    pub workers: usize,
    /// Per source, before a worker is given up as hung.
    pub timeout: Duration,
    pub cache: Option<&'a Cache>,
}

/// Run every job (`compilers` has one for every version that has jobs) with up to `workers`
/// compiling at once (fewer for a small job, see [`BYTES_PER_WORKER`]); `on_outcome` gets each result on the calling thread, in completion order.
pub fn run(
    root: &Root,
    jobs: &[Job],
    compilers: &BTreeMap<PyVersion, Compiler>,
    how: Schedule,
    mut on_outcome: impl FnMut(&Job, Outcome),
) -> Timing {
    // Start workers as the work needs them: a job of a few small sources is done by one worker
    // before a second interpreter would have loaded compileall's modules.
    let bytes: u64 = jobs.iter().map(|j| j.size).sum();
    let by_work = usize::try_from(bytes / BYTES_PER_WORKER).unwrap_or(usize::MAX);
    let workers = how
        .workers
        .min(by_work.saturating_add(1))
        .clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let timing = Mutex::new(Timing {
        workers,
        ..Timing::default()
    });
    for c in compilers.values() {
        c.undispatched.store(0, Ordering::Relaxed);
    }
    for job in jobs {
        compilers[&job.version]
            .undispatched
            .fetch_add(1, Ordering::Relaxed);
    }
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|s| {
        for t in 0..workers {
            let mut thread = CompileThread {
                root,
                jobs,
                compilers,
                how,
                next: &next,
                tx: tx.clone(),
                held: None,
                waiting: Duration::ZERO,
            };
            let timing = &timing;
            std::thread::Builder::new()
                .name(format!("compile-{t}"))
                .spawn_scoped(s, move || {
                    let started = Instant::now();
                    thread.run();
                    let mut t = timing.lock().unwrap_or_else(|p| p.into_inner());
                    t.busy += started.elapsed();
                    t.waiting += thread.waiting;
                })
                .expect("spawn compile thread");
        }
        drop(tx);
        // Collect on a timer rather than wait on the channel: a waiting receiver costs every
        // compile thread a wake-up call per source, and the reports can lag a few ms.
        'collect: loop {
            std::thread::sleep(OUTCOME_POLL);
            loop {
                match rx.try_recv() {
                    Ok((i, outcome)) => on_outcome(&jobs[i], outcome),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => break 'collect,
                }
            }
        }
    });
    for c in compilers.values() {
        c.retire_idle();
    }
    timing.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// A source sent to the worker and not yet answered.
struct InFlight {
    job: usize,
    prepared: Prepared,
    key: Option<cache::Key>,
    /// Why the send failed, if it did (the source is then retried like a failed compile).
    send_failed: Option<Failure>,
}

/// One compile thread: takes sources from the queue and keeps its worker compiling them.
struct CompileThread<'a> {
    root: &'a Root,
    jobs: &'a [Job],
    compilers: &'a BTreeMap<PyVersion, Compiler>,
    how: Schedule<'a>,
    next: &'a AtomicUsize,
    tx: mpsc::Sender<(usize, Outcome)>,
    /// The worker this thread uses, and its version.
    held: Option<(PyVersion, Worker)>,
    /// Time spent waiting for the worker's answers.
    waiting: Duration,
}

impl CompileThread<'_> {
    fn run(&mut self) {
        let mut in_flight: Option<InFlight> = None;
        loop {
            // While the worker compiles, read and check the next source that needs compiling.
            let next = self.next_to_compile();
            let answered = in_flight.take().map(|mut f| {
                let answer = self.collect(&mut f);
                (f, answer)
            });
            // Send the next source before writing the answered one's pycs: the worker never
            // waits for the writing.
            if let Some((i, prepared, key)) = next {
                in_flight = self.send(i, prepared, key);
            }
            match answered {
                Some((f, answer)) => self.finish(f.job, f.prepared, answer),
                None if in_flight.is_none() => break,
                None => {}
            }
        }
        if let Some((v, worker)) = self.held.take() {
            self.compilers[&v].give_back(worker);
        }
    }

    fn report(&self, i: usize, outcome: Outcome) {
        let _ = self.tx.send((i, outcome));
    }

    /// The next job that needs a worker, prepared; those that do not (up to date, failed,
    /// skipped, found in the cache) are reported on the way.
    fn next_to_compile(&mut self) -> Option<(usize, Prepared, Option<cache::Key>)> {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let job = self.jobs.get(i)?;
            let compiler = &self.compilers[&job.version];
            compiler.undispatched.fetch_sub(1, Ordering::AcqRel);
            if i > 0 && self.jobs[i - 1].version != job.version {
                retire_finished(self.compilers, job.version);
            }
            let prepared = match source::prepare(self.root, job, &compiler.target, self.how.opts) {
                Step::Done(outcome) => {
                    self.report(i, outcome);
                    continue;
                }
                Step::Compile(p) => p,
            };
            let Some(cache) = self.how.cache else {
                return Some((i, prepared, None));
            };
            let req = prepared.request();
            let key = cache::Key::new(&compiler.target.identity, &req);
            if let Some(payload) = cache.get(&key) {
                match parse_response(payload, req.levels.len()) {
                    Ok(compiled) => {
                        let mut outcome =
                            source::finish(job, prepared, Ok(compiled), self.how.opts.link);
                        if let Outcome::Written { from_cache, .. } = &mut outcome {
                            *from_cache = true;
                        }
                        self.report(i, outcome);
                        continue;
                    }
                    Err(_) => cache.reject(&key),
                }
            }
            return Some((i, prepared, Some(key)));
        }
    }

    /// Send job `i` to a worker of its version; `None` (and the outcome reported) if there is
    /// no such worker.
    fn send(&mut self, i: usize, prepared: Prepared, key: Option<cache::Key>) -> Option<InFlight> {
        let v = self.jobs[i].version;
        if self.held.as_ref().is_some_and(|(held, _)| *held != v) {
            let (held, worker) = self.held.take().expect("just checked");
            self.compilers[&held].give_back(worker);
        }
        if self.held.is_none() {
            match self.compilers[&v].take(self.how.timeout) {
                Ok(worker) => self.held = Some((v, worker)),
                Err(problem) => {
                    self.finish(i, prepared, Err(problem));
                    return None;
                }
            }
        }
        let (_, worker) = self.held.as_mut().expect("a worker was just taken");
        let send_failed = worker.send(&prepared.request(), self.how.timeout).err();
        Some(InFlight {
            job: i,
            prepared,
            key,
            send_failed,
        })
    }

    /// The answer to `f`: from the worker it was sent to, or, if that worker fails (dies, hangs
    /// or sends what does not decode), from a fresh one (once). A failed worker is killed, never
    /// reused. Only a decoded answer goes into the cache.
    fn collect(&mut self, f: &mut InFlight) -> Result<Compiled, Problem> {
        let timeout = self.how.timeout;
        let (v, mut worker) = self.held.take().expect("a request in flight has a worker");
        let req = f.prepared.request();
        let asked = Instant::now();
        let first = match f.send_failed.take() {
            None => worker.recv(timeout).and_then(|p| decode(p, &req)),
            Some(e) => Err(e),
        };
        let answer = match first {
            Ok(compiled) => {
                self.held = Some((v, worker));
                Ok(compiled)
            }
            Err(first) => {
                worker.kill();
                log::warn!(
                    "{}: {first}; retrying with a new worker",
                    display_in_root(&self.jobs[f.job].rel)
                );
                let launch = &self.compilers[&v].launch;
                match Worker::start(launch, timeout) {
                    Err(failure) => Err(Problem::Worker {
                        first,
                        retry: Retry::CannotStart {
                            program: crate::escape::shown(&launch.program).to_string(),
                            failure,
                        },
                    }),
                    Ok(mut fresh) => {
                        match fresh.exchange(&req, timeout).and_then(|p| decode(p, &req)) {
                            Ok(compiled) => {
                                self.held = Some((v, fresh));
                                Ok(compiled)
                            }
                            Err(again) => {
                                fresh.kill();
                                Err(Problem::Worker {
                                    first,
                                    retry: Retry::AlsoFailed(again),
                                })
                            }
                        }
                    }
                }
            }
        };
        self.waiting += asked.elapsed();
        if let (Some(cache), Some(key), Ok(Compiled::Code(code))) =
            (self.how.cache, &f.key, &answer)
        {
            cache.put(key, code.payload());
        }
        answer
    }

    fn finish(&self, i: usize, prepared: Prepared, answer: Result<Compiled, Problem>) {
        let outcome = source::finish(&self.jobs[i], prepared, answer, self.how.opts.link);
        self.report(i, outcome);
    }
}

fn decode(payload: Vec<u8>, req: &Request) -> Result<Compiled, Failure> {
    Ok(parse_response(payload, req.levels.len())?)
}

/// End the idle workers of every other version whose sources have all been handed out (their
/// busy ones end as they come back, see `Compiler::give_back`). Called where the queue moves on
/// to another version: with the queue in version order (see `plan`), that is where one runs out.
fn retire_finished(compilers: &BTreeMap<PyVersion, Compiler>, current: PyVersion) {
    for (v, c) in compilers {
        if *v != current && c.undispatched.load(Ordering::Acquire) == 0 {
            c.retire_idle();
        }
    }
}
