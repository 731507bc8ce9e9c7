"""Data layer: one module per pipeline step, which :func:`raydetox.data.prepare.prepare` runs once, in order.

io (load) → split → lexicon → clean → difficulty → stages; each step imports only earlier steps
(tests/test_architecture.py). The table they pass on is described in :mod:`raydetox.data.pairs`.
"""
