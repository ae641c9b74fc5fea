# pyclink verify's checker: runs inside the interpreter whose pycs are checked (CPython 3.6+ or
# PyPy 3), started by pyclink as `python -s -S -c <worker/framing.py, then this file>` with a
# cleared environment, cwd "/".
# It compiles each source afresh and compares the code in the pycs with it. pyclink does all
# reading, names, headers and links; this script never touches a file.
#
# It is deliberately not the compile worker (worker.py): what it checks must not share the code
# that wrote the pycs. It shares only framing.py (imports, the refusal of an old interpreter, the
# framing and the hello), so pyclink starts it the same way.
#
# Protocol. Every message is a frame: u32 little-endian payload length, then the payload.
# Strings are u32 length + UTF-8 (backslashreplace); integers are u32 little-endian.
#   hello     checker -> pyclink, once at start: "key=value" lines, as worker.py's.
#   request   pyclink -> checker: u8 level mask (bit L: level L takes part), u8 flags (bit 0:
#             sourceless: no source, the pyc is only loaded and its file names checked), u32
#             dfile length, dfile (UTF-8 with surrogateescape: the path the code must report),
#             u32 source length, source; then per level in the mask, ascending: u32 length +
#             the pyc's marshal data (after the header), or u32 NO_PYC (the level is only
#             compiled), or u32 SAME_BODY (the same data as the previous level that had some).
#   response  checker -> pyclink, one per request:
#             b"E", u32 line, str exception type, str message: the source does not compile.
#             b"K", per level in the mask, ascending, a u8 status and its fields:
#                 0  no pyc at this level (compiled only);
#                 1  the data does not load: str "ExceptionType: message" ("NotCode: ..."
#                    when it loads to something that is not a code object);
#                 2  loaded: u8 matches (bit M: the code equals a fresh compile at level M; the
#                    pyc's own level is always tried, the others only when it differs), u32
#                    code objects whose co_filename is not dfile, u32 code objects, u32 n + n
#                    str: the wrong names (a few, as repr), u32 n + n str differences from
#                    its own level's fresh code (none when it matches).
#             b"X", str: the checker failed on this request (a bug; pyclink reports it).
# EOF on stdin (or an empty request frame) ends the checker.
#
# "Equal" is every field marshal writes, so everything a pyc can hold: bytecode, constants
# recursively with exact types and float bits, names, argument counts, flags, stack size, first
# line, name and qualified name, file name, line and exception tables. Code objects' own `==`
# leaves some of these out (co_filename always, the tables and stack size on some versions).
# This file must stay valid Python 3.6 (no walrus, no positional-only parameters).

NO_PYC = 0xFFFFFFFF
SAME_BODY = 0xFFFFFFFE
MAX_DIFFS = 4
MAX_NAMES = 3


_CODE = type(_u32.__code__)
# Compared one by one when two code objects differ (to say how). co_lnotab only where there is
# no co_linetable: from 3.10 on it is computed from it (and deprecated from 3.12).
_ATTRS = tuple(a for a in (
    'co_code', 'co_names', 'co_varnames', 'co_freevars', 'co_cellvars', 'co_flags',
    'co_argcount', 'co_posonlyargcount', 'co_kwonlyargcount', 'co_nlocals', 'co_stacksize',
    'co_firstlineno', 'co_name', 'co_qualname', 'co_filename', 'co_linetable', 'co_lnotab',
    'co_exceptiontable',
) if hasattr(_CODE, a) and not (a == 'co_lnotab' and hasattr(_CODE, 'co_linetable')))


class NotCode(Exception):
    """Marshal data that loads, but to something else than a code object (pyclink tells this
    from data that does not load by the name)."""


def _short(v, limit=60):
    r = repr(v)
    if len(r) <= limit:
        return r
    if type(v) in (str, bytes):
        # The ellipsis goes inside the quotes: a quote left open misreads the rest of the line.
        return r[:limit - 4] + '...' + r[-1]
    return r[:limit - 3] + '...'


def _bits(x):
    """A float's or complex's exact bits (0.0 and -0.0, NaN payloads): marshal's binary form,
    without the type byte (whose FLAG_REF depends on reference counts)."""
    return marshal.dumps(x)[1:]


def _key(x):
    """Equal for two constants only if they are equal with exact types, recursively."""
    t = type(x)
    if t is float or t is complex:
        return (t, _bits(x))
    if t is tuple:
        return (t, tuple(_key(e) for e in x))
    if t is frozenset:
        return (t, frozenset(_key(e) for e in x))
    if t is slice:
        return (t, _key(x.start), _key(x.stop), _key(x.step))
    if t is _CODE:
        return (t, id(x))               # compared field by field, never through a key
    return (t, x)


def _diff_const(a, b, where, out, filenames):
    if len(out) > MAX_DIFFS:
        return
    ta = type(a)
    if ta is not type(b):
        out.append('%s: %s %s != %s %s' % (where, ta.__name__, _short(a),
                                            type(b).__name__, _short(b)))
    elif ta is _CODE:
        _diff_code(a, b, where + '/' + a.co_name, out, filenames)
    elif ta is tuple and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff_const(x, y, '%s[%d]' % (where, i), out, filenames)
    elif _key(a) != _key(b):
        out.append('%s: %s != %s' % (where, _short(a), _short(b)))


