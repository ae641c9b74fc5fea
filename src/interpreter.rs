//! Choosing the interpreter for each version: `--interpreter X.Y=PATH`; else the build root's
//! own `usr/bin/pythonX.Y` when it can run on this host (how a Python package itself is
//! built); else the host's `pythonX.Y` (PATH, then pyenv). Each candidate is proven by starting
//! a worker and reading its hello: the version, magic number and cache tag come from there.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::fsroot::Root;
use crate::version::{Implementation, PyVersion};
use crate::worker::{Launch, Worker};

/// A chosen interpreter, with the worker that proved it (handed to the pool).
pub struct Interpreter {
    pub version: PyVersion,
    pub launch: Launch,
    /// Where it came from, for the log.
    pub origin: String,
    pub first_worker: Worker,
}

/// Find the interpreter for `version`, or say everything that was tried.
pub fn select(
    version: PyVersion,
    root: &Root,
    given: Option<&Path>,
    timeout: Duration,
) -> Result<Interpreter, String> {
    let mut tried = Vec::new();
    if let Some(path) = given {
        let launch = host_launch(path.to_path_buf());
        return prove(version, launch, format!("--interpreter {path:?}"), timeout).map_err(|why| {
            format!(
                "no usable interpreter for {version}: --interpreter {}: {why}",
                path.display()
            )
        });
    }
    tried.push("--interpreter (not given)".to_string());

    match root_launch(version, root) {
        Ok(launch) => {
            let origin = format!("the build root's /usr/bin/{}", version.command());
            match prove(version, launch, origin.clone(), timeout) {
                Ok(i) => return Ok(i),
                Err(why) => tried.push(format!("{origin}: {why}")),
            }
        }
        Err(why) => tried.push(format!(
            "the build root's /usr/bin/{}: {why}",
            version.command()
        )),
    }

    for (origin, program) in host_candidates(version, &mut tried) {
        match prove(version, host_launch(program), origin.clone(), timeout) {
            Ok(i) => return Ok(i),
            Err(why) => tried.push(format!("{origin}: {why}")),
        }
    }
    Err(format!(
        "no interpreter found for {version}; tried: {}",
        tried.join("; ")
    ))
}

/// The version of the host's `python3` (for trees that name no version).
pub fn host_python3(timeout: Duration) -> Result<PyVersion, String> {
    let program = find_on_path("python3")
        .ok_or("no python3 on PATH to choose a version for unversioned trees")?;
    version_of(&program, timeout)
}

/// Ask an interpreter which version it is.
pub fn version_of(program: &Path, timeout: Duration) -> Result<PyVersion, String> {
    let w = Worker::start(&host_launch(program.to_path_buf()), timeout)
        .map_err(|e| format!("{}: {e}", program.display()))?;
    Ok(w.hello.py_version())
}

fn prove(
    version: PyVersion,
    launch: Launch,
    origin: String,
    timeout: Duration,
) -> Result<Interpreter, String> {
    let worker = Worker::start(&launch, timeout).map_err(|e| e.to_string())?;
    let got = worker.hello.py_version();
    if got != version {
        return Err(format!("it is {got}, not {version}"));
    }
    log::info!(
        "{version}: {} ({origin}), cache tag {}",
        worker.hello.executable,
        worker.hello.format.cache_tag
    );
    Ok(Interpreter {
        version,
        launch,
        origin,
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
fn root_launch(version: PyVersion, root: &Root) -> Result<Launch, String> {
    let rel = Path::new("usr/bin").join(version.command());
    let file = root
        .open_resolved_in_root(&rel)
        .map_err(|e| match e.raw_os_error() {
            Some(libc_enoent) if libc_enoent == rustix::io::Errno::NOENT.raw_os_error() => {
                "absent".to_string()
            }
            _ => e.to_string(),
        })?;
    // The path the kernel resolved, which lies inside the root by construction.
    let program = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&program).map_err(|e| e.to_string())?;
    let needs_libpython = check_elf(&bytes)?;
    let usr = root.path().join("usr");
    let mut env = base_env();
    env.retain(|(k, _)| k != "LD_LIBRARY_PATH");
    env.push(("PYTHONHOME".into(), usr.clone().into_os_string()));
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
fn check_elf(bytes: &[u8]) -> Result<bool, String> {
    let elf =
        goblin::elf::Elf::parse(bytes).map_err(|e| format!("not a runnable ELF binary ({e})"))?;
    let (machine, is_64, little) = host_elf();
    if elf.header.e_machine != machine || elf.is_64 != is_64 || elf.little_endian != little {
        return Err(format!(
            "built for another machine (ELF machine {}, this host {})",
            goblin::elf::header::machine_to_str(elf.header.e_machine),
            goblin::elf::header::machine_to_str(machine)
        ));
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
fn host_candidates(version: PyVersion, tried: &mut Vec<String>) -> Vec<(String, PathBuf)> {
    let command = version.command();
    let mut out = Vec::new();
    match find_on_path(&command) {
        // A pyenv shim only runs the version pyenv currently selects; ask pyenv directly instead.
        Some(p) if p.parent().is_some_and(|d| d.ends_with("shims")) => {}
        Some(p) => out.push((format!("{command} on PATH"), p)),
        None => tried.push(format!("{command} on PATH (not found)")),
    }
    if version.implementation == Implementation::CPython {
        match pyenv_prefix(version) {
            Some(prefix) => out.push((
                format!("pyenv {}.{}", version.major, version.minor),
                prefix.join("bin").join(&command),
            )),
            None => tried.push(format!(
                "pyenv prefix {}.{} (no pyenv or not installed)",
                version.major, version.minor
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
        .args(["prefix", &format!("{}.{}", version.major, version.minor)])
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
        assert!(check_elf(&me).unwrap_err().contains("another machine"));
    }
}
