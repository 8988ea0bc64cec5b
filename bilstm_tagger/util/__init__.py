"""Package infrastructure with no tagging logic, usable from every layer.

- atomic.py: every crash-safe write: files (`atomic_write`, `write_json_atomic`, `write_jsonl_atomic`, `tmp_name` + `commit`) and directories (`write_dir_atomic`, `replace_dir` with renameat2 or two renames, `recover_dir_swaps`)
- compat.py: fixes for the versions of other packages we run against, each behind a version guard
- deprecation.py: how the old (release 0.1 and 0.2) import paths forward to the new ones, with a warning
"""
