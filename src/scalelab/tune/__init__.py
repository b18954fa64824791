"""Tuning per rung: Optuna searches (search.py) and the learning-rate rule fitted to them
(rule.py). The driver that runs a tuning study end to end is `driver.tune_study`."""
