//! Step 3's scheduling. One queue holds every version's sources, one version after another and
//! largest first within each, so no core idles at the end. `jobs` compile permits keep exactly
//! that many workers compiling; twice as many threads take the sources, so while one thread
//! reads a source or writes its pycs, another holds the permit and its worker compiles. Idle
//! workers wait in a pool per version; once a version's last source is handed out, its workers
//! end as they come back, so memory holds one version's workers at a time, not every version's.
//! A worker that dies or hangs is killed and replaced, and the source retried once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cache::{self, Cache};
use crate::compile::{self, Options, Outcome, Target};
use crate::fsroot::{display_in_root, Root};
use crate::plan::Job;
use crate::worker::{parse_response, Launch, Request, Worker};

/// Per version: how to start workers, what its pycs look like, and its idle workers (the one
/// that proved the interpreter is the first).
pub struct Lane {
    pub launch: Launch,
    pub target: Target,
    pub idle: Mutex<Vec<Worker>>,
    /// What the cache knows this interpreter by.
    pub identity: cache::Key,
    /// Sources of this version not yet handed to a compile thread.
    undispatched: AtomicUsize,
}

impl Lane {
    pub fn new(launch: Launch, target: Target, first: Worker) -> Lane {
        let identity = cache::interpreter_identity(&first.hello, &launch);
        Lane {
            launch,
            target,
            idle: Mutex::new(vec![first]),
            identity,
            undispatched: AtomicUsize::new(0),
        }
    }

    fn take(&self, timeout: Duration) -> Result<Worker, String> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(w) => Ok(w),
            None => Worker::start(&self.launch, timeout).map_err(|e| {
                format!(
                    "cannot start a {} worker: {e}",
                    self.launch.program.display()
                )
            }),
        }
    }

    /// Keep `w` for the next source of this version, or end it if none is left to hand out.
    fn give_back(&self, w: Worker) {
        if self.undispatched.load(Ordering::Acquire) > 0 {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(w);
        }
    }
}

/// How often the calling thread collects the outcomes.
const OUTCOME_POLL: Duration = Duration::from_millis(10);

/// Where the compile threads' time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// Summed over threads: the time spent on jobs...
    pub busy: Duration,
    /// ...of which waiting for a compile permit or a worker's answer.
    pub waiting: Duration,
    pub threads: usize,
    pub workers: usize,
}

/// A counting semaphore: at most `n` compiles at once, whatever the version.
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    fn acquire(&self) -> PermitGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        PermitGuard(self)
    }
}

struct PermitGuard<'a>(&'a Permits);

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
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

/// Run every job (`lanes[v]` exists for every version `v` that has jobs) with `workers`
/// compiling at once; `on_outcome` gets each result on the calling thread, in completion order.
pub fn run(
    root: &Root,
    jobs: &[Job],
    lanes: &[Option<Lane>],
    how: Schedule,
    mut on_outcome: impl FnMut(&Job, Outcome),
) -> Timing {
    let Schedule {
        opts,
        workers,
        timeout,
        cache,
    } = how;
    let workers = workers.clamp(1, jobs.len().max(1));
    let threads = (2 * workers).min(jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let permits = Permits {
        free: Mutex::new(workers),
        freed: Condvar::new(),
    };
    let timing = Mutex::new(Timing {
        threads,
        workers,
        ..Timing::default()
    });
    for lane in lanes.iter().flatten() {
        lane.undispatched.store(0, Ordering::Relaxed);
    }
    for job in jobs {
        if let Some(lane) = &lanes[job.version] {
            lane.undispatched.fetch_add(1, Ordering::Relaxed);
        }
    }
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (tx, next, permits, timing) = (tx.clone(), &next, &permits, &timing);
            std::thread::Builder::new()
                .name(format!("compile-{t}"))
                .spawn_scoped(s, move || {
                    let (mut busy, mut waiting) = (Duration::ZERO, Duration::ZERO);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let lane = lanes[job.version]
                            .as_ref()
                            .expect("a lane for every version with sources");
                        lane.undispatched.fetch_sub(1, Ordering::AcqRel);
                        if i > 0 && jobs[i - 1].version != job.version {
                            retire_finished(lanes, job.version);
                        }
                        let started = Instant::now();
                        let mut compile = |req: &Request| {
                            let key = cache.map(|_| Cache::key(&lane.identity, req));
                            if let (Some(cache), Some(key)) = (cache, &key) {
                                if let Some(payload) = cache.get(key) {
                                    match parse_response(payload, req.levels.len()) {
                                        Ok(compiled) => return Ok(compiled),
                                        Err(_) => cache.reject(key),
                                    }
                                }
                            }
                            let asked = Instant::now();
                            let permit = permits.acquire();
                            let answer = compile_with_retry(lane, req, timeout, &job.rel);
                            drop(permit);
                            waiting += asked.elapsed();
                            let payload = answer?;
                            if let (Some(cache), Some(key)) = (cache, &key) {
                                cache.put(key, &payload);
                            }
                            parse_response(payload, req.levels.len())
                                .map_err(|e| format!("the worker broke the protocol: {e}"))
                        };
                        let outcome = compile::process(root, job, &lane.target, opts, &mut compile);
                        busy += started.elapsed();
                        if tx.send((i, outcome)).is_err() {
                            break;
                        }
                    }
                    let mut t = timing.lock().unwrap_or_else(|p| p.into_inner());
                    t.busy += busy;
                    t.waiting += waiting;
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
    // The idle workers end here (gracefully: their CPU time is accounted to pyclink).
    for lane in lanes.iter().flatten() {
        lane.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    timing.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// End the idle workers of every other version whose sources have all been handed out (their
/// busy ones end as they come back, see `Lane::give_back`). Called where the queue moves on to
/// another version: with the queue in version order (see `plan`), that is where one runs out.
fn retire_finished(lanes: &[Option<Lane>], current: usize) {
    for (v, lane) in lanes.iter().enumerate() {
        let Some(lane) = lane else { continue };
        if v != current && lane.undispatched.load(Ordering::Acquire) == 0 {
            let idle = std::mem::take(&mut *lane.idle.lock().unwrap_or_else(|p| p.into_inner()));
            drop(idle);
        }
    }
}

fn compile_with_retry(
    lane: &Lane,
    req: &Request,
    timeout: Duration,
    rel: &std::path::Path,
) -> Result<Vec<u8>, String> {
    let mut last = String::new();
    for attempt in 0..2 {
        // The retry gets a fresh process, whatever state the others are in.
        let mut worker = if attempt == 0 {
            lane.take(timeout)?
        } else {
            Worker::start(&lane.launch, timeout).map_err(|e| {
                format!(
                    "cannot start a {} worker: {e}",
                    lane.launch.program.display()
                )
            })?
        };
        match worker.exchange(req, timeout) {
            Ok(c) => {
                lane.give_back(worker);
                return Ok(c);
            }
            Err(failure) => {
                last = failure.to_string();
                // Never reused: the next attempt takes another worker or starts a fresh one.
                worker.kill();
                if attempt == 0 {
                    log::warn!(
                        "{}: {last}; retrying with a new worker",
                        display_in_root(rel)
                    );
                }
            }
        }
    }
    Err(format!("{last} (also on the retry with a new worker)"))
}
