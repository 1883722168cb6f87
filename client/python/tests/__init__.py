"""Tests of the limitd Python client against the real server binary.

Run either way, from the repository root:
    python3 -m unittest discover -s client/python/tests
    python3 -m unittest discover -s client/python/tests -t client/python
With -t the test modules are imported as tests.test_*; putting this folder on
sys.path lets them import their helper module as plain ``limitdtest`` both ways.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
