"""Checks shipped in the subpackage."""


def positive(x):
    assert x > 0, x
    return x
