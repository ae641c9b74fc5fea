"""bench/floor.py: the least CPU and wall time any tool needs to byte-compile a root that
pyclink has already compiled, with CPython's own compile(), on N processes.

usage: python3.X bench/floor.py ROOT CACHE_TAG N {distinct|all|distinct-written}

Run by bench/compare with the interpreter of the root's version, on a root pyclink compiled and
pyclink verify accepted (so levels that share an inode are exactly the identical ones). Every source
is read and every __pycache__ looked at first; only then are N processes forked, each taking
every N-th source of the largest-first list and doing nothing but compile() + marshal.dumps():
no I/O, no protocol, no headers, no writing. "distinct" compiles one level per group of
identical levels (what a tool that knows the groups in advance must compile); "all" compiles
every level (what compileall compiles). Prints one JSON line: the wall time from the fork to
the last process's exit, their CPU (user+sys), and the number of compiles.

"distinct-written" also writes each distinct level's bytes to a new file beside its pyc
(`NAME.TAG[.opt-L].pyc.floor`, created with O_EXCL, then removed once the timing is over): the
least a tool must also spend on a disk, where creating an inode is not free. Nothing else that a
tool needs (temp names, renames, links, locks) is done.
"""

import json
import marshal
import os
import sys
import time
import warnings


def load(root, tag, mode):
    jobs = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if not f.endswith('.py'):
                continue
            path = os.path.join(d, f)
            base = os.path.join(d, '__pycache__', f[:-3] + '.' + tag)
            levels, seen, pycs = [], set(), []
            for level, suffix in enumerate(('.pyc', '.opt-1.pyc', '.opt-2.pyc')):
                try:
                    inode = os.stat(base + suffix).st_ino
                except OSError:
                    continue                # no pyc: a source that does not compile
                if mode == 'all' or inode not in seen:
                    levels.append(level)
                    pycs.append(base + suffix + '.floor')
                seen.add(inode)
            if levels:
                with open(path, 'rb') as fh:
                    jobs.append((len(levels) * os.path.getsize(path), path, fh.read(), levels, pycs))
    jobs.sort(key=lambda j: -j[0])
    return jobs


def compile_share(jobs, dfile_root, write):
    n = 0
    for _, path, src, levels, pycs in jobs:
        dfile = '/' + os.path.relpath(path, dfile_root)
        for level, pyc in zip(levels, pycs):
            code = compile(src, dfile, 'exec', dont_inherit=True, optimize=level)
            data = marshal.dumps(code)
            del code
            if write:
                fd = os.open(pyc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, bytes(16) + data)
                os.close(fd)
            n += 1
    return n


def main():
    root, tag, procs, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    warnings.simplefilter('ignore')
    write = mode == 'distinct-written'
    jobs = load(root, tag, 'distinct' if write else mode)
    before = os.times()
    start = time.monotonic()
    pipes = []
    for i in range(procs):
        r, w = os.pipe()
        if os.fork() == 0:
            os.close(r)
            n = compile_share(jobs[i::procs], root, write)
            os.write(w, str(n).encode())
            os._exit(0)
        os.close(w)
        pipes.append(r)
    compiles = 0
    for r in pipes:
        compiles += int(os.read(r, 64) or b'0')
    for _ in range(procs):
        os.wait()
    wall = time.monotonic() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if write:
        for job in jobs:
            for pyc in job[4]:
                os.unlink(pyc)
    print(json.dumps({'mode': mode, 'wall': wall, 'cpu': cpu, 'compiles': compiles, 'processes': procs}))


if __name__ == '__main__':
    main()
