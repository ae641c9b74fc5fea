# pyclink compile worker: runs inside the *target* interpreter (CPython 3.6+ or PyPy 3), started by
# pyclink as `python -s -S -c <this file>` with a cleared environment (PYTHONHASHSEED=0), cwd "/".
# It only compiles and marshals; pyclink does all reading, headers, naming, writing and linking.
#
# Processes. The process pyclink starts (the zygote) never compiles, so it stays in the state a
# fresh `python -m compileall` starts in. It forks one long-lived compile child and relays each
# request to it. A few constants make CPython's output depend on what the process compiled
# before (see _history_sensitive); for such a source the zygote forks a pristine one-shot child
# to compile it again, so every pyc is what compileall writes for that file alone, whatever
# was compiled before it and however pyclink spread the files over its workers.
#
# Protocol. Every message is a frame: u32 little-endian payload length, then the payload.
# Strings are u32 length + UTF-8 (backslashreplace); integers are u32 little-endian.
#   hello     worker -> pyclink, once at start: "key=value" lines (see hello()).
#   request   pyclink -> worker: u8 level mask (bit L = optimize level L), u32 dfile length,
#             dfile bytes (UTF-8 with surrogateescape), then the source bytes (rest of the frame).
#   response  worker -> pyclink, one per request:
#             b"K", per requested level in ascending order: u32 length + marshal.dumps(code);
#                   then u32 warning count, per warning: u32 line, str category, str message.
#             b"E", u32 line, str exception type, str message: the source does not compile.
# An empty request frame or EOF on stdin ends the worker. If a compile child dies, the zygote
# exits with status 3 and pyclink restarts the worker and retries the file.
#
# Keep the imports as they are: what the process has loaded can change the bytes (see below).
# Importing json, for one, would intern "[" and "{" and change the pycs of many modules.
# This file must stay valid Python 3.6 (no walrus, no positional-only parameters).
import marshal
import os
import sys

import warnings

# The protocol owns fd 1; anything the compiler or a warning prints goes to stderr instead.
_OUT_FD = os.dup(1)
os.dup2(2, 1)
sys.path[:] = [p for p in sys.path if p]        # -c puts the cwd first: never import from it

# Start from the state `python -m compileall` compiles in. Which strings are alive (interned) in
# the process decides some bytes: CPython rebuilds a frozenset constant when one of its strings
# is replaced by an already-interned equal string, and marshal writes that string as interned.
# compileall has runpy, compileall and argparse (with pathlib, urllib.parse, re...) loaded, so
# load the same. PYTHONDONTWRITEBYTECODE keeps these imports from writing pycs anywhere.
try:
    import runpy, compileall, argparse          # noqa: F401,E401
except ImportError:                             # a stripped-down stdlib: compile anyway
    pass


def _u32(n):
    return n.to_bytes(4, 'little')


def _str(s):
    b = str(s).encode('utf-8', 'backslashreplace')
    return _u32(len(b)) + b


def _write_all(fd, data):
    data = memoryview(data)
    while data:
        data = data[os.write(fd, data):]


def _write_frame(fd, parts):
    """Write one frame from a list of byte strings, without joining them (a large module's
    marshalled levels are written as they are, not copied into one buffer)."""
    _write_all(fd, _u32(sum(len(p) for p in parts)))
    for p in parts:
        _write_all(fd, p)


def _copy(src_fd, dst_fd, n):
    """Pass n bytes from one pipe to another in chunks (the zygote never holds a response)."""
    while n > 0:
        chunk = os.read(src_fd, min(n, 1 << 20))
        if not chunk:
            return False
        _write_all(dst_fd, chunk)
        n -= len(chunk)
    return True


def _read_exact(fd, n):
    chunks = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b''.join(chunks)


def _read_frame(fd):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    n = int.from_bytes(head, 'little')
    return _read_exact(fd, n) if n else b''


def _dump(code):
    # A separate call with `code` still bound in the caller, as in py_compile: marshal sets
    # FLAG_REF from reference counts, so this shape keeps serial compileall's bytes.
    return marshal.dumps(code)


def hello():
    import _imp
    try:
        import _frozen_importlib_external as ext
        magic = ext.MAGIC_NUMBER
        raw_magic = ext._RAW_MAGIC_NUMBER
    except (ImportError, AttributeError):           # PyPy and other importlib layouts
        import importlib.util
        magic = importlib.util.MAGIC_NUMBER
        raw_magic = int.from_bytes(magic, 'little')
    try:
        probe = _imp.source_hash(raw_magic, b'pyclink').hex()
    except AttributeError:
        probe = ''                                  # < 3.7: no hash-based pycs (PEP 552)
    lines = [
        'version=%d.%d.%d' % sys.version_info[:3],
        'implementation=%s' % sys.implementation.name,
        'cache_tag=%s' % sys.implementation.cache_tag,
        'magic=%s' % magic.hex(),
        'source_hash_probe=%s' % probe,
        'pid=%d' % os.getpid(),
        'executable=%s' % sys.executable,
    ]
    return '\n'.join(lines).encode('utf-8', 'backslashreplace')


