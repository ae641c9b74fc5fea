"""Only docstrings: level 1 equals level 0, level 2 drops them."""


def greet(name):
    """Return a greeting for name."""
    return "hello, " + name


class Greeter:
    """Greets people."""

    def __init__(self, prefix):
        self.prefix = prefix

    def greet(self, name):
        return self.prefix + greet(name)
