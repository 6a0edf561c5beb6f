#!/usr/bin/env bash
# The PyFlink reference's own virtualenv, bench/.venv-flink: apache-flink pins apache-beam,
# which pins numpy below 2.2, so it cannot share FLEAD's venv (River 0.26 needs numpy 2.2.5+).
# River 0.23.0 is the newest River that fits beside it. Needs Java 11, 17 or 21 on PATH.
# Idempotent: installs only what is missing or at another version.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=bench/.venv-flink
requirements=(apache-flink==2.1.0 river==0.23.0 orjson==3.13.0)
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
command -v java >/dev/null 2>&1 || { echo "setup_pyflink.sh: PyFlink needs Java (e.g. apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
installed() {
  "$venv/bin/python" - "${requirements[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for requirement in sys.argv[1:]:
    name, wanted = requirement.split("==")
    try:
        if version(name) != wanted:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}
if ! installed; then
  "$venv/bin/pip" install -q --disable-pip-version-check "${requirements[@]}"
fi
"$venv/bin/python" -c "import pyflink, river; print('PyFlink venv ready:', pyflink.__file__, 'river', river.__version__)"
