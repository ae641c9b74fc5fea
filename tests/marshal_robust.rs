//! The marshal walker on data nobody promised to be valid: random bytes and mutations (bit
//! flips, truncations, splices, insertions) of real marshal data from the host's python3 must
//! give `Ok` or `Err`, never a panic or a hang; whatever is accepted must normalize to a fixed
//! point equal to the naive implementation's. Randomly generated valid data with many equal
//! subtrees and references checks the sharing logic against the naive implementation.

mod common;
#[path = "marshal_normalize/oracle.rs"]
mod oracle;

use std::borrow::Cow;
use std::process::Command;

use pyclink::python::marshal::{Format, Normalizer};
use pyclink::python::{table, PyVersion};

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Every marshal format the version table knows.
fn formats() -> Vec<Format> {
    let mut f: Vec<Format> = table::all().into_iter().filter_map(|f| f.marshal).collect();
    f.dedup();
    f
}

/// CPython 3.`minor`'s format.
fn cpython(minor: u32) -> Format {
    table::facts(PyVersion::cpython(3, minor))
        .and_then(|f| f.marshal)
        .unwrap()
}

/// Marshal data of a few modules compiled by the host's python3, at levels 0 and 2.
fn real_samples() -> (Format, Vec<Vec<u8>>) {
    let v = common::host_python3_version();
    let python = common::find_python(&v).expect("the host python3");
    let script = r#"
import marshal, struct, sys, sysconfig, os
lib = sysconfig.get_paths()["stdlib"]
out = sys.stdout.buffer
for name in ("keyword.py", "colorsys.py", "fnmatch.py", "shlex.py", "textwrap.py", "string.py", "bisect.py", "glob.py"):
    path = os.path.join(lib, name)
    try:
        source = open(path, "rb").read()
    except OSError:
        continue
    for level in (0, 2):
        data = marshal.dumps(compile(source, path, "exec", dont_inherit=True, optimize=level))
        out.write(struct.pack("<I", len(data)) + data)
"#;
    let out = Command::new(&python)
        .args(["-I", "-c", script])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = Vec::new();
    let mut d = &out.stdout[..];
    while d.len() >= 4 {
        let n = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize;
        samples.push(d[4..4 + n].to_vec());
        d = &d[4 + n..];
    }
    assert!(
        samples.len() >= 8,
        "too few samples from {}",
        python.display()
    );
    let version: PyVersion = v.parse().unwrap();
    let format = table::facts(version).and_then(|f| f.marshal).unwrap();
    (format, samples)
}

/// Feed `data` to every entry point; on success the result must be a fixed point and agree
/// with the naive implementation. Returns whether it was accepted.
fn exercise(n: &mut Normalizer, data: &[u8], v: Format) -> bool {
    let _ = n.code_objects(data, v);
    let _ = n.is_normal(data, v);
    match n.normalize(data, v) {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
        Ok(out) => {
            let out = out.into_owned();
            assert!(
                matches!(n.normalize(&out, v), Ok(Cow::Borrowed(_))),
                "not a fixed point: {data:02x?}"
            );
            assert!(
                out == oracle::normalize(data, v),
                "differs from the naive normal form: {data:02x?}"
            );
            true
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut n = Normalizer::new();
    let formats = formats();
    // Biased towards type codes, so the walk gets past the first byte.
    let alphabet = b"0NFTS.iIfgxylstrua)Az([{<>Zc:\x00\x01\x02\x03\x80\xa9\xda\xe3\xff";
    let mut accepted = 0;
    for round in 0..30_000 {
        let len = rng.below(64);
        let data: Vec<u8> = (0..len)
            .map(|_| {
                if rng.chance(70) {
                    alphabet[rng.below(alphabet.len())]
                } else {
                    rng.next() as u8
                }
            })
            .collect();
        let v = formats[round % formats.len()];
        accepted += usize::from(exercise(&mut n, &data, v));
    }
    println!("random bytes: 30000 cases, {accepted} accepted");
}

#[test]
fn mutated_real_data_never_panics() {
    let (host, samples) = real_samples();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut n = Normalizer::new();
    let formats = formats();
    for s in &samples {
        assert!(exercise(&mut n, s, host), "real data must be accepted");
    }
    let (mut cases, mut accepted) = (0, 0);
    for _ in 0..4_000 {
        let a = &samples[rng.below(samples.len())];
        let b = &samples[rng.below(samples.len())];
        let mut d = a.clone();
        match rng.below(6) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(d.len());
                    d[i] ^= 1 << rng.below(8);
                }
            }
            1 => d.truncate(rng.below(d.len())),
            2 => {
                let (i, j) = (rng.below(a.len()), rng.below(b.len()));
                d = [&a[..i], &b[j..]].concat();
            }
            3 => {
                let i = rng.below(d.len());
                let junk: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                d.splice(i..i, junk);
            }
            4 => {
                let i = rng.below(d.len());
                let j = (i + 1 + rng.below(16)).min(d.len());
                d.drain(i..j);
            }
            _ => {
                // A length or count field made huge or negative.
                let i = rng.below(d.len().saturating_sub(4));
                d[i..i + 4].copy_from_slice(&[0xff, 0xff, 0xff, rng.next() as u8]);
            }
        }
        for v in [host, formats[rng.below(formats.len())]] {
            cases += 1;
            accepted += usize::from(exercise(&mut n, &d, v));
        }
    }
    println!("mutations: {cases} cases, {accepted} accepted");
}

