//! Choosing the interpreter for each version: `--interpreter X.Y=PATH`; else the build root's
//! own `usr/bin/pythonX.Y` when it can run on this host (how a Python package itself is
//! built); else the host's `pythonX.Y` (PATH, then pyenv). Each candidate is proven by starting
//! a worker and reading its hello: the version, magic number and cache tag come from there.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::fsroot::Root;
use crate::python::{Implementation, PyVersion};
use crate::worker::{Failure, Launch, Worker};

/// A chosen interpreter, with the worker that proved it (handed to the pool).
pub struct Interpreter {
    pub launch: Launch,
    pub first_worker: Worker,
}

/// Starts the interpreters of one run, each on the run's script (the compile worker, or
/// `pyclink verify`'s checker), and keeps those started only to be asked their version (a bare
/// `--interpreter PATH`, the host's `python3` for trees that name no version): the one then
/// chosen for that version is that same process, not a second one. An interpreter is started
/// once per run.
pub struct Starter {
    script: &'static str,
    timeout: Duration,
    /// Asked their version and not yet chosen.
    asked: Mutex<Vec<(Launch, Worker)>>,
}

impl fmt::Debug for Starter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let asked: Vec<PathBuf> = self.lock().iter().map(|(l, _)| l.program.clone()).collect();
        f.debug_struct("Starter").field("asked", &asked).finish()
    }
}

impl Starter {
    pub fn new(script: &'static str, timeout: Duration) -> Starter {
        Starter {
            script,
            timeout,
            asked: Mutex::new(Vec::new()),
        }
    }

    /// Ask a host interpreter which version it is; it is kept for [`select`].
    pub fn version_of(&self, program: &Path) -> Result<PyVersion, Failure> {
        let launch = host_launch(program.to_path_buf());
        let worker = self.start(&launch)?;
        let version = worker.hello.py_version();
        self.lock().push((launch, worker));
        Ok(version)
    }

    /// A worker of `launch`: the one asked its version, if any, else a new one.
    fn start(&self, launch: &Launch) -> Result<Worker, Failure> {
        let mut asked = self.lock();
        if let Some(i) = asked.iter().position(|(l, _)| l == launch) {
            return Ok(asked.swap_remove(i).1);
        }
        drop(asked);
        Worker::start_script(launch, self.script, self.timeout)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Launch, Worker)>> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a candidate interpreter was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("absent")]
    Absent,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a runnable ELF binary ({0})")]
    NotElf(#[from] goblin::error::Error),
    #[error("built for another machine (ELF machine {theirs}, this host {ours})")]
    ForeignMachine {
        theirs: &'static str,
        ours: &'static str,
    },
    #[error("{0}")]
    Failed(#[from] Failure),
    #[error("it is {got}, not {wanted}")]
    WrongVersion { got: PyVersion, wanted: PyVersion },
    /// PYTHONHOME splits at `:` (prefix:exec_prefix), LD_LIBRARY_PATH at `:` and `;`.
    #[error(
        "the build root's path {} holds '{separator}', which PYTHONHOME and LD_LIBRARY_PATH cannot carry",
        crate::escape::shown(root)
    )]
    RootPathSeparator { separator: char, root: PathBuf },
}

/// No interpreter for a version that has sources: everything that was tried, and why not.
#[derive(Debug)]
pub struct NotFound {
    pub version: PyVersion,
    /// The `--interpreter` given for it, if any (then nothing else was tried).
    pub given: Option<PathBuf>,
    pub tried: Vec<(String, Unusable)>,
    pub sources: u64,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tried: Vec<String> = self
            .tried
            .iter()
            .map(|(what, why)| format!("{what}: {why}"))
            .collect();
        match &self.given {
            Some(_) => write!(f, "no usable interpreter for {}: ", self.version)?,
            None => write!(f, "no interpreter found for {}; tried: ", self.version)?,
        }
        write!(
            f,
            "{} (needed for {})",
            tried.join("; "),
            crate::escape::plural(self.sources, "source")
        )
    }
}

