"""What every layer of charter may import: reading data files and the limits on them.

This package sits below `constitution`, `judge`, `trainer` and the CLI/service layer, so it
imports nothing else of charter (tests/test_layers.py checks that).
"""
