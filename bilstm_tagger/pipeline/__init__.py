"""The spaCy pipe and what it needs beside the network.

- component.py: the `bilstm_tagger`, `bilstm_spans`, `bilstm_tags` and `bilstm_pos` factories and the pipe
- tasks.py: what each target means (labels, gold tags, annotations, scores)
- scoring.py: seqeval scores over a span getter, `bilstm_tagger.seqeval_scorer.v1`
- confidence.py: `Span._.confidence`, n-best paths and alternatives from the record tagging files
- decision.py, decision_fit.py: the decision bias and confidence thresholds, and how calibrate fits the bias
- threads.py: how many torch threads the pipe runs with
- loading.py: load a saved pipeline and find its bilstm_tagger component
"""
