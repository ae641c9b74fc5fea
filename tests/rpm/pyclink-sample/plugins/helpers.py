# A helper next to the plugin, no docstring, no assert.

def double(x):
    return 2 * x