/// The interpreter of every version in `needed` (with its number of sources): `given` ones
/// as named, the others found. Every version that has none is reported at once. `unreadable`:
/// versions whose trees could not all be read, whose unused interpreters go unmentioned.
pub fn select_all(
    needed: &BTreeMap<PyVersion, u64>,
    unreadable: &BTreeSet<PyVersion>,
    given: &BTreeMap<PyVersion, PathBuf>,
    root: &Root,
    starter: &Starter,
) -> Result<BTreeMap<PyVersion, Interpreter>, Vec<NotFound>> {
    let mut chosen = BTreeMap::new();
    let mut missing = Vec::new();
    for (&version, &sources) in needed {
        match select(
            version,
            root,
            given.get(&version).map(PathBuf::as_path),
            starter,
        ) {
            Ok(i) => {
                chosen.insert(version, i);
            }
            Err(mut e) => {
                e.sources = sources;
                missing.push(e);
            }
        }
    }
    // "No sources" beside "cannot read" contradicts it: the sources may well be there.
    let unused: BTreeSet<&PyVersion> = given
        .keys()
        .filter(|v| !needed.contains_key(v) && !unreadable.contains(v))
        .collect();
    for v in unused {
        log::warn!(
            "--interpreter {v}={}: no {v} sources in this run; not used",
            crate::escape::shown(&given[v])
        );
    }
    if missing.is_empty() {
        Ok(chosen)
    } else {
        Err(missing)
    }
}

/// Find the interpreter for `version`, or say everything that was tried.
pub fn select(
    version: PyVersion,
    root: &Root,
    given: Option<&Path>,
    starter: &Starter,
) -> Result<Interpreter, NotFound> {
    let mut tried = Vec::new();
    if let Some(path) = given {
        let launch = host_launch(path.to_path_buf());
        let origin = format!("--interpreter {}", crate::escape::shown(path));
        return prove(version, launch, &origin, starter).map_err(|why| {
            log_stderr(version, &origin, &why);
            NotFound {
                version,
                given: Some(path.to_path_buf()),
                tried: vec![(origin, why)],
                sources: 0,
            }
        });
    }

    // Candidates that are there and were meant to be used but do not work: said in one line
    // each once another is chosen (else the error lists them), never by their stderr.
    let mut passed_over = Vec::new();
    let origin = format!("the build root's /usr/bin/{}", version.command());
    match root_launch(version, root).and_then(|launch| prove(version, launch, &origin, starter)) {
        Ok(i) => return Ok(i),
        Err(why) => {
            if !matches!(why, Unusable::Absent) {
                passed_over.push(format!("{origin} not used: {why}{}", more_with_v(&why)));
            }
            reject(&mut tried, version, origin, why);
        }
    }

    for (origin, program) in host_candidates(version, &mut tried) {
        match prove(version, host_launch(program), &origin, starter) {
            Ok(i) => {
                for line in passed_over {
                    log::warn!("{version}: {line}");
                }
                return Ok(i);
            }
            Err(why) => {
                // A name that may be another version (`pypy3`) or Python 2 (`pypy`) is a
                // question asked, not an interpreter failing.
                if matches!(&why, Unusable::Failed(f) if !matches!(f, Failure::Unsupported(_))) {
                    passed_over.push(format!("{origin} not used: {why}{}", more_with_v(&why)));
                }
                reject(&mut tried, version, origin, why);
            }
        }
    }
    Err(NotFound {
        version,
        given: None,
        tried,
        sources: 0,
    })
}

/// Note a candidate passed over. One that is there but does not work is logged (-v), with the
/// last lines it wrote to stderr: the warning (or error) says why in one line.
fn reject(tried: &mut Vec<(String, Unusable)>, version: PyVersion, origin: String, why: Unusable) {
    if !matches!(why, Unusable::Absent | Unusable::NotFound) {
        log::info!("{version}: {origin} not used: {why}");
    }
    log_stderr(version, &origin, &why);
    tried.push((origin, why));
}

