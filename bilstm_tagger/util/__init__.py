"""Package infrastructure with no tagging logic, usable from every layer.

- atomic.py: `atomic_write(path, data)`, a crash-safe file write (temp file, fsync, rename)
- compat.py: fixes for the versions of other packages we run against, each behind a version guard
- deprecation.py: how the old (release 0.1 and 0.2) import paths forward to the new ones, with a warning
"""
