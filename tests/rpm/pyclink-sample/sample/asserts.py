# Only asserts: level 1 drops them, level 2 equals level 1.


def mean(values):
    assert values, "mean of nothing"
    return sum(values) / len(values)


def clamp(x, lo, hi):
    assert lo <= hi
    return max(lo, min(x, hi))
