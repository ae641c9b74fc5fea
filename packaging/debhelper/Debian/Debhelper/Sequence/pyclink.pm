#!/usr/bin/perl
# debhelper sequence addon for dh_pyclink: `dh $@ --with pyclink`, or
# `Build-Depends: dh-sequence-pyclink`.

use strict;
use warnings;
use Debian::Debhelper::Dh_Lib;

# Right before dh_fixperms: every tool that installs, deletes or rewrites files has run by then
# (dh_python3, which the python3 addon puts before dh_installinit and which deletes shipped
# pycs, as well as dh_link and dh_compress), and the pycs still get dh_fixperms, dh_md5sums and
# dh_builddeb. The anchor does not depend on the order in which addons are loaded.
insert_before('dh_fixperms', 'dh_pyclink');

1;
