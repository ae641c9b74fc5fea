# Installed with cli.py; no docstring, no assert: all levels are the same bytes.

def ident(x):
    return x
