"""What a trained tagger computes, for people: nothing in ml/, pipeline/ or data/ imports this package
(the pipe's `inspect` and `n_best` import `inspect.py` when they are called).

- rnn.py: exact RNN gates, cells and hidden states, gate saturation, attention weights
- calibration.py: CRF path probabilities, reliability tables, ECE, the temperature fit
- inspect.py: `pipe.inspect(docs)` and `pipe.n_best(docs, k)`
- calibrate.py: `calibrate(model, dataset, ...)`, the work of `python -m bilstm_tagger calibrate` (the decision bias and the temperature)
- explain.py: `explain(model, output, ...)`, the work of `python -m bilstm_tagger explain`: an HTML report built with report/
- report/: the HTML report (and PNG figures) from plain data
"""
