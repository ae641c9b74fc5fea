# Assert statements but no docstrings: -O and -OO drop the asserts, so levels 1 and 2 are identical.


def asserts_active():
    try:
        assert False, "asserts are compiled in"
    except AssertionError:
        return True
    return False
