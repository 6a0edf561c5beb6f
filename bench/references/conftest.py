"""pytest collects the doctests of ``bench/``; ``pyflink_functions.py`` imports PyFlink, which
only the PyFlink venv (``bench/.venv-flink``) has, so outside it the module is left out."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("pyflink") else ["pyflink_functions.py"]
