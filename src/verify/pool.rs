//! Keeping the checkers busy: one thread per checker process, as the compile pool does. While
//! the checker compiles and compares one source, its thread reads and judges the next one's
//! files; when the answer comes it sends the next request at once and only then turns the
//! answer into problems. A checker that dies, hangs or breaks the protocol is replaced and the
//! source retried once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::fsroot::Root;
use crate::python::PyVersion;
use crate::worker::{Failure, Worker};

use super::check::{self, Job, Outcome, Prepared, Step, Target};
use super::protocol::{self, Answer};

/// Check every job with up to `workers` checkers at once; outcomes in job order.
pub fn run(
    root: &Root,
    jobs: &[Job],
    targets: &BTreeMap<PyVersion, Target>,
    workers: usize,
    timeout: Duration,
    link: bool,
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for t in 0..workers.clamp(1, jobs.len().max(1)) {
            let mut thread = CheckThread {
                root,
                jobs,
                targets,
                next: &next,
                timeout,
                link,
                held: None,
                done: Vec::new(),
            };
            let results = &results;
            std::thread::Builder::new()
                .name(format!("verify-{t}"))
                .spawn_scoped(s, move || {
                    thread.run();
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .append(&mut thread.done);
                })
                .expect("spawn a verify thread");
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, o)| o).collect()
}

struct CheckThread<'a> {
    root: &'a Root,
    jobs: &'a [Job],
    targets: &'a BTreeMap<PyVersion, Target>,
    next: &'a AtomicUsize,
    timeout: Duration,
    link: bool,
    /// This thread's checker, and the version it checks.
    held: Option<(PyVersion, Worker)>,
    done: Vec<(usize, Outcome)>,
}

/// A request sent and not yet answered (or whose sending failed).
struct InFlight {
    job: usize,
    prepared: Prepared,
    send_failed: Option<Failure>,
}

impl CheckThread<'_> {
    fn run(&mut self) {
        let mut in_flight: Option<InFlight> = None;
        loop {
            let next = self.next_to_check();
            let answered = in_flight.take().map(|f| {
                let answer = self.collect(&f);
                (f, answer)
            });
            if let Some((i, prepared)) = next {
                in_flight = Some(self.send(i, prepared));
            }
            match answered {
                Some((f, answer)) => {
                    let sourceless = matches!(self.jobs[f.job], Job::Sourceless { .. });
                    let outcome = check::finish(f.prepared, answer, sourceless);
                    self.done.push((f.job, outcome));
                }
                None if in_flight.is_none() => break,
                None => {}
            }
        }
    }

    /// The next job that needs the checker, prepared; the others are done on the way.
    fn next_to_check(&mut self) -> Option<(usize, Prepared)> {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let job = self.jobs.get(i)?;
            let target = &self.targets[&job.version()];
            match check::prepare(self.root, job, target, self.link) {
                Step::Done(outcome) => self.done.push((i, outcome)),
                Step::Check(p) => return Some((i, p)),
            }
        }
    }

    fn send(&mut self, i: usize, prepared: Prepared) -> InFlight {
        let version = self.jobs[i].version();
        if self.held.as_ref().is_some_and(|(v, _)| *v != version) {
            self.held = None;
        }
        let timeout = self.timeout;
        let send_failed = match self.worker(version) {
            Ok(w) => w.send_payload(&prepared.payload, timeout).err(),
            Err(e) => Some(e),
        };
        InFlight {
            job: i,
            prepared,
            send_failed,
        }
    }

    /// This thread's checker for `version`, started if need be.
    fn worker(&mut self, version: PyVersion) -> Result<&mut Worker, Failure> {
        if self.held.is_none() {
            let target = &self.targets[&version];
            let w = match target.take_first() {
                Some(w) => w,
                None => Worker::start_script(&target.launch, protocol::SCRIPT, self.timeout)?,
            };
            self.held = Some((version, w));
        }
        Ok(&mut self.held.as_mut().expect("just set").1)
    }

    /// The answer to `f`, from a fresh checker (once) if the first one fails.
    fn collect(&mut self, f: &InFlight) -> Result<Answer, String> {
        let version = self.jobs[f.job].version();
        let first = match (&f.send_failed, self.held.as_mut()) {
            (None, Some((_, w))) => w
                .recv(self.timeout)
                .and_then(|p| Ok(protocol::decode(&p, f.prepared.levels)?)),
            (Some(e), _) => Err(Failure::Died(e.to_string())),
            (None, None) => Err(Failure::Died("is gone".into())),
        };
        let first = match first {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        if let Some((_, w)) = self.held.take() {
            w.kill();
        }
        let program = crate::escape::shown(&self.targets[&version].launch.program);
        log::warn!(
            "{}: the checker ({program}) {first}; retrying with a new one",
            f.prepared.shown()
        );
        let timeout = self.timeout;
        let again = self.worker(version).and_then(|w| {
            w.send_payload(&f.prepared.payload, timeout)?;
            let payload = w.recv(timeout)?;
            Ok(protocol::decode(&payload, f.prepared.levels)?)
        });
        match again {
            Ok(answer) => Ok(answer),
            Err(second) => {
                if let Some((_, w)) = self.held.take() {
                    w.kill();
                }
                Err(format!(
                    "the checker ({program}) {first}; a new one also failed: {second}"
                ))
            }
        }
    }
}