def _interning_is_permanent():
    """Do interned strings live forever here (CPython 3.12)? Then every name a source ever
    used stays interned, and frozensets of strings depend on history (below)."""
    s = sys.intern(''.join(['pyclink-probe-', str(os.getpid())]))
    try:
        return sys.getrefcount(s) > 1 << 20
    except AttributeError:                          # PyPy: no reference counts
        return False


_PERMANENT_INTERNING = _interning_is_permanent()


def _history_sensitive(consts):
    """Constants whose marshalled form depends on what the process compiled before:
    a one-character latin-1 string (a process-wide singleton that stays interned once any
    source used it as a name), and, where interning is permanent, a frozenset holding strings
    (CPython rebuilds it, unshared, when one of its strings was already interned)."""
    for k in consts:
        t = type(k)
        if t is str:
            if len(k) == 1 and 127 < ord(k) < 256:
                return True
        elif t is frozenset or t is tuple:
            if t is frozenset and _PERMANENT_INTERNING and any(type(x) is str for x in k):
                return True
            if _history_sensitive(k):
                return True
        elif hasattr(k, 'co_consts') and _history_sensitive(k.co_consts):
            return True
    return False


def compile_levels(src, dfile, mask, check_history):
    """The response for one request as a list of parts; None if the result depends on this
    process's history."""
    out = [b'K']
    caught = []
    first = True
    for level in (0, 1, 2):
        if not mask & (1 << level):
            continue
        with warnings.catch_warnings(record=True) as w:
            # Record the warnings of the first level only; never turn one into an error.
            warnings.simplefilter('always' if first else 'ignore')
            code = compile(src, dfile, 'exec', dont_inherit=True, optimize=level)
        if first and check_history and _history_sensitive(code.co_consts):
            return None
        first = False
        caught.extend(w)
        data = _dump(code)
        del code
        out.append(_u32(len(data)))
        out.append(data)
    out.append(_u32(len(caught)))
    for x in caught:
        out.append(_u32(getattr(x, 'lineno', 0) or 0))
        out.append(_str(x.category.__name__))
        out.append(_str(x.message))
    return out


def compile_error(exc):
    line = 0
    msg = str(exc)
    if isinstance(exc, SyntaxError):
        line = exc.lineno or 0
        msg = exc.msg or msg
    return [b'E', _u32(max(0, line)), _str(type(exc).__name__), _str(msg)]


def handle(req, check_history):
    mask = req[0]
    dlen = int.from_bytes(req[1:5], 'little')
    dfile = req[5:5 + dlen].decode('utf-8', 'surrogateescape')
    src = req[5 + dlen:]
    try:
        resp = compile_levels(src, dfile, mask, check_history)
    except (Exception, RecursionError, MemoryError) as exc:   # one bad file never ends the worker
        resp = compile_error(exc)
    return [b'R'] if resp is None else resp


def compile_child(req_fd, resp_fd):
    """The long-lived compiler: answers b'R' where the zygote must compile pristine."""
    while True:
        req = _read_frame(req_fd)
        if not req:
            os._exit(0)
        _write_frame(resp_fd, handle(req, True))


def _fork(target, *args):
    """Fork a child that runs target(*args) with only the fds it is given, then exits."""
    pid = os.fork()
    if pid == 0:
        try:
            os.close(0)
            os.close(_OUT_FD)
            target(*args)
        finally:
            os._exit(0)
    return pid


def compile_pristine(req):
    """Compile in a fresh fork of this (never-compiling) process and pass its answer on."""
    r, w = os.pipe()

    def once(req):
        os.close(r)
        _write_frame(w, handle(req, False))
    pid = _fork(once, req)
    os.close(w)
    head = _read_exact(r, 4)
    if head is None:
        os._exit(3)
    _write_all(_OUT_FD, head)
    if not _copy(r, _OUT_FD, int.from_bytes(head, 'little')):
        os._exit(3)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        os._exit(3)


def main():
    _write_frame(_OUT_FD, [hello()])
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()

    def child():
        os.close(req_w)
        os.close(resp_r)
        compile_child(req_r, resp_w)
    child_pid = _fork(child)
    os.close(req_r)
    os.close(resp_w)
    while True:
        req = _read_frame(0)
        if not req:                                 # EOF or the empty frame: done
            # Let the compile child see EOF and reap it: an orphan would stay a zombie where
            # PID 1 does not reap (containers).
            os.close(req_w)
            os.waitpid(child_pid, 0)
            return
        _write_frame(req_w, [req])
        head = _read_exact(resp_r, 4)
        if head is None:                            # the compile child died
            os._exit(3)
        n = int.from_bytes(head, 'little')
        first = _read_exact(resp_r, 1)
        if first is None:
            os._exit(3)
        if n == 1 and first == b'R':
            compile_pristine(req)
            continue
        _write_all(_OUT_FD, head + first)
        if not _copy(resp_r, _OUT_FD, n - 1):
            os._exit(3)


main()
