# pyclink compile worker: runs inside the *target* interpreter (CPython 3.6+ or PyPy 3), started by
# pyclink as `python -s -S -c <framing.py, then this file>` with a cleared environment
# (PYTHONHASHSEED=0), cwd "/". framing.py, which runs first, holds the imports, the refusal of an
# interpreter older than 3.6, the framing and the hello, shared with verify's checker.
# It only compiles and marshals; pyclink does all reading, headers, naming, writing and linking.
#
# Processes. The process pyclink starts (the zygote) never compiles, so it stays in the state a
# fresh `python -m compileall` starts in. It forks the compile child, which reads requests on
# stdin and answers on stdout. What a process compiled before can change CPython's output in
# two ways, and both are kept out, so every pyc is what compileall writes for that file alone,
# however pyclink spread the files over its workers:
# - one-character strings (latin-1) are process-wide singletons, and once one is interned (a
#   non-ASCII one-letter name, `from __future__ import annotations` interning "{" and "}" in
#   3.10...) a later source's constant with that character is marshalled as interned: once the
#   compile child's set of interned one-character strings differs from the zygote's, it answers
#   and retires, and the zygote forks a fresh one (see _one_char_interning);
# - where interning is permanent (3.12), a frozenset of strings depends on which strings are
#   interned (see _history_sensitive): the compile child hands such a source to the zygote,
#   which compiles it in a pristine one-shot fork that answers pyclink itself; the compile
#   child reads no further request until that answer is out, so answers stay in order.
#
# Protocol. Every message is a frame: u32 little-endian payload length, then the payload.
# Strings are u32 length + UTF-8 (backslashreplace); integers are u32 little-endian.
#   hello     worker -> pyclink, once at start: "key=value" lines (see hello()).
#   request   pyclink -> worker: u8 level mask (bit L = optimize level L), u8 hints (bit 0:
#             level 1 is certainly identical to level 0, bit 1: level 2 to level 1, as pyclink
#             proved from the source; bit 2, FRESH_PROCESS: compile it in a fresh compile
#             child; bit 3, NORMALIZED: pyclink normalizes the bytes, so a process without
#             compileall's modules may compile a source without string literals, see
#             _load_compileall_modules), u32 dfile length, dfile bytes (UTF-8 with surrogateescape), then the
#             source bytes (rest of the frame).
#   response  worker -> pyclink, one per request:
#             b"K", per requested level in ascending order: u32 length + marshal.dumps(code), or
#                   u32 0xFFFFFFFF: the same bytes as the previous requested level (not compiled);
#                   then u32 warning count, per warning: u32 line, str category, str message.
#             b"E", u32 line, str exception type, str message: the source does not compile.
# EOF on stdin (or an empty request frame) ends the worker: the compile child exits and the
# zygote reaps it and exits. If the compile child dies, the zygote exits at once, so pyclink
# sees EOF, restarts the worker and retries the file. The zygote's exit status says how the
# compile process ended: 128 + N if a signal N killed it (a compiler crash: SIGSEGV, SIGABRT),
# else 3.
#
# Keep the imports (here and in framing.py) as they are: what the process has loaded can change
# the bytes (see below). Importing json, for one, would intern "[" and "{" and change the pycs of
# many modules. This file must stay valid Python 3.6 (no walrus, no positional-only parameters),
# and parse as Python 2 (framing.py's first block then names the interpreter).

# The state `python -m compileall` compiles in. Which strings are alive (interned) in the
# process decides some bytes: CPython rebuilds a frozenset constant when one of its strings is
# replaced by an already-interned equal string, and marshal writes a one-character string as
# interned if it is, wherever that happened. compileall has runpy, compileall and argparse (with
# pathlib, urllib.parse, re...) loaded, so the worker loads the same before it compiles a source
# whose bytes could depend on them. PYTHONDONTWRITEBYTECODE keeps these imports from writing pycs.
#
# Loading them takes 3-4 times as long as starting the interpreter, and a source with no string
# literal at all (`x = 1`, an `__init__.py` of imports) does not need them, so a CPython zygote
# starts without them ("lean") and loads them the first time a request needs them (see
# _lean_is_enough). The imports only add interned strings (names: the compiler interns a source's
# names in either state) and interned one-character strings; without a quote in the source, the
# code has no string constant whose interning or identity could depend on either (names aside,
# only strings made from literals, the f-strings' and docstrings' included, and annotations
# under `from __future__ import annotations`, which are names, dotted names or several
# characters long). What does differ is a reference count, so FLAG_REF on a name used once:
# pyclink's normalization removes exactly that, so raw bytes (NORMALIZED not set) always come
# from the full state. PyPy, whose interning differs, loads them at once.
_COMPILEALL_STATE = [False]


def _load_compileall_modules():
    try:
        import runpy, compileall, argparse      # noqa: F401,E401
    except ImportError:                         # a stripped-down stdlib: compile anyway
        pass
    _COMPILEALL_STATE[0] = True


if sys.implementation.name != 'cpython':
    _load_compileall_modules()


