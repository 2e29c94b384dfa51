"""`python -m charter.cli`: the same as the `charter` command."""

from .main import main

main()
