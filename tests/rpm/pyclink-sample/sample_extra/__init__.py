# The subpackage pyclink-sample-extra: levels identical.
from sample.plain import lookup

DEFAULT = lookup("a")
