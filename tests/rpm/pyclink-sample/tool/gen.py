# Byte-compiled by the package's own build system (compileall at levels 0 and 1, without
# --hardlink-dupes), outside the Python trees and outside %py_byte_compile: Fedora's
# brp-python-hardlink links the two identical levels anyway.

def generate():
    return "generated"
