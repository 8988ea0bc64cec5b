"""Side-by-side benchmarks of bilstm_tagger against spaCy's built-in components."""

import os


def pin_threads(threads: int) -> None:
    """Fix the BLAS/OpenMP thread counts and keep datasets and the hub offline; call it before
    torch loads (the libraries read these variables once)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
