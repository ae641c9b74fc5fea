# pyclink compile worker: runs inside the *target* interpreter (CPython 3.6+ or PyPy 3), started by
# pyclink as `python -s -S -c <this file>` with a cleared environment (PYTHONHASHSEED=0), cwd "/".
# It only compiles and marshals; pyclink does all reading, headers, naming, writing and linking.
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
# An empty request frame or EOF on stdin ends the worker.
#
# Keep the imports as they are. marshal writes a string as "interned" when the process has
# interned it, so every module imported here can change the bytes; with only these (as in a
# compileall run) the output equals serial compileall's on 3.11 and 3.12.
# This file must stay valid Python 3.6 (no walrus, no positional-only parameters).
import marshal
import os
import sys

# The protocol owns fd 1; anything the compiler or a warning prints goes to stderr instead.
_OUT = os.fdopen(os.dup(1), 'wb')
os.dup2(2, 1)
_IN = os.fdopen(0, 'rb')
sys.path[:] = [p for p in sys.path if p]        # -c puts the cwd first: never import from it


def _u32(n):
    return n.to_bytes(4, 'little')


def _str(s):
    b = str(s).encode('utf-8', 'backslashreplace')
    return _u32(len(b)) + b


def _send(payload):
    _OUT.write(_u32(len(payload)) + payload)
    _OUT.flush()


def _read_exact(n):
    data = _IN.read(n)
    if data is None or len(data) < n:
        return None
    return data


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


def compile_levels(src, dfile, mask):
    import warnings
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
    return b''.join(out)


def compile_error(exc):
    line = 0
    msg = str(exc)
    if isinstance(exc, SyntaxError):
        line = exc.lineno or 0
        msg = exc.msg or msg
    return b'E' + _u32(max(0, line)) + _str(type(exc).__name__) + _str(msg)


def main():
    _send(hello())
    while True:
        head = _read_exact(4)
        if head is None:
            return
        n = int.from_bytes(head, 'little')
        if n == 0:
            return
        req = _read_exact(n)
        if req is None:
            return
        mask = req[0]
        dlen = int.from_bytes(req[1:5], 'little')
        dfile = req[5:5 + dlen].decode('utf-8', 'surrogateescape')
        src = req[5 + dlen:]
        del req
        try:
            resp = compile_levels(src, dfile, mask)
        except (Exception, RecursionError, MemoryError) as exc:   # one bad file never ends the worker
            resp = compile_error(exc)
        del src
        _send(resp)


main()
