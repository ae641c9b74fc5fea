# The start of both scripts pyclink runs in a target interpreter, `worker.py` (compiling) and
# `verify/checker.py` (checking): pyclink sends each as this file followed by the script itself
# (concat! in worker/mod.rs and verify/protocol.rs), as `python -s -S -c <both>`. It holds what
# they share: the imports, the refusal of an old interpreter, fd 1 kept for the protocol, the
# framing, the hello and the answer for a source that does not compile, so that pyclink starts
# and speaks to both the same way (see worker.py's header for the protocol).
#
# Keep the imports as they are: what the compile worker has loaded can change the bytes it writes
# (see worker.py). Define functions and constants here, import nothing more: the worker imports
# what compileall has loaded before it compiles anything that could depend on it.
# The whole of it must stay valid Python 3.6 (no walrus, no positional-only parameters), and
# parse as Python 2 (with the scripts after it), so the first block can run there.
import marshal
import os
import sys

# Before anything that needs Python 3.6: an older interpreter (Python 2.7, 3.5) says what it is in
# one hello frame and stops, so pyclink can name it instead of showing a traceback. This block
# must stay valid Python 2.
if sys.version_info < (3, 6):
    import struct
    _old = ('unsupported=%d.%d.%d' % tuple(sys.version_info[:3])).encode('ascii')
    os.write(1, struct.pack('<I', len(_old)) + _old)
    os._exit(0)

import warnings

# The protocol owns fd 1; anything the compiler or a warning prints goes to stderr instead.
_OUT_FD = os.dup(1)
os.dup2(2, 1)
sys.path[:] = [p for p in sys.path if p]        # -c puts the cwd first: never import from it

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
    """Write one frame from a list of byte strings. Up to the pipe's size (pyclink asks for
    1 MiB) it goes in one write, so pyclink wakes once per answer; a larger module's marshalled
    levels are written as they are, not copied into one buffer."""
    size = sum(len(p) for p in parts)
    if size < _JOIN_LIMIT:
        _write_all(fd, b''.join([_u32(size)] + parts))
        return
    _write_all(fd, _u32(size))
    for p in parts:
        _write_all(fd, p)


_JOIN_LIMIT = 1 << 20


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
        'build=%s' % ' '.join(sys.version.split()),
        'abiflags=%s' % getattr(sys, 'abiflags', ''),
    ]
    return '\n'.join(lines).encode('utf-8', 'backslashreplace')


# The answer for a source that does not compile: b"E", u32 line, str exception type, str message
# (the same in both protocols).
def compile_error(exc, src):
    line = 0
    msg = str(exc)
    if isinstance(exc, SyntaxError):
        line = exc.lineno or 0
        msg = exc.msg or msg
    if line <= 0 and isinstance(exc, (SyntaxError, ValueError)):
        line = _blamed_line(src)
    return [b'E', _u32(max(0, line)), _str(type(exc).__name__), _str(msg)]


def _blamed_line(src):
    """The line of an error CPython gives none for (line 0 or None): a NUL byte (ValueError
    before 3.11.4), an unknown or conflicting coding cookie. Errors are promised as path:line.
    Bytes only: no str is made, so the worker's interning history is untouched."""
    nul = src.find(b'\0')
    if nul >= 0:
        return src.count(b'\n', 0, nul) + 1
    for n, text in enumerate(src.split(b'\n', 2)[:2], 1):
        text = text.lstrip(b' \t\f')
        if text.startswith(b'#') and (b'coding:' in text or b'coding=' in text):
            return n
    return 1
