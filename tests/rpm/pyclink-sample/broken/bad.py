# Installed only when building --with syntax_error.

def broken(:
    pass
