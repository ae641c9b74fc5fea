//! What must not outlive an interrupted run: temp files and worker processes. Every temp file
//! is registered here between its creation and its rename, under one lock, so a SIGINT/SIGTERM
//! handler holding that lock sees exactly the temp files that exist and removes them.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::{unlinkat, AtFlags};

#[derive(Default)]
struct Registry {
    temps: HashMap<u64, (Arc<OwnedFd>, OsString)>,
    workers: HashSet<u32>,
    next_id: u64,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Registry>> {
    // A panic elsewhere must not stop the cleanup of what is registered.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run `create` under the registry lock and register the temp file it made.
pub fn create_registered<T>(
    dir: &Arc<OwnedFd>,
    create: impl FnOnce() -> std::io::Result<(T, OsString)>,
) -> std::io::Result<(T, u64)> {
    let mut guard = lock();
    let reg = guard.get_or_insert_with(Registry::default);
    let (value, name) = create()?;
    let id = reg.next_id;
    reg.next_id += 1;
    reg.temps.insert(id, (dir.clone(), name));
    Ok((value, id))
}

/// Run `finish` (a rename or unlink that makes the temp name disappear) under the lock, then
/// forget the temp file whatever `finish` returned.
pub fn finish_registered<T>(id: u64, finish: impl FnOnce() -> T) -> T {
    let mut guard = lock();
    let result = finish();
    if let Some(reg) = guard.as_mut() {
        reg.temps.remove(&id);
    }
    result
}

pub fn register_worker(pid: u32) {
    lock()
        .get_or_insert_with(Registry::default)
        .workers
        .insert(pid);
}

pub fn unregister_worker(pid: u32) {
    if let Some(reg) = lock().as_mut() {
        reg.workers.remove(&pid);
    }
}

/// Catch SIGINT and SIGTERM: remove registered temp files, kill the workers, and exit with
/// 128 + the signal number, as a shell reports it. The lock stays held until exit, so no
/// worker thread can create or rename anything in between.
pub fn install_signal_handler() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let guard = lock();
                let mut removed = 0;
                if let Some(reg) = guard.as_ref() {
                    for pid in &reg.workers {
                        let _ = rustix::process::kill_process(
                            rustix::process::Pid::from_raw(*pid as i32).expect("worker pid"),
                            rustix::process::Signal::KILL,
                        );
                    }
                    for (dir, name) in reg.temps.values() {
                        if unlinkat(&**dir, name.as_os_str(), AtFlags::empty()).is_ok() {
                            removed += 1;
                        }
                    }
                }
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                let _ = writeln!(
                    std::io::stderr(),
                    "pyclink: interrupted by {name}; removed {}",
                    crate::escape::plural(removed as u64, "temporary file")
                );
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}