/// Where the stderr of a failed start is kept for -v, the one line says so (without -v).
fn more_with_v(why: &Unusable) -> &'static str {
    match why {
        Unusable::Failed(f) if !f.stderr().is_empty() && !log::log_enabled!(log::Level::Info) => {
            " (-v shows the end of its stderr)"
        }
        _ => "",
    }
}

/// With -v, the last lines an interpreter that failed to start wrote to its stderr.
fn log_stderr(version: PyVersion, origin: &str, why: &Unusable) {
    if let Unusable::Failed(f) = why {
        for line in f.stderr() {
            log::info!("{version}: {origin}, its stderr: {line}");
        }
    }
}

fn prove(
    version: PyVersion,
    launch: Launch,
    origin: &str,
    starter: &Starter,
) -> Result<Interpreter, Unusable> {
    let worker = starter.start(&launch)?;
    let got = worker.hello.py_version();
    if got != version {
        return Err(Unusable::WrongVersion {
            got,
            wanted: version,
        });
    }
    log::info!(
        "{version}: {} ({origin}), cache tag {}",
        worker.hello.executable,
        worker.hello.format.cache_tag
    );
    Ok(Interpreter {
        launch,
        first_worker: worker,
    })
}

/// The environment every worker gets (nothing else of ours leaks in).
fn base_env() -> Vec<(OsString, OsString)> {
    let mut env = vec![
        ("PYTHONHASHSEED".into(), "0".into()),
        ("LC_ALL".into(), "C.UTF-8".into()),
    ];
    // A host interpreter may need it to find its own libpython.
    if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
        env.push(("LD_LIBRARY_PATH".into(), v));
    }
    env
}

fn host_launch(program: PathBuf) -> Launch {
    Launch {
        program,
        env: base_env(),
    }
}

/// The root's own interpreter, if it is a binary for this machine. Its symlinks are resolved
/// inside the root; it runs with the root's stdlib (PYTHONHOME) and libpython (LD_LIBRARY_PATH).
fn root_launch(version: PyVersion, root: &Root) -> Result<Launch, Unusable> {
    let rel = Path::new("usr/bin").join(version.command());
    let file = root
        .open_resolved_in_root(&rel)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Unusable::Absent,
            _ => Unusable::Io(e),
        })?;
    // The path the kernel resolved, which lies inside the root by construction.
    let program = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let bytes = std::fs::read(&program)?;
    let needs_libpython = check_elf(&bytes)?;
    // Absolute and canonical (Root::open): the worker runs in `/`, where a relative PYTHONHOME
    // would name another directory, and every spelling of the root must start it alike.
    let usr = root.path().join("usr");
    let separators: &[u8] = if needs_libpython { b":;" } else { b":" };
    if let Some(&c) = root
        .path()
        .as_os_str()
        .as_bytes()
        .iter()
        .find(|b| separators.contains(b))
    {
        return Err(Unusable::RootPathSeparator {
            separator: char::from(c),
            root: root.path().to_path_buf(),
        });
    }
    let mut env = base_env();
    env.retain(|(k, _)| k != "LD_LIBRARY_PATH");
    env.push(("PYTHONHOME".into(), usr.clone().into_os_string()));
    // Its stdlib is the root's: the modules the worker imports (runpy, compileall, argparse)
    // must not leave pycs of their own in the build root, not even on a --dry-run.
    env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    if needs_libpython {
        let mut dirs: Vec<OsString> = ["lib64", "lib"]
            .iter()
            .map(|d| usr.join(d))
            .filter(|d| d.is_dir())
            .map(PathBuf::into_os_string)
            .collect();
        if let Some(host) = std::env::var_os("LD_LIBRARY_PATH") {
            dirs.push(host);
        }
        env.push((
            "LD_LIBRARY_PATH".into(),
            dirs.join(std::ffi::OsStr::new(":")),
        ));
    }
    Ok(Launch { program, env })
}

