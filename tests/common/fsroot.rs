//! Running pyclink where openat2 is missing: forced with `PYCLINK_NO_OPENAT2` (every symlink
//! and containment test runs both ways), or under a real seccomp filter that answers openat2
//! with ENOSYS or EPERM, as Linux before 5.6 and container runtimes do. And a real bind mount
//! of `/`, for the live-system guard.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable that makes pyclink resolve symlinks in the root without openat2.
pub const NO_OPENAT2: &str = "PYCLINK_NO_OPENAT2";

thread_local! {
    /// Some(true): this thread's `pyclink()` commands force the walk; Some(false): they may
    /// use openat2; None: they inherit the environment (so the whole suite can be run with
    /// the variable set).
    static WALK: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Run `test` with every `pyclink()` command of this thread resolving symlinks in the root
/// without openat2: the fallback gets the same scenario and the same assertions.
pub fn without_openat2(test: impl FnOnce()) {
    struct Reset(Option<bool>);
    impl Drop for Reset {
        fn drop(&mut self) {
            WALK.with(|w| w.set(self.0));
        }
    }
    let _reset = Reset(WALK.with(|w| w.replace(Some(true))));
    test();
}

/// Apply this thread's choice to a pyclink command (see [`without_openat2`]).
pub(super) fn apply(cmd: &mut Command) {
    match WALK.with(Cell::get) {
        Some(true) => {
            cmd.env(NO_OPENAT2, "1");
        }
        Some(false) => {
            cmd.env_remove(NO_OPENAT2);
        }
        None => {}
    }
}

/// How a pyclink run resolves symlinks inside the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// openat2, where the kernel has it (the variable removed).
    Openat2,
    /// The walk, forced by the variable.
    Forced,
    /// A seccomp filter answers openat2 with this errno (ENOSYS 38, EPERM 1): pyclink must
    /// notice and walk on its own.
    Seccomp(i32),
}

pub const ENOSYS: i32 = 38;
pub const EPERM: i32 = 1;

/// Every resolution this host can test, each with the reason it cannot where it cannot.
pub fn resolutions(test: &str) -> Vec<Resolution> {
    let mut out = vec![Resolution::Openat2, Resolution::Forced];
    for errno in [ENOSYS, EPERM] {
        match seccomp_works(errno) {
            Ok(()) => out.push(Resolution::Seccomp(errno)),
            Err(why) => println!("SKIP {test} under a seccomp filter (errno {errno}): {why}"),
        }
    }
    out
}

/// `cmd` as it runs under `how`.
pub fn resolved_by(cmd: Command, how: Resolution) -> Command {
    match how {
        Resolution::Openat2 => {
            let mut c = cmd;
            c.env_remove(NO_OPENAT2);
            c
        }
        Resolution::Forced => {
            let mut c = cmd;
            c.env(NO_OPENAT2, "1");
            c
        }
        Resolution::Seccomp(errno) => {
            let mut c = wrapped(
                Command::new(super::host().python),
                &["-I", "-S", "-c", SECCOMP, &errno.to_string()],
                &cmd,
            );
            c.env_remove(NO_OPENAT2);
            c
        }
    }
}

/// Installs a seccomp filter that fails openat2 (437 on every architecture since Linux 5.6
/// numbered new calls alike) with the errno given, checks that it does, then execs the rest of
/// the command line: the filter stays on pyclink and every process it starts.
const SECCOMP: &str = r#"
import ctypes, os, struct, sys
errno = int(sys.argv[1])
OPENAT2 = 437
prog = [
    (0x20, 0, 0, 0),                   # ld [0]: seccomp_data.nr
    (0x15, 0, 1, OPENAT2),             # jeq openat2
    (0x06, 0, 0, 0x00050000 | errno),  # ret SECCOMP_RET_ERRNO | errno
    (0x06, 0, 0, 0x7FFF0000),          # ret SECCOMP_RET_ALLOW
]
code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in prog))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(prog), ctypes.addressof(code))
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
    print("cannot install a seccomp filter:", os.strerror(ctypes.get_errno()), file=sys.stderr)
    sys.exit(97)
how = ctypes.create_string_buffer(24)
if libc.syscall(OPENAT2, -100, b".", how, 24) != -1 or ctypes.get_errno() != errno:
    print("the seccomp filter does not stop openat2 here", file=sys.stderr)
    sys.exit(97)
os.execv(sys.argv[2], sys.argv[2:])
"#;

fn seccomp_works(errno: i32) -> Result<(), String> {
    let out = wrapped(
        Command::new(super::host().python),
        &["-I", "-S", "-c", SECCOMP, &errno.to_string()],
        &Command::new("/bin/true"),
    )
    .output()
    .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `program prefix... CMD ARGS...`, with `cmd`'s environment changes and directory.
fn wrapped(mut program: Command, prefix: &[&str], cmd: &Command) -> Command {
    program
        .args(prefix)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => program.env(k, v),
            None => program.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        program.current_dir(d);
    }
    program
}

