# Neither docstrings nor asserts: all three levels are the same bytes.

TABLE = {"a": 1, "b": 2, "c": 3}


def lookup(key, default=None):
    return TABLE.get(key, default)


def total():
    return sum(TABLE.values())