def _importlib_external():
    mod = sys.modules.get('_frozen_importlib_external')
    if mod is None:                             # PyPy and other importlib layouts
        import importlib._bootstrap_external as mod
    return mod


# How py_compile turns a code object into pyc bytes (3.6: _code_to_bytecode, 12-byte header).
_EXT = _importlib_external()
_PACK = getattr(_EXT, '_code_to_timestamp_pyc', None) or _EXT._code_to_bytecode
_PACKED_HEADER = 16 if hasattr(_EXT, '_code_to_timestamp_pyc') else 12


def _compile_like_py_compile(src, dfile, level, check_history):
    """Compile and marshal `src` in the shape of py_compile.compile: marshal sets FLAG_REF from
    reference counts, and how many references the caller's frame holds depends on the shape
    of its code (3.14 keeps a strong reference after a try block, 3.15 borrows it), so only
    the same shape keeps serial compileall's raw bytes on every version. Returns the marshal
    data and whether it may depend on this process's history (see _history_sensitive)."""
    try:
        code = compile(src, dfile, 'exec', dont_inherit=True, optimize=level)
    except Exception:
        raise
    data = memoryview(_PACK(code))[_PACKED_HEADER:]
    return data, check_history and _history_sensitive(code.co_consts)


def _interning_is_permanent():
    """Do interned strings live forever here (CPython 3.12)? Then every name a source ever
    used stays interned, and frozensets of strings depend on history (below)."""
    s = sys.intern(''.join(['pyclink-probe-', str(os.getpid())]))
    try:
        return sys.getrefcount(s) > 1 << 20
    except AttributeError:                          # PyPy: no reference counts
        return False


_PERMANENT_INTERNING = _interning_is_permanent()

# PyPy holds interned strings weakly: whether a name is still interned when marshal writes it
# (and so its type code) depends on when the collector last ran, that is on everything the
# process allocated before, the zygote's reading of hand-overs included. A full collection in
# the zygote before each fork (no compile child shares its pages then) starts every compile
# child from the same heap. Not on CPython, whose zygote must stay in compileall's state.
_HOLDS_INTERNED_WEAKLY = sys.implementation.name == 'pypy'
if _HOLDS_INTERNED_WEAKLY:
    import gc as _gc


# The one-character strings whose interning can depend on history, in two tuples: ASCII ones
# other than name characters (the compiler interns every constant made of name characters,
# [A-Za-z0-9_], whatever happened before), and the other latin-1 ones. Marshal writes the ASCII
# ones in 3 bytes (type, length, character) and the others in 7 (type, u32 length, two UTF-8
# bytes), after the 2-byte small-tuple header, and the type code says whether one is interned.
_ASCII = tuple(c for c in map(chr, range(128)) if not (c.isalnum() or c == '_'))
_LATIN1 = tuple(map(chr, range(128, 256)))
_NO_REF_FLAG = bytes(b & 0x7f for b in range(256))


def _one_char_interning():
    """Which of those one-character strings are interned in this process, as bytes to compare,
    read without interning anything."""
    return (marshal.dumps(_ASCII)[2::3] + marshal.dumps(_LATIN1)[2::7]).translate(_NO_REF_FLAG)


_INTERNING_AT_START = _one_char_interning()


def _history_sensitive(consts):
    """Where interning is permanent, a frozenset holding strings: CPython rebuilds it, unshared,
    when one of its strings was already interned, so its bytes depend on what the process
    compiled before."""
    for k in consts:
        t = type(k)
        if t is frozenset and any(type(x) is str for x in k):
            return True
        if (t is tuple or t is frozenset) and _history_sensitive(k):
            return True
        if hasattr(k, 'co_consts') and _history_sensitive(k.co_consts):
            return True
    return False


SAME_AS_PREVIOUS = 0xFFFFFFFF
FRESH_PROCESS = 4
NORMALIZED = 8
# The hand-over frame of a lean compile child that got a request only the full state may
# compile: this byte, then the request (a request's first byte, its level mask, is below 8).
_UPGRADE = b'U'


def _lean_is_enough(req):
    """May a lean process (see _load_compileall_modules) compile this request? Only if pyclink
    normalizes the bytes and the source has no quote (so no string literal) and no coding
    cookie (UTF-7 writes a quote without one). Bytes only: nothing is interned."""
    if not req[1] & NORMALIZED:
        return False
    src = req[6 + int.from_bytes(req[2:6], 'little'):]
    return b"'" not in src and b'"' not in src and b'coding' not in src


def _same_as(level, prev, same):
    """Is `level` certainly identical to the requested level `prev` below it (-1: none)?
    Bit L-1 of `same` says level L equals level L-1; every step between must hold."""
    if prev < 0:
        return False
    bits = 0
    for l in range(prev + 1, level + 1):
        bits |= 1 << (l - 1)
    return same & bits == bits