/// Random valid marshal data over a tiny alphabet of values, so that equal subtrees, flags
/// on unused objects and references (to strings, ints, containers) are frequent.
struct Gen {
    rng: Rng,
    out: Vec<u8>,
    /// Reference slots of completed flagged objects.
    done: Vec<u32>,
    slots: u32,
}

impl Gen {
    fn object(&mut self, depth: usize) {
        let choice = self.rng.below(if depth > 4 { 9 } else { 14 });
        if choice == 0 && !self.done.is_empty() {
            let slot = self.done[self.rng.below(self.done.len())];
            self.out.push(b'r');
            self.out.extend_from_slice(&slot.to_le_bytes());
            return;
        }
        if choice <= 1 {
            let s = b"NTF.S"[self.rng.below(5)];
            self.out
                .push(s | if self.rng.chance(10) { 0x80 } else { 0 });
            return;
        }
        let flag = self.rng.chance(40);
        let slot = self.slots;
        let start = self.out.len();
        if flag {
            self.slots += 1;
        }
        match choice {
            2 => {
                self.out.push(b'i');
                self.out
                    .extend_from_slice(&(self.rng.below(3) as i32).to_le_bytes());
            }
            3 | 4 => {
                let s = ["a", "b", ""][self.rng.below(3)];
                self.out.push(if choice == 3 { b'z' } else { b'Z' });
                self.out.push(s.len() as u8);
                self.out.extend_from_slice(s.as_bytes());
            }
            5 => {
                self.out.push(b'u');
                self.out.extend_from_slice(&2u32.to_le_bytes());
                self.out.extend_from_slice("é".as_bytes());
            }
            6 => {
                self.out.push(b'g');
                let x = [0.0f64, -0.0, 1.5][self.rng.below(3)];
                self.out.extend_from_slice(&x.to_le_bytes());
            }
            7 => self.out.extend_from_slice(&[b'l', 2, 0, 0, 0, 1, 0, 1, 0]),
            8 => {
                self.out.push(b's');
                self.out.extend_from_slice(&1u32.to_le_bytes());
                self.out.push(b'x');
            }
            9 | 10 => {
                let n = self.rng.below(4);
                self.out.extend_from_slice(&[b')', n as u8]);
                for _ in 0..n {
                    self.object(depth + 1);
                }
            }
            11 => {
                let n = self.rng.below(3);
                self.out.push(if self.rng.chance(50) { b'[' } else { b'>' });
                self.out.extend_from_slice(&(n as u32).to_le_bytes());
                for _ in 0..n {
                    self.object(depth + 1);
                }
            }
            _ => {
                self.out.push(b'{');
                for _ in 0..self.rng.below(3) {
                    self.object(depth + 1);
                    self.object(depth + 1);
                }
                self.out.push(b'0');
            }
        }
        if flag {
            self.out[start] |= 0x80;
            self.done.push(slot);
        }
    }
}

#[test]
fn generated_structures_match_the_naive_normal_form() {
    let mut g = Gen {
        rng: Rng(0x2545_F491_4F6C_DD1D),
        out: Vec::new(),
        done: Vec::new(),
        slots: 0,
    };
    let mut n = Normalizer::new();
    let mut changed = 0;
    for _ in 0..20_000 {
        g.out.clear();
        g.done.clear();
        g.slots = 0;
        g.object(0);
        let data = g.out.clone();
        assert!(
            exercise(&mut n, &data, cpython(11)),
            "valid data refused: {data:02x?}"
        );
        changed += usize::from(!n.is_normal(&data, cpython(11)).unwrap());
    }
    println!("generated: 20000 structures, {changed} changed by normalizing");
    assert!(
        changed > 5_000,
        "the generator should mostly produce non-normal data"
    );
}
