//! Level prediction runs on every source of a build root, whatever its bytes: it must never
//! panic, never recurse without bound, and take time linear in the size of its input. This is
//! the stable-Rust counterpart of the `cargo fuzz` target in fuzz/ (see README): random bytes
//! biased towards what the scan cares about, and random mutations of real stdlib sources and
//! of generated programs, for a few seconds (`PYCLINK_SCAN_FUZZ_SECONDS`, default 4).
//!
//! A panic fails the test with the input's seed in the message (`PYCLINK_SCAN_FUZZ_SEED`
//! replays a run).

mod common;
mod levels;

use levels::generate::{self, Rng};
use pyclink::python::predict::predict;
use std::time::{Duration, Instant};

/// Bytes the scanner treats specially, more often than chance would pick them.
const INTERESTING: &[&[u8]] = &[
    b"'",
    b"\"",
    b"'''",
    b"\"\"\"",
    b"f'",
    b"rf\"",
    b"t'",
    b"b'",
    b"{",
    b"}",
    b"{{",
    b"}}",
    b":",
    b"!r",
    b"=",
    b"\\",
    b"\\\n",
    b"\\\r\n",
    b"\\N{",
    b"#",
    b"\n",
    b"\r",
    b"\r\n",
    b"\x0c",
    b"\t",
    b" ",
    b"(",
    b")",
    b"[",
    b"]",
    b";",
    b"assert",
    b"__debug__",
    "__\u{ff44}ebug__".as_bytes(),
    "\u{ff3f}".as_bytes(),
    b"1if",
    b"0x",
    b"1e",
    b".5",
    b"...",
    b"\xef\xbb\xbf",
    b"# coding: latin-1\n",
    b"\x00",
    b"\xff",
    "\u{e4}".as_bytes(),
    b"def f():\n    ",
    b"class A: ",
    b"lambda: ",
    b"match x:\n case 1 if ",
];

fn random_input(rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let len = rng.below(max_len + 1);
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        if rng.chance(60) {
            let piece = INTERESTING[rng.below(INTERESTING.len())];
            v.extend_from_slice(piece);
        } else {
            v.push(rng.next() as u8);
        }
    }
    v
}

fn mutate(rng: &mut Rng, src: &mut Vec<u8>, donor: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let at = if src.is_empty() {
            0
        } else {
            rng.below(src.len())
        };
        match rng.below(6) {
            0 => {
                let end = (at + rng.below(64)).min(src.len());
                src.drain(at..end);
            }
            1 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                src.splice(at..at, piece.iter().copied());
            }
            2 if !src.is_empty() => src[at] = rng.next() as u8,
            3 if !donor.is_empty() => {
                let from = rng.below(donor.len());
                let end = (from + rng.below(256)).min(donor.len());
                src.splice(at..at, donor[from..end].iter().copied());
            }
            4 => {
                let end = (at + rng.below(256)).min(src.len());
                let copy = src[at..end].to_vec();
                src.splice(at..at, copy);
            }
            _ => src.truncate(at),
        }
    }
}

/// Runs `predict` on `input`, naming the seed if it panics.
fn scan(input: &[u8], what: &str, seed: u64) {
    let result = std::panic::catch_unwind(|| predict(input));
    if result.is_err() {
        panic!(
            "predict panicked on {what} from seed {seed} (PYCLINK_SCAN_FUZZ_SEED={seed}):\n{}",
            levels::rust_literal(input)
        );
    }
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let seconds = std::env::var("PYCLINK_SCAN_FUZZ_SECONDS")
        .map(|s| s.parse().expect("PYCLINK_SCAN_FUZZ_SECONDS: a number"))
        .unwrap_or(4);
    let base = std::env::var("PYCLINK_SCAN_FUZZ_SEED")
        .map(|s| s.parse().expect("PYCLINK_SCAN_FUZZ_SEED: a number"))
        .unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("scan fuzz: seed {base}");
    let corpus = levels::host_stdlib_sources(None);
    assert!(!corpus.is_empty(), "no stdlib sources found");
    let budget = Duration::from_secs(seconds) / 3;
    let mut counts = [0usize; 3];
    let mut bytes = 0usize;
    let mut seed = base;
    for (kind, count) in counts.iter_mut().enumerate() {
        let started = Instant::now();
        while started.elapsed() < budget {
            seed = seed.wrapping_add(1);
            let mut rng = Rng::new(seed);
            let (input, what) = match kind {
                0 => (random_input(&mut rng, 4096), "random bytes"),
                1 => {
                    let mut src = corpus[rng.below(corpus.len())].clone();
                    let donor = &corpus[rng.below(corpus.len())];
                    mutate(&mut rng, &mut src, donor);
                    (src, "a mutated stdlib source")
                }
                _ => {
                    let mut src = generate::program(rng.next());
                    let donor = generate::program(rng.next());
                    mutate(&mut rng, &mut src, &donor);
                    (src, "a mutated generated program")
                }
            };
            scan(&input, what, seed);
            bytes += input.len();
            *count += 1;
        }
    }
    println!(
        "scan fuzz: {} random inputs, {} mutated stdlib sources, {} mutated generated programs \
         ({:.1} MB) without a panic",
        counts[0],
        counts[1],
        counts[2],
        bytes as f64 / 1e6
    );
    assert!(counts.iter().all(|&c| c > 0));
}

