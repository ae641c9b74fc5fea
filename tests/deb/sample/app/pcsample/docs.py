"""Docstrings but no assert statements: levels 0 and 1 are identical, -OO drops the docstrings."""


def has_docstrings():
    """True unless running with -OO."""
    return has_docstrings.__doc__ is not None
