"""pyclink's sample application: modules whose optimization levels differ in known ways."""

from . import both, checks, docs, plain


def report():
    # Which code object was loaded shows in what -O and -OO removed.
    return "asserts=%s docstrings=%s total=%d" % (
        checks.asserts_active(),
        docs.has_docstrings(),
        plain.total([1, 2, 3]) + both.scale(2),
    )