/// `cmd` run where `dir` is a bind mount of `/`, as [`with_dir_bound_at`] makes it.
pub fn with_root_bound_at(dir: &Path, cmd: &Command) -> Command {
    with_dir_bound_at(Path::new("/"), dir, cmd)
}

/// Whether bind mounts can be made here (root, unshare and mount present, not forbidden by a
/// container); prints why not for `test`.
pub fn bind_mounts_work(test: &str) -> bool {
    let t = tempfile::tempdir().unwrap();
    let probe = with_root_bound_at(t.path(), &Command::new("/bin/true")).output();
    match probe {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            println!(
                "SKIP {test}: cannot bind-mount / here ({}; {})",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            println!("SKIP {test}: cannot run unshare ({e})");
            false
        }
    }
}

/// A temp dir on the filesystem of `/`, so that it is seen through a (non-recursive) bind
/// mount of `/` too; None where neither /tmp nor cargo's target dir is on it.
pub fn tempdir_on_the_root_filesystem() -> Option<tempfile::TempDir> {
    use std::os::unix::fs::MetadataExt;
    let root_dev = std::fs::metadata("/").unwrap().dev();
    [
        std::env::temp_dir(),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    ]
    .into_iter()
    .filter(|d| std::fs::metadata(d).is_ok_and(|m| m.dev() == root_dev))
    .find_map(|d| tempfile::tempdir_in(d).ok())
}

/// A root with its own interpreter, as the build root of a Python package has: the host
/// python's binary as `usr/libexec/pythonX.Y-real`, reached from `usr/bin/pythonX.Y` through an
/// absolute link (to be read inside the root) and a relative one with `..`, the way Debian's
/// alternatives do; its stdlib (without the big test and GUI packages) in `usr/lib/pythonX.Y`,
/// and its libpython, if it links one, in `usr/lib`. Returns the binary's path.
pub fn root_with_its_own_python(h: &super::Host, root: &Path) -> PathBuf {
    let out = Command::new(&h.python)
        .args(["-I", "-S", "-c"])
        .arg(
            "import os, sys, sysconfig\n\
             print(os.path.realpath(sys.executable))\n\
             print(sysconfig.get_path('stdlib'))\n\
             print(sysconfig.get_config_var('LIBDIR') or '')\n\
             print(sysconfig.get_config_var('INSTSONAME') or '')\n\
             print(sysconfig.get_config_var('Py_ENABLE_SHARED') or 0)",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot ask {:?} for its paths",
        h.python
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<&str> = text.lines().collect();
    let (exe, stdlib, libdir, soname, shared) = (v[0], v[1], v[2], v[3], v[4] == "1");
    let big = [
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "site-packages",
        "dist-packages",
        "lib2to3",
        "ensurepip",
        "pydoc_data",
    ];
    super::copy_tree(
        Path::new(stdlib),
        &root.join(format!("usr/lib/python{}", h.version)),
        &|rel: &Path| {
            let first = rel.components().next().map(|c| c.as_os_str().to_owned());
            first.is_some_and(|f| {
                let f = f.to_string_lossy();
                big.contains(&f.as_ref()) || f.starts_with("config-")
            })
        },
    );
    if shared && !soname.is_empty() {
        let lib = root.join("usr/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::copy(Path::new(libdir).join(soname), lib.join(soname)).unwrap();
    }
    let real = root.join(format!("usr/libexec/python{}-real", h.version));
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::copy(exe, &real).unwrap();
    for d in ["usr/bin", "etc/alternatives"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let name = format!("python{}", h.version);
    std::os::unix::fs::symlink(
        format!("/etc/alternatives/{name}"),
        root.join("usr/bin").join(&name),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        format!("../../usr/libexec/{name}-real"),
        root.join("etc/alternatives").join(&name),
    )
    .unwrap();
    real
}

/// Mounts `$1` on `$2` (`mount --bind SRC DIR`), runs the rest, unmounts, and exits with the
/// command's status (97: the mount failed, 98: the unmount did).
const BIND_DIR: &str = r#"src=$1; dir=$2; shift 2
mount --bind "$src" "$dir" || exit 97
"$@"; rc=$?
umount "$dir" || exit 98
exit $rc"#;

/// `cmd` run where `dir` is a bind mount of the directory `src` (`/`, or another name for one
/// build root). The mount is made in a private mount namespace of the command's own (`unshare
/// --mount`) and unmounted when it ends; should the unmount not happen (the command killed), the
/// mount still goes with the namespace. So no run leaves `/` mounted in a temp dir that its
/// cleanup would then empty.
pub fn with_dir_bound_at(src: &Path, dir: &Path, cmd: &Command) -> Command {
    let mut c = wrapped(
        Command::new("unshare"),
        &[
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            BIND_DIR,
            "sh",
            src.to_str().expect("a UTF-8 temp dir"),
            dir.to_str().expect("a UTF-8 temp dir"),
        ],
        cmd,
    );
    if cmd.get_current_dir().is_none() {
        c.current_dir(std::env::current_dir().unwrap());
    }
    c
}