def _diff_code(a, b, where, out, filenames):
    """Append 'where.attr: ...' for each field where code a differs from code b."""
    for attr in _ATTRS:
        if len(out) > MAX_DIFFS:
            return
        if attr == 'co_filename' and not filenames:
            continue
        va, vb = getattr(a, attr), getattr(b, attr)
        if type(va) is not type(vb) or va != vb:
            if isinstance(va, bytes) or len(repr(va)) > 60:
                out.append('%s.%s differs' % (where, attr))
            else:
                out.append('%s.%s: %s != %s' % (where, attr, _short(va), _short(vb)))
    ca, cb = a.co_consts, b.co_consts
    if len(ca) != len(cb):
        out.append('%s.co_consts: %d constants != %d' % (where, len(ca), len(cb)))
        return
    for i, (x, y) in enumerate(zip(ca, cb)):
        _diff_const(x, y, '%s.co_consts[%d]' % (where, i), out, filenames)


def _dump_v2(code):
    """marshal format 2 writes no references and no interning marks: the same bytes for equal
    code, whatever the objects' reference counts and history. None where 2 cannot write it
    (3.14's slice constants)."""
    try:
        return marshal.dumps(code, 2)
    except ValueError:
        return None


def _wrong_filenames(code, dfile):
    """How many of the code objects report another file than dfile, and which names (a few)."""
    bad, total, names = 0, 0, []
    stack = [code]
    while stack:
        c = stack.pop()
        total += 1
        if type(c.co_filename) is not str or c.co_filename != dfile:
            bad += 1
            # In full up to a long path's length: the path is the whole point of the message.
            name = _short(c.co_filename, 4200)
            if len(names) < MAX_NAMES and name not in names:
                names.append(name)
        for k in c.co_consts:
            if type(k) is _CODE:
                stack.append(k)
    return bad, total, names


class Fresh(object):
    """The fresh compile at each level, and its format-2 bytes once needed."""

    def __init__(self, codes):
        self.codes = codes
        self.dumps = {}

    def dump(self, level):
        if level not in self.dumps:
            self.dumps[level] = _dump_v2(self.codes[level])
        return self.dumps[level]

    def equal(self, code, dump, level, filenames):
        if filenames and dump is not None and dump == self.dump(level):
            return True
        # Only frozenset constants, whose order can differ, or real differences get here.
        out = []
        _diff_code(code, self.codes[level], '<module>', out, filenames)
        return not out


def _fields(req):
    """Split a request into (mask, flags, dfile, source, bodies per level)."""
    mask, flags = req[0], req[1]
    pos = 2
    n = int.from_bytes(req[pos:pos + 4], 'little')
    dfile = req[pos + 4:pos + 4 + n].decode('utf-8', 'surrogateescape')
    pos += 4 + n
    n = int.from_bytes(req[pos:pos + 4], 'little')
    src = req[pos + 4:pos + 4 + n]
    pos += 4 + n
    bodies = []
    last = None
    for level in (0, 1, 2):
        if not mask & (1 << level):
            continue
        n = int.from_bytes(req[pos:pos + 4], 'little')
        pos += 4
        if n == NO_PYC:
            bodies.append((level, None))
            continue
        if n != SAME_BODY:
            last = req[pos:pos + n]
            pos += n
        bodies.append((level, last))
    return mask, flags, dfile, src, bodies


def handle(req):
    mask, flags, dfile, src, bodies = _fields(req)
    sourceless = flags & 1
    codes = {}
    if not sourceless:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            for level, _ in bodies:
                try:
                    codes[level] = compile(src, dfile, 'exec', dont_inherit=True, optimize=level)
                except (Exception, RecursionError, MemoryError) as exc:
                    return compile_error(exc, src)
    fresh = Fresh(codes)
    out = [b'K']
    loaded = {}
    for level, body in bodies:
        if body is None:
            out.append(b'\x00')
            continue
        if id(body) not in loaded:
            try:
                code = marshal.loads(body)
                if type(code) is not _CODE:
                    raise NotCode('it holds a %s, not a code object' % type(code).__name__)
                loaded[id(body)] = (code, _dump_v2(code), _wrong_filenames(code, dfile))
            except Exception as exc:
                loaded[id(body)] = '%s: %s' % (type(exc).__name__, exc)
        got = loaded[id(body)]
        if isinstance(got, str):
            out.append(b'\x01')
            out.append(_str(got))
            continue
        code, dump, (bad, total, examples) = got
        matches, diffs = 0, []
        if not sourceless:
            # Wrong file names are reported on their own: compare the rest.
            names_ok = bad == 0
            if fresh.equal(code, dump, level, names_ok):
                matches = 1 << level
            else:
                _diff_code(code, codes[level], '<module>', diffs, names_ok)
                if len(diffs) > MAX_DIFFS:
                    diffs[MAX_DIFFS:] = ['...']
                for other, _ in bodies:
                    if other != level and fresh.equal(code, dump, other, names_ok):
                        matches |= 1 << other
        out.append(b'\x02')
        out.append(bytes([matches]))
        out.append(_u32(bad))
        out.append(_u32(total))
        out.append(_u32(len(examples)))
        out.extend(_str(e) for e in examples)
        out.append(_u32(len(diffs)))
        out.extend(_str(d) for d in diffs)
    return out


def main():
    _write_frame(_OUT_FD, [hello()])
    while True:
        req = _read_frame(0)
        if not req:
            return
        try:
            resp = handle(req)
        except Exception as exc:            # a bug here must not end the run: report it
            resp = [b'X', _str('%s: %s' % (type(exc).__name__, exc))]
        _write_frame(_OUT_FD, resp)


main()
