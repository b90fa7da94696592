"""The engine: the one condensation loop (condense.py) and the training pieces below the objectives (real.py:
real images per class; train.py: network training; experts.py: MTT's expert trajectories; checkpoint.py).

Deliberately empty of imports: objectives import engine.train and engine.experts, and engine.condense imports
the objectives, so importing this package must not pull condense in (tests/test_layers.py checks the layers)."""
