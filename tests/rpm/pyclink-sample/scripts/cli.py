"""A script installed by a glob: %py_byte_compile ... %{_datadir}/pyclink-sample/scripts/*.py"""


def main():
    return 0
