"""Pure projection rules: no I/O, no framework imports."""
