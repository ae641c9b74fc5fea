"""Driver for tests/marshal_normalize.rs, run by the interpreter under test (3.6 and later).

    python driver.py COUNT AGAIN

Compiles a deterministic sample of COUNT modules of the interpreter's own standard library
at optimization levels 0, 1 and 2 (pass 0: the first module in a fresh process, each later
one after all before it), then imports a batch of modules and compiles the first AGAIN
modules of the sample once more, in reverse order (pass 1: the same sources after a long
history). For each (pass, module, level) it writes to stdout one record:

    u8 pass, u32 path length, path (UTF-8, surrogatepass), u8 level,
    u32 marshal length, marshal.dumps(code),
    u32 number of code objects, then for each in the order marshal writes them
    (outer first, then co_consts in order, recursively):
        u32 length, co_filename (UTF-8, surrogatepass), u32 length, co_name, i32 co_firstlineno

then a u8 0xFF. The first record is preceded by the 4-byte magic number.
It then reads from stdin, for every pass-0 record in the same order, u32 length and the
normalized bytes, loads them with marshal and compares the result with the compiled code
object recursively. It prints one line per mismatch and a final `checked N mismatches M`.
"""
import importlib.util
import marshal
import os
import struct
import sys
import sysconfig
import types
import warnings

warnings.simplefilter("ignore")

out = sys.stdout.buffer
inp = sys.stdin.buffer


def sample(count):
    stdlib = sysconfig.get_paths()["stdlib"]
    files = []
    for top, dirs, names in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__"))
        files.extend(os.path.join(top, n) for n in sorted(names) if n.endswith(".py"))
    files.sort()
    # Every k-th file, so the sample spreads over the whole library.
    step = max(1, len(files) // count)
    return files[::step][:count]


def code_objects(code):
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            for x in code_objects(c):
                yield x


def put_str(s):
    b = s.encode("utf-8", "surrogatepass")
    out.write(struct.pack("<I", len(b)) + b)


def read_exact(n):
    chunks = []
    while n:
        b = inp.read(n)
        if not b:
            raise EOFError("stdin closed early")
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def bits(x):
    return struct.pack("<d", x)


def same(a, b, where):
    """None when equal, else where and how they differ. Stricter than ==: types must match
    exactly, floats bit for bit (so -0.0 != 0.0 and NaN == NaN), code objects field by field."""
    if type(a) is not type(b):
        return "%s: %s != %s" % (where, type(a).__name__, type(b).__name__)
    if isinstance(a, types.CodeType):
        for attr in sorted(dir(a)):
            if attr.startswith("co_") and not callable(getattr(a, attr)):
                r = same(getattr(a, attr), getattr(b, attr), where + "." + attr)
                if r:
                    return r
        return None
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            return "%s: length %d != %d" % (where, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            r = same(x, y, "%s[%d]" % (where, i))
            if r:
                return r
        return None
    if isinstance(a, (set, frozenset)):
        key = lambda x: (type(x).__name__, repr(x))
        return same(sorted(a, key=key), sorted(b, key=key), where)
    if isinstance(a, dict):
        return same(sorted(a.items(), key=repr), sorted(b.items(), key=repr), where)
    if isinstance(a, float):
        return None if bits(a) == bits(b) else "%s: %r != %r" % (where, a, b)
    if isinstance(a, complex):
        ok = bits(a.real) == bits(b.real) and bits(a.imag) == bits(b.imag)
        return None if ok else "%s: %r != %r" % (where, a, b)
    return None if a == b else "%s: %r != %r" % (where, a, b)


def compile_all(files, pass_number, compiled):
    for path in files:
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError:
            continue
        for level in (0, 1, 2):
            try:
                code = compile(source, path, "exec", dont_inherit=True, optimize=level)
            except (SyntaxError, ValueError):
                break
            data = marshal.dumps(code)
            if pass_number == 0:
                compiled.append((path, level, code))
            out.write(struct.pack("<B", pass_number))
            put_str(path)
            out.write(struct.pack("<B", level))
            out.write(struct.pack("<I", len(data)) + data)
            codes = list(code_objects(code))
            out.write(struct.pack("<I", len(codes)))
            for c in codes:
                put_str(c.co_filename)
                put_str(c.co_name)
                out.write(struct.pack("<i", c.co_firstlineno))


def main():
    count, again = int(sys.argv[1]), int(sys.argv[2])
    files = sample(count)
    out.write(importlib.util.MAGIC_NUMBER)
    compiled = []
    compile_all(files, 0, compiled)
    # A longer history: modules whose import interns and holds many strings and constants.
    for name in ("json", "email.message", "http.client", "argparse", "decimal", "typing",
                 "collections", "asyncio", "unittest", "xml.dom.minidom", "logging"):
        try:
            __import__(name)
        except Exception:
            pass
    compile_all(list(reversed(files[:again])), 1, compiled)
    out.write(struct.pack("<B", 0xFF))
    out.flush()

    mismatches = 0
    for path, level, code in compiled:
        (n,) = struct.unpack("<I", read_exact(4))
        loaded = marshal.loads(read_exact(n))
        why = same(code, loaded, "<code>")
        if why:
            mismatches += 1
            out.write(("MISMATCH %s level %d: %s\n" % (path, level, why)).encode("utf-8", "replace"))
    out.write(("checked %d mismatches %d\n" % (len(compiled), mismatches)).encode())
    out.flush()


main()