def compile_levels(src, dfile, mask, same, pristine):
    """The response for one request as a list of parts; None if the result may depend on this
    process's history (see _history_sensitive); the compile child then has the zygote compile
    it pristine. Every compiled level is checked: a constant can be in one level only (`if
    __debug__: ... else: ...`). A pristine compile does every level, as compileall would, so its
    bytes are compileall's."""
    out = [b'K']
    caught = []
    prev = -1
    for level in (0, 1, 2):
        if not mask & (1 << level):
            continue
        if not pristine and _same_as(level, prev, same):
            out.append(_u32(SAME_AS_PREVIOUS))
            prev = level
            continue
        with warnings.catch_warnings(record=True) as w:
            # Record the warnings of the first level only; never turn one into an error.
            warnings.simplefilter('always' if prev < 0 else 'ignore')
            data, sensitive = _compile_like_py_compile(
                src, dfile, level, not pristine and _PERMANENT_INTERNING)
        if sensitive:
            return None
        prev = level
        caught.extend(w)
        out.append(_u32(len(data)))
        out.append(data)
    out.append(_u32(len(caught)))
    for x in caught:
        out.append(_u32(getattr(x, 'lineno', 0) or 0))
        out.append(_str(x.category.__name__))
        out.append(_str(x.message))
    return out


def handle(req, pristine):
    mask, same = req[0], req[1]
    dlen = int.from_bytes(req[2:6], 'little')
    dfile = req[6:6 + dlen].decode('utf-8', 'surrogateescape')
    src = req[6 + dlen:]
    try:
        return compile_levels(src, dfile, mask, same, pristine)
    except (Exception, RecursionError, MemoryError) as exc:   # one bad file never ends the worker
        return compile_error(exc, src)


def compile_child(zreq_w, zack_r, first):
    """Serve pyclink: requests on stdin (`first`, if not None, before them), answers on
    stdout; history-sensitive sources go to the zygote (zreq_w), which acknowledges on zack_r
    once the pristine answer is out. Once a source has interned a one-character string the
    zygote had not, or after a request marked FRESH_PROCESS (PyPy, whose every interned name
    shows in later sources' bytes), the child tells the zygote (an empty frame) and ends, and
    the zygote forks a fresh one for the next request. A fresh child has compiled nothing, so
    it serves a FRESH_PROCESS request as is. A lean child given a request it may not compile
    hands it to the zygote (_UPGRADE) and ends: the zygote loads compileall's modules and forks
    a child in that state, which answers it first."""
    while True:
        if first is not None:
            req, first = first, None
        else:
            req = _read_frame(0)
        if not req:
            return
        if not _COMPILEALL_STATE[0] and not _lean_is_enough(req):
            _write_frame(zreq_w, [_UPGRADE, req])
            return
        resp = handle(req, False)
        if resp is None:
            _write_frame(zreq_w, [req])
            if os.read(zack_r, 1) != b'D':
                os._exit(3)
        else:
            _write_frame(_OUT_FD, resp)
        if req[1] & FRESH_PROCESS or _one_char_interning() != _INTERNING_AT_START:
            _write_frame(zreq_w, [])
            return


def compile_pristine(req):
    """Compile in a fresh fork of this (never-compiling) process; it answers pyclink itself.
    Returns its wait status."""
    pid = os.fork()
    if pid == 0:
        try:
            _write_frame(_OUT_FD, handle(req, True))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


def exit_like(status):
    """End the zygote so that its exit status tells pyclink how a compile process ended."""
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(0 if status == 0 else 3)


def start_compile_child(first=None):
    """Fork a compile child from the (pristine) zygote, to answer `first` (a request) if given
    before reading any; returns its pid and the zygote's ends of the hand-over pipes."""
    if _HOLDS_INTERNED_WEAKLY:
        _gc.collect()
    zreq_r, zreq_w = os.pipe()
    zack_r, zack_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(zreq_r)
            os.close(zack_w)
            compile_child(zreq_w, zack_r, first)
        finally:
            os._exit(0)
    os.close(zreq_w)
    os.close(zack_r)
    return child, zreq_r, zack_w


def main():
    global _INTERNING_AT_START
    _write_frame(_OUT_FD, [hello()])
    # The zygote never reads a request from pyclink (it keeps stdin only to hand it to its
    # compile child), only the compile child's hand-overs.
    child, zreq_r, zack_w = start_compile_child()
    while True:
        req = _read_frame(zreq_r)
        if req is None:                             # the compile child is gone
            # Its exit lets pyclink see EOF; a crash must not wait for the next request.
            exit_like(os.waitpid(child, 0)[1])
        upgrade = req[:1] == _UPGRADE
        if not req or upgrade:                      # it retires: a fresh one takes over
            status = os.waitpid(child, 0)[1]
            if status != 0:
                exit_like(status)
            os.close(zreq_r)
            os.close(zack_w)
            first = None
            if upgrade:
                _load_compileall_modules()
                _INTERNING_AT_START = _one_char_interning()
                first = req[1:]
            child, zreq_r, zack_w = start_compile_child(first)
            continue
        status = compile_pristine(req)
        os.write(zack_w, b'D' if status == 0 else b'X')
        if status != 0:
            os.kill(child, 9)
            os.waitpid(child, 0)
            exit_like(status)


main()
