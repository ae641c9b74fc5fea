# Neither docstrings nor assert statements: levels 0, 1 and 2 compile to the same code.


def total(values):
    result = 0
    for v in values:
        result += v
    return result
