"""Unit tests of the harness's pure functions: `python3 -m unittest discover -s bench/tests -t bench`."""
