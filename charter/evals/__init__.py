"""Evaluation suites: harm under jailbreak attacks, over-refusal of benign prompts, helpfulness.

`data` reads suite files (the shipped ones in `charter/data/suites/` or a user's CSV/JSONL),
`templates` wraps harmful requests in jailbreak templates, `rates` turns verdicts into rates
with Wilson score intervals, `suites` generates and judges, and `runs` keeps each run in
the store for `charter report`.
"""
