"""A docstring and an assert: three different levels."""


def checked_ratio(a, b):
    """a / b, with b checked in debug mode."""
    assert b != 0
    return a / b


if __debug__:
    MODE = "debug"
else:
    MODE = "optimized"
