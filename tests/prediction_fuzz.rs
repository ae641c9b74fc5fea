//! Differential fuzzing of level prediction against every installed CPython: random programs
//! (tests/levels/generate.rs; one in four an edited source of the host's stdlib) are compiled
//! at levels 0, 1 and 2 by each interpreter, and no pair of levels that `pyclink::predict`
//! calls identical may differ in code.
//!
//! The bounded run in the normal suite takes about a minute. Longer runs:
//!
//! ```sh
//! PYCLINK_FUZZ_SECONDS=1800 nice cargo test --release --test prediction_fuzz -- --nocapture
//! PYCLINK_FUZZ_PROGRAMS=20000 PYCLINK_FUZZ_SEED=1234 cargo test --release --test prediction_fuzz
//! ```
//!
//! (`cargo test`, not nextest, whose slow-test timeout ends a run after 16 minutes.)
//!
//! `PYCLINK_FUZZ_SEED` replays a run (the seed is printed); `PYCLINK_FUZZ_DUMP=DIR` writes every
//! program to DIR. A disagreement prints the program, its seed and a Rust literal for a unit test.

mod common;
mod levels;

use levels::{check_levels, generate, interpreters, rust_literal, Interpreter, Outcome};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BATCH: usize = 250;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
    )
}

#[derive(Default)]
struct Tally {
    programs: usize,
    compiled: usize,
    skipped: BTreeMap<String, usize>,
    crashed: usize,
    pairs: usize,
    predicted_same: usize,
    really_same: usize,
    predicted_different: usize,
}

struct Disagreement {
    version: String,
    seed: u64,
    pair: &'static str,
    program: Vec<u8>,
}

#[test]
fn prediction_agrees_with_cpython_on_random_programs() {
    let seconds = env_u64("PYCLINK_FUZZ_SECONDS").unwrap_or(60);
    let max_programs = env_u64("PYCLINK_FUZZ_PROGRAMS").map(|n| n as usize);
    let base_seed = env_u64("PYCLINK_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let dump = std::env::var_os("PYCLINK_FUZZ_DUMP").map(std::path::PathBuf::from);
    let budget = match max_programs {
        Some(_) => Duration::MAX,
        None => Duration::from_secs(seconds),
    };
    println!("fuzz: seed {base_seed} (PYCLINK_FUZZ_SEED={base_seed} replays this run)");

    let pythons = interpreters("prediction_fuzz");
    // Up to 12 KB: cheap to compile at three levels.
    let corpus = levels::host_stdlib_sources(Some(12_000));
    let work = tempfile::tempdir().unwrap();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut wrong: Vec<Disagreement> = Vec::new();
    let started = Instant::now();
    let mut generated = 0usize;
    // A batch is not started when it would end past the budget (judged by the last one), so the
    // run ends within the budget rather than up to a batch (half a minute here) after it.
    let mut last_batch = Duration::ZERO;
    while started.elapsed().saturating_add(last_batch) < budget
        && max_programs.map_or(true, |m| generated < m)
    {
        let batch_started = Instant::now();
        let n = max_programs.map_or(BATCH, |m| BATCH.min(m - generated));
        let seeds: Vec<u64> = (0..n)
            .map(|i| base_seed.wrapping_add((generated + i) as u64))
            .collect();
        // One in four is a real stdlib source, edited.
        let programs: Vec<Vec<u8>> = seeds
            .iter()
            .map(|&s| match s % 4 {
                0 => generate::mutated(s, &corpus),
                _ => generate::program(s),
            })
            .collect();
        if let Some(dir) = &dump {
            std::fs::create_dir_all(dir).unwrap();
            for (s, p) in seeds.iter().zip(&programs) {
                std::fs::write(dir.join(format!("{s}.py")), p).unwrap();
            }
        }
        generated += n;
        let predictions: Vec<_> = programs
            .iter()
            .map(|p| pyclink::python::predict::predict(p).same)
            .collect();
        // Two interpreters at a time: the machine has two cores.
        let results: Vec<(Interpreter, Vec<Outcome>)> = std::thread::scope(|scope| {
            pythons
                .chunks(2)
                .flat_map(|pair| {
                    let handles: Vec<_> = pair
                        .iter()
                        .map(|py| {
                            let (programs, dir) = (&programs, work.path());
                            scope.spawn(move || {
                                (py.clone(), check_levels(&py.python, programs, dir))
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap())
                        .collect::<Vec<_>>()
                })
                .collect()
        });
        for (py, outcomes) in results {
            let t = tallies.entry(py.version.clone()).or_default();
            for (i, outcome) in outcomes.iter().enumerate() {
                t.programs += 1;
                let (eq01, eq12) = match outcome {
                    Outcome::Skipped(why) => {
                        *t.skipped.entry(why.clone()).or_default() += 1;
                        continue;
                    }
                    Outcome::Crashed => {
                        t.crashed += 1;
                        continue;
                    }
                    Outcome::Levels { eq01, eq12 } => (*eq01, *eq12),
                };
                t.compiled += 1;
                let same = predictions[i];
                for (predicted, really, pair) in [
                    (same.level1_is_level0(), eq01, "0 and 1"),
                    (same.level2_is_level1(), eq12, "1 and 2"),
                ] {
                    t.pairs += 1;
                    t.really_same += usize::from(really);
                    if predicted {
                        t.predicted_same += 1;
                        if !really {
                            wrong.push(Disagreement {
                                version: py.version.clone(),
                                seed: seeds[i],
                                pair,
                                program: programs[i].clone(),
                            });
                        }
                    } else {
                        t.predicted_different += 1;
                    }
                }
            }
        }
        last_batch = batch_started.elapsed();
    }

    println!(
        "fuzz: {generated} programs in {:.0} s, seed {base_seed}",
        started.elapsed().as_secs_f64()
    );
    for (version, t) in &tallies {
        let skipped: usize = t.skipped.values().sum();
        println!(
            "fuzz python{version}: {} programs, {} compiled, {skipped} skipped {:?}, {} crashed; \
             {} level pairs checked: {} predicted identical, {} predicted different, {} really \
             identical",
            t.programs,
            t.compiled,
            t.skipped,
            t.crashed,
            t.pairs,
            t.predicted_same,
            t.predicted_different,
            t.really_same
        );
    }
    for w in &wrong {
        println!(
            "WRONG on python{}: levels {} predicted identical but differ; seed {} \
             (PYCLINK_FUZZ_SEED={} PYCLINK_FUZZ_PROGRAMS=1):\n{}\n{}\n",
            w.version,
            w.pair,
            w.seed,
            w.seed,
            String::from_utf8_lossy(&w.program),
            rust_literal(&w.program)
        );
    }
    assert!(
        wrong.is_empty(),
        "{} predictions disagree with CPython (programs printed above)",
        wrong.len()
    );
    // The run must have checked something worth checking, on every version.
    for (version, t) in &tallies {
        assert!(
            t.compiled * 4 >= t.programs,
            "python{version}: only {} of {} programs compiled: the generator is broken",
            t.compiled,
            t.programs
        );
        assert!(
            t.predicted_same * 10 >= t.pairs && t.predicted_different * 10 >= t.pairs,
            "python{version}: predictions are lopsided ({} identical, {} different of {} pairs): \
             the generator does not exercise both",
            t.predicted_same,
            t.predicted_different,
            t.pairs
        );
        assert!(
            t.pairs > t.really_same,
            "python{version}: no level pair really differed"
        );
    }
}
