"""A plugin in a private directory (/usr/share/pyclink-sample), compiled by %py_byte_compile."""


def run():
    return "plugin ran"