/// Can this ELF run here? Returns whether it links libpython. A foreign-architecture build root
/// (cross builds, koji noarch on another host) falls back to the host interpreter of that X.Y.
fn check_elf(bytes: &[u8]) -> Result<bool, Unusable> {
    let elf = goblin::elf::Elf::parse(bytes)?;
    let (machine, is_64, little) = host_elf();
    if elf.header.e_machine != machine || elf.is_64 != is_64 || elf.little_endian != little {
        return Err(Unusable::ForeignMachine {
            theirs: goblin::elf::header::machine_to_str(elf.header.e_machine),
            ours: goblin::elf::header::machine_to_str(machine),
        });
    }
    Ok(elf.libraries.iter().any(|l| l.starts_with("libpython")))
}

/// This machine's ELF identity, read from our own executable (no architecture table to keep).
fn host_elf() -> (u16, bool, bool) {
    static HOST: OnceLock<(u16, bool, bool)> = OnceLock::new();
    *HOST.get_or_init(|| {
        let bytes = std::fs::read("/proc/self/exe").unwrap_or_default();
        match goblin::elf::Elf::parse_header(&bytes) {
            Ok(h) => (h.e_machine, h.e_ident[4] == 2, h.e_ident[5] == 1),
            Err(_) => (
                0,
                cfg!(target_pointer_width = "64"),
                cfg!(target_endian = "little"),
            ),
        }
    })
}

/// Host programs to try for `version`, in order; notes what was not found in `tried`.
fn host_candidates(
    version: PyVersion,
    tried: &mut Vec<(String, Unusable)>,
) -> Vec<(String, PathBuf)> {
    let command = version.command();
    let mut out = Vec::new();
    match find_on_path(&command) {
        // A pyenv shim only runs the version pyenv currently selects; ask pyenv directly instead.
        Some(p) if p.parent().is_some_and(|d| d.ends_with("shims")) => {}
        Some(p) => out.push((format!("{command} on PATH"), p)),
        None => tried.push((format!("{command} on PATH"), Unusable::NotFound)),
    }
    if version.implementation == Implementation::CPython {
        // pyenv names a free-threaded build `3.14t`, as --python-version does.
        match pyenv_prefix(version) {
            Some(prefix) => out.push((
                format!("pyenv {}", version.short()),
                prefix.join("bin").join(&command),
            )),
            None => tried.push((
                format!("pyenv prefix {}", version.short()),
                Unusable::NotFound,
            )),
        }
    } else {
        // Debian ships PyPy as plain `pypy3`; its hello tells the version.
        for alt in [format!("pypy{}", version.major), "pypy".to_string()] {
            if let Some(p) = find_on_path(&alt) {
                out.push((format!("{alt} on PATH"), p));
            }
        }
    }
    out
}

pub fn find_on_path(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(command))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn pyenv_prefix(version: PyVersion) -> Option<PathBuf> {
    let pyenv = find_on_path("pyenv")?;
    let out = std::process::Command::new(pyenv)
        .args(["prefix", &version.short()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let prefix = PathBuf::from(String::from_utf8(out.stdout).ok()?.lines().next()?.trim());
    prefix
        .join("bin")
        .join(version.command())
        .exists()
        .then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_executable_is_runnable_elf() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert!(check_elf(&me).is_ok());
        assert!(check_elf(b"#!/bin/sh\n")
            .unwrap_err()
            .to_string()
            .contains("not a runnable ELF"));
    }

    #[test]
    fn foreign_machine_is_refused() {
        let mut me = std::fs::read("/proc/self/exe").unwrap();
        // e_machine is at offset 18 in both ELF classes; claim s390 (22), or x86-64 (62) on s390.
        let foreign: u16 = if host_elf().0 == 22 { 62 } else { 22 };
        let bytes = if host_elf().2 {
            foreign.to_le_bytes()
        } else {
            foreign.to_be_bytes()
        };
        me[18..20].copy_from_slice(&bytes);
        assert!(check_elf(&me)
            .unwrap_err()
            .to_string()
            .contains("another machine"));
    }
}
