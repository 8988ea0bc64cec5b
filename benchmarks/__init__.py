"""Side-by-side benchmarks of bilstm_tagger against spaCy's built-in components."""
