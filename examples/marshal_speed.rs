//! How fast the marshal normal form is, against what it costs the interpreter to compile the
//! same code, in the same run.
//!
//!     cargo run --release --example marshal_speed [X.Y] [ROUNDS]
//!
//! The interpreter (default 3.11, found with `pyenv prefix` or on PATH) compiles every module
//! of its standard library at levels 0, 1 and 2, timing each compile() and marshal.dumps()
//! (wall and CPU), and hands the marshal data over. The normalizer then runs over all of it
//! ROUNDS times (default 5) on one thread; the best round is reported, in wall time and in
//! time on the CPU (from /proc/thread-self/schedstat, so that other processes on a busy
//! machine count less), as are a pass over data that is already normal (what re-checking a
//! tree costs) and the code-object visitor.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyclink::python::marshal::{self, Normalizer};

const SCRIPT: &str = r#"
import marshal, os, struct, sys, sysconfig, time, warnings
warnings.simplefilter("ignore")
out = sys.stdout.buffer
lib = sysconfig.get_paths()["stdlib"]
compile_s = dumps_s = compile_cpu = 0.0
for top, dirs, names in os.walk(lib):
    dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__"))
    for name in sorted(names):
        if not name.endswith(".py"):
            continue
        path = os.path.join(top, name)
        try:
            source = open(path, "rb").read()
        except OSError:
            continue
        for level in (0, 1, 2):
            c = time.process_time()
            t = time.perf_counter()
            try:
                code = compile(source, path, "exec", dont_inherit=True, optimize=level)
            except (SyntaxError, ValueError):
                break
            t2 = time.perf_counter()
            compile_cpu += time.process_time() - c
            data = marshal.dumps(code)
            t3 = time.perf_counter()
            compile_s += t2 - t
            dumps_s += t3 - t2
            out.write(struct.pack("<I", len(data)) + data)
out.write(struct.pack("<I", 0xFFFFFFFF))
out.write(struct.pack("<ddd", compile_s, dumps_s, compile_cpu))
out.write(sys.version.split()[0].encode())
"#;

fn find_python(version: &str) -> Option<PathBuf> {
    if let Ok(out) = Command::new("pyenv").args(["prefix", version]).output() {
        if out.status.success() {
            let prefix = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let p = Path::new(&prefix).join(format!("bin/python{version}"));
            if p.exists() {
                return Some(p);
            }
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(format!("python{version}")))
        .find(|p| p.exists())
}

/// This thread's time on a CPU, if the kernel tells.
fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(s.split(' ').next()?.parse().ok()?))
}

/// The best (wall, CPU) of `rounds` runs of `f`.
fn best_of(rounds: usize, mut f: impl FnMut()) -> (Duration, Option<Duration>) {
    let mut best = (Duration::MAX, None::<Duration>);
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), cpu_time());
        f();
        let (wall, cpu) = (t.elapsed(), cpu_time().zip(c).map(|(b, a)| b - a));
        best.0 = best.0.min(wall);
        best.1 = match (best.1, cpu) {
            (Some(b), Some(c)) => Some(b.min(c)),
            (b, c) => b.or(c),
        };
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let version = args.first().map(String::as_str).unwrap_or("3.11");
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let Some(python) = find_python(version) else {
        eprintln!("marshal_speed: python{version} not found (pyenv prefix {version}, PATH)");
        std::process::exit(2);
    };
    let v = version
        .parse()
        .ok()
        .and_then(pyclink::python::table::facts)
        .and_then(|f| f.marshal)
        .expect("a version whose marshal format the version table knows");

    eprintln!(
        "compiling the {version} stdlib at levels 0, 1, 2 with {} ...",
        python.display()
    );
    let wall = Instant::now();
    let mut child = Command::new(&python)
        .args(["-I", "-c", SCRIPT])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the interpreter");
    let mut raw = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut raw).unwrap();
    assert!(child.wait().unwrap().success());
    let python_wall = wall.elapsed();

    let mut bodies = Vec::new();
    let mut d = &raw[..];
    loop {
        let n = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        d = &d[4..];
        if n == u32::MAX {
            break;
        }
        bodies.push(&d[..n as usize]);
        d = &d[n as usize..];
    }
    let compile_s = f64::from_le_bytes(d[..8].try_into().unwrap());
    let dumps_s = f64::from_le_bytes(d[8..16].try_into().unwrap());
    let compile_cpu = f64::from_le_bytes(d[16..24].try_into().unwrap());
    let full_version = String::from_utf8_lossy(&d[24..]).into_owned();
    let bytes: usize = bodies.iter().map(|b| b.len()).sum();

    let mut n = Normalizer::new();
    let normal: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| n.normalize(b, v).expect("valid marshal data").into_owned())
        .collect();
    let changed = bodies
        .iter()
        .zip(&normal)
        .filter(|(a, b)| a[..] != b[..])
        .count();
    let normal_bytes: usize = normal.iter().map(Vec::len).sum();

    let normalize = best_of(rounds, || {
        for b in &bodies {
            std::hint::black_box(n.normalize(b, v).unwrap());
        }
    });
    let recheck = best_of(rounds, || {
        for b in &normal {
            assert!(n.is_normal(b, v).unwrap());
        }
    });
    let visit = best_of(rounds, || {
        for b in &bodies {
            std::hint::black_box(n.code_objects(b, v).unwrap());
        }
    });
    let one_shot = best_of(rounds, || {
        for b in &bodies {
            std::hint::black_box(marshal::normalize(b, v).unwrap());
        }
    });

    let mb = bytes as f64 / 1e6;
    println!(
        "Python {full_version}: {} marshalled code objects (stdlib x 3 levels), {mb:.1} MB; \
         normal form {:.1} MB, {changed} changed",
        bodies.len(),
        normal_bytes as f64 / 1e6
    );
    println!(
        "interpreter: compile() {compile_s:.2} s wall, {compile_cpu:.2} s CPU; marshal.dumps() \
         {dumps_s:.2} s; {:.2} s wall for the whole run",
        python_wall.as_secs_f64()
    );
    println!("best of {rounds} rounds, one thread:          wall                  CPU");
    for (what, (wall, cpu)) in [
        ("normalize (reused buffers)", normalize),
        ("normalize (fresh buffers per file)", one_shot),
        ("is_normal on normal data", recheck),
        ("code_objects visitor", visit),
    ] {
        let cpu = match cpu {
            Some(c) => format!(
                "{:6.3} s {:5.0} MB/s {:4.1}%",
                c.as_secs_f64(),
                mb / c.as_secs_f64(),
                100.0 * c.as_secs_f64() / compile_cpu
            ),
            None => "unknown".into(),
        };
        println!(
            "  {what:36} {:6.3} s {:5.0} MB/s {:4.1}%   {cpu}",
            wall.as_secs_f64(),
            mb / wall.as_secs_f64(),
            100.0 * wall.as_secs_f64() / compile_s,
        );
    }
    println!("(% = share of the interpreter's compile() time, wall against wall, CPU against CPU)");
}
