#!/usr/bin/env bash
# A separate virtualenv for the PyFlink reference (bench/.venv-flink): apache-flink pins its
# own numpy/pandas/pyarrow, which must not mix with FLEAD's. Needs Java 11+ (17 is fine).
# Idempotent: does nothing when the venv already has everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=bench/.venv-flink
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "import pyflink, river, orjson" 2>/dev/null; then
  # apache-beam (under PyFlink) pins numpy below the one River 0.26 needs: let pip pick a River that fits.
  "$venv/bin/pip" install -q --disable-pip-version-check apache-flink==2.1.0 river orjson
fi
"$venv/bin/python" -c "import pyflink, river; print('PyFlink venv ready:', pyflink.__file__)"