/// The time this thread has been on a CPU (Linux's schedstat, in nanoseconds): what the scan
/// costs without the time other processes hold the CPU. `None` where the kernel does not say.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The cheapest of three rounds of scanning `input` `times` times, in CPU time where the
/// kernel tells it, else in wall time. A round over a second is answer enough.
fn cost(input: &[u8], times: usize) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let (cpu, wall) = (cpu_time(), Instant::now());
        for _ in 0..times {
            std::hint::black_box(predict(std::hint::black_box(input)));
        }
        let spent = match (cpu, cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => wall.elapsed(),
        };
        best = best.min(spent);
        if best > Duration::from_secs(1) {
            break;
        }
    }
    best
}

/// Inputs made of one piece repeated, each of which could send a careless scanner back over
/// what it has read (or deep into recursion). Scanning 8 MiB once must cost about what
/// scanning 64 KiB 128 times costs, never 128 times that (quadratic). Both measure the same
/// bytes for about as long, so a loaded machine slows both alike.
#[test]
fn scan_time_is_linear_in_the_input() {
    let stdlib = levels::host_stdlib_sources(None);
    let biggest = stdlib.iter().max_by_key(|s| s.len()).unwrap().clone();
    let pieces: Vec<(&str, Vec<u8>)> = vec![
        ("a stdlib source", biggest),
        ("names", b"abc ".to_vec()),
        ("non-ASCII names", "\u{ff44}\u{e4}x ".as_bytes().to_vec()),
        ("one long non-ASCII name", "\u{ff44}".as_bytes().to_vec()),
        ("open f-string fields", b"f'{".to_vec()),
        ("nested format specs", b"f'{x:{".to_vec()),
        ("f-string text", b"f'''a{x}b{{".to_vec()),
        ("open parentheses", b"(".to_vec()),
        ("closing parentheses", b")".to_vec()),
        ("quotes", b"'''\"".to_vec()),
        ("quote pairs", b"''".to_vec()),
        ("escapes in a string", b"'\\\\\\".to_vec()),
        ("continuations", b"\\\n".to_vec()),
        ("comments ended by \\r", b"#'\r".to_vec()),
        ("coding words", b"# coding=coding:".to_vec()),
        ("numbers", b"0x1_2e5j1if".to_vec()),
        ("dots", b".".to_vec()),
        ("named escapes", b"f'\\N{A".to_vec()),
    ];
    // The cost of a byte in 64 KiB inputs (scanned 128 times: enough CPU time to measure),
    // against that in ever larger inputs: a quadratic scan's grows with the size and fails
    // at the first step past 16 times, within seconds.
    const SMALL: usize = 64 * 1024;
    const REPEAT: usize = 128;
    let mut report = Vec::new();
    for (what, piece) in pieces {
        let input = |size: usize| -> Vec<u8> { piece.iter().copied().cycle().take(size).collect() };
        let per_byte = |d: Duration, bytes: usize| d.as_secs_f64() / bytes as f64;
        let base = per_byte(cost(&input(SMALL), REPEAT), SMALL * REPEAT);
        for size in [SMALL * 8, SMALL * 32, SMALL * 128] {
            let large = input(size);
            // A step that looks superlinear is measured again; only one that stays so fails.
            let mut linear = false;
            for _attempt in 0..3 {
                let spent = cost(&large, 1);
                let ratio = per_byte(spent, size) / base.max(1e-12);
                report.push(format!(
                    "{what}: {:.1} ns/byte in 64 KiB, {:.1} ns/byte in {} KiB (x{ratio:.1})",
                    base * 1e9,
                    per_byte(spent, size) * 1e9,
                    size / 1024
                ));
                // Below a few scheduler ticks the ratio is noise.
                if ratio < 16.0 || spent < Duration::from_millis(20) {
                    linear = true;
                    break;
                }
                if spent > Duration::from_secs(2) {
                    break;
                }
            }
            assert!(
                linear,
                "scanning {what} is not linear:\n{}",
                report.join("\n")
            );
        }
    }
    println!("{}", report.join("\n"));
}
