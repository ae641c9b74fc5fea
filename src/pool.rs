//! Step 3's scheduling: `jobs` threads share one queue of all versions' sources (largest first);
//! each thread drives one worker per version it meets, so every core has a compile in flight.
//! A worker that dies or hangs is replaced and the file retried once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use crate::compile::{self, Options, Outcome, Target};
use crate::fsroot::{display_in_root, Root};
use crate::plan::Job;
use crate::settings::Levels;
use crate::worker::{Compiled, Launch, Worker};

/// Per version: how to start workers, and what its pycs look like.
pub struct Lane {
    pub launch: Launch,
    pub target: Target,
    /// Workers already started (the one that proved the interpreter), taken before spawning.
    pub spare: Mutex<Vec<Worker>>,
}

/// Run every job (`lanes[v]` exists for every version `v` that has jobs); `on_outcome` gets each result on the calling thread, in completion order.
pub fn run(
    root: &Root,
    jobs: &[Job],
    lanes: &[Option<Lane>],
    opts: Options,
    threads: usize,
    timeout: Duration,
    mut on_outcome: impl FnMut(&Job, Outcome),
) {
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, jobs.len().max(1));
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|s| {
        for t in 0..threads {
            let tx = tx.clone();
            let next = &next;
            std::thread::Builder::new()
                .name(format!("compile-{t}"))
                .spawn_scoped(s, move || {
                    let mut workers: Vec<Option<Worker>> = lanes.iter().map(|_| None).collect();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let lane = lanes[job.version]
                            .as_ref()
                            .expect("a lane for every version with sources");
                        let slot = &mut workers[job.version];
                        let mut compile = |src: &[u8], dfile: &[u8], levels: Levels| {
                            compile_with_retry(slot, lane, src, dfile, levels, timeout, &job.rel)
                        };
                        let outcome = compile::process(root, job, &lane.target, opts, &mut compile);
                        if tx.send((i, outcome)).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn compile thread");
        }
        drop(tx);
        for (i, outcome) in rx {
            on_outcome(&jobs[i], outcome);
        }
    });
}

fn compile_with_retry(
    slot: &mut Option<Worker>,
    lane: &Lane,
    src: &[u8],
    dfile: &[u8],
    levels: Levels,
    timeout: Duration,
    rel: &std::path::Path,
) -> Result<Compiled, String> {
    let mut last = String::new();
    for attempt in 0..2 {
        if slot.is_none() {
            let spare = lane.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
            *slot = Some(match spare {
                Some(w) => w,
                None => Worker::start(&lane.launch, timeout).map_err(|e| {
                    format!(
                        "cannot start a {} worker: {e}",
                        lane.launch.program.display()
                    )
                })?,
            });
        }
        let worker = slot.as_mut().expect("worker present");
        match worker.compile(src, dfile, levels, timeout) {
            Ok(c) => return Ok(c),
            Err(failure) => {
                last = failure.to_string();
                // Dropping the worker kills it; the next attempt starts a fresh one.
                *slot = None;
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
