"""Docstrings and assert statements: all three levels differ."""


def scale(n):
    """Ten times n."""
    assert isinstance(n, int), n
    return 10 * n
