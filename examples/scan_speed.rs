//! How fast level prediction scans sources, and how much it predicts: the figures the README
//! quotes. `cargo run --release --example scan_speed -- [DIR...]` (default: the host python3's
//! stdlib, without site-packages). Prints the best of several rounds over all files.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let mut dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('stdlib'))",
            ])
            .output()
            .expect("python3 runs");
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let mut sources = Vec::new();
    for dir in &dirs {
        for e in walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_entry(|e| e.file_name() != "site-packages")
            .filter_map(Result::ok)
        {
            if e.file_type().is_file() && e.path().extension() == Some("py".as_ref()) {
                if let Ok(src) = std::fs::read(e.path()) {
                    sources.push(src);
                }
            }
        }
    }
    let bytes: usize = sources.iter().map(Vec::len).sum();
    let (mut l1, mut l2, mut non_ascii) = (0usize, 0usize, 0usize);
    for s in &sources {
        let p = pyclink::python::predict::predict(s);
        l1 += usize::from(p.same.level1_is_level0());
        l2 += usize::from(p.same.level2_is_level1());
        non_ascii += usize::from(p.non_ascii_names);
    }
    let mut best = Duration::MAX;
    for _ in 0..7 {
        let started = Instant::now();
        for s in &sources {
            std::hint::black_box(pyclink::python::predict::predict(std::hint::black_box(s)));
        }
        best = best.min(started.elapsed());
    }
    println!(
        "{} files, {:.1} MB: level 1 = level 0 predicted for {l1}, level 2 = level 1 for {l2} \
         ({:.1}% of level compilations saved), {non_ascii} with non-ASCII names; \
         scan {:.1} ms ({:.0} MB/s, best of 7)",
        sources.len(),
        bytes as f64 / 1e6,
        100.0 * (l1 + l2) as f64 / (3 * sources.len()).max(1) as f64,
        best.as_secs_f64() * 1e3,
        bytes as f64 / 1e6 / best.as_secs_f64()
    );
}
