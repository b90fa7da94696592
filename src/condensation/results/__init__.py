"""What runs record, read back: tables, plots and checks over results files, without the training code
(``condense report`` and the benchmark scripts import this package, not the runners)."""
