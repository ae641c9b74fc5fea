//! Step 3's scheduling. One queue holds every version's sources, one version after another and
//! largest first within each, so no core idles at the end. There is one thread per worker
//! (`jobs` of them), and each keeps its worker busy: while the worker compiles one source, the
//! thread reads and checks the next; when the answer comes, it sends the next source at once and
//! only then writes the answered one's pycs. The worker thus waits for nothing but a pipe
//! write, and no thread has to wake another. Idle workers wait in a pool per version; once a
//! version's last source is handed out, its workers end as they come back, so memory holds one
//! version's workers at a time, not every version's. A worker that dies or hangs is killed and
//! replaced, and the source retried once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::{self, Cache};
use crate::compile::{self, Options, Outcome, Prepared, Step, Target};
use crate::fsroot::{display_in_root, Root};
use crate::plan::Job;
use crate::worker::{parse_response, Compiled, Launch, Worker};

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
        Lane {
            launch,
            identity: target.identity,
            target,
            idle: Mutex::new(vec![first]),
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

/// Run every job (`lanes[v]` exists for every version `v` that has jobs) with `workers`
/// compiling at once; `on_outcome` gets each result on the calling thread, in completion order.
pub fn run(
    root: &Root,
    jobs: &[Job],
    lanes: &[Option<Lane>],
    how: Schedule,
    mut on_outcome: impl FnMut(&Job, Outcome),
) -> Timing {
    let workers = how.workers.clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let timing = Mutex::new(Timing {
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
        for t in 0..workers {
            let mut feeder = Feeder {
                root,
                jobs,
                lanes,
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
                    feeder.run();
                    let mut t = timing.lock().unwrap_or_else(|p| p.into_inner());
                    t.busy += started.elapsed();
                    t.waiting += feeder.waiting;
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

/// A source sent to the worker and not yet answered.
struct InFlight {
    job: usize,
    prepared: Prepared,
    key: Option<cache::Key>,
    /// Why the send failed, if it did (the source is then retried like a failed compile).
    sent: Result<(), String>,
}

/// One compile thread: takes sources from the queue and keeps its worker compiling them.
struct Feeder<'a> {
    root: &'a Root,
    jobs: &'a [Job],
    lanes: &'a [Option<Lane>],
    how: Schedule<'a>,
    next: &'a AtomicUsize,
    tx: mpsc::Sender<(usize, Outcome)>,
    /// The worker this thread uses, and its version.
    held: Option<(usize, Worker)>,
    /// Time spent waiting for the worker's answers.
    waiting: Duration,
}

impl Feeder<'_> {
    fn run(&mut self) {
        let mut in_flight: Option<InFlight> = None;
        loop {
            // While the worker compiles, read and check the next source that needs compiling.
            let next = self.next_to_compile();
            let answered = in_flight.take().map(|f| {
                let answer = self.collect(&f);
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
            self.lane(v).give_back(worker);
        }
    }

    fn lane(&self, version: usize) -> &Lane {
        self.lanes[version]
            .as_ref()
            .expect("a lane for every version with sources")
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
            let lane = self.lane(job.version);
            lane.undispatched.fetch_sub(1, Ordering::AcqRel);
            if i > 0 && self.jobs[i - 1].version != job.version {
                retire_finished(self.lanes, job.version);
            }
            let prepared = match compile::prepare(self.root, job, &lane.target, self.how.opts) {
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
            let key = Cache::key(&lane.identity, &req);
            if let Some(payload) = cache.get(&key) {
                match parse_response(payload, req.levels.len()) {
                    Ok(compiled) => {
                        self.finish(i, prepared, Ok(compiled));
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
            self.lane(held).give_back(worker);
        }
        if self.held.is_none() {
            match self.lane(v).take(self.how.timeout) {
                Ok(worker) => self.held = Some((v, worker)),
                Err(why) => {
                    self.finish(i, prepared, Err(why));
                    return None;
                }
            }
        }
        let (_, worker) = self.held.as_mut().expect("a worker was just taken");
        let sent = worker
            .send(&prepared.request(), self.how.timeout)
            .map_err(|e| e.to_string());
        Some(InFlight {
            job: i,
            prepared,
            key,
            sent,
        })
    }

    /// The answer to `f`: from the worker it was sent to, or, if that worker fails, from a
    /// fresh one (once). A failed worker is never reused.
    fn collect(&mut self, f: &InFlight) -> Result<Compiled, String> {
        let timeout = self.how.timeout;
        let (v, mut worker) = self.held.take().expect("a request in flight has a worker");
        let asked = Instant::now();
        let first = match &f.sent {
            Ok(()) => worker.recv(timeout).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        let payload = match first {
            Ok(payload) => {
                self.held = Some((v, worker));
                Ok(payload)
            }
            Err(failure) => {
                worker.kill();
                let rel = &self.jobs[f.job].rel;
                log::warn!(
                    "{}: {failure}; retrying with a new worker",
                    display_in_root(rel)
                );
                let lane = self.lane(v);
                match Worker::start(&lane.launch, timeout) {
                    Err(e) => Err(format!(
                        "{failure} (and cannot start a {} worker for the retry: {e})",
                        lane.launch.program.display()
                    )),
                    Ok(mut fresh) => match fresh.exchange(&f.prepared.request(), timeout) {
                        Ok(payload) => {
                            self.held = Some((v, fresh));
                            Ok(payload)
                        }
                        Err(again) => {
                            fresh.kill();
                            Err(format!("{again} (also on the retry with a new worker)"))
                        }
                    },
                }
            }
        };
        self.waiting += asked.elapsed();
        let payload = payload?;
        if let (Some(cache), Some(key)) = (self.how.cache, &f.key) {
            cache.put(key, &payload);
        }
        parse_response(payload, f.prepared.request().levels.len())
            .map_err(|e| format!("the worker broke the protocol: {e}"))
    }

    fn finish(&self, i: usize, prepared: Prepared, answer: Result<Compiled, String>) {
        let outcome = compile::finish(&self.jobs[i], prepared, answer, self.how.opts.link);
        self.report(i, outcome);
    }
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
