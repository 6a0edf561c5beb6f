import subprocess
import sys

from tests.flead_runs import REPO


def test_the_dataflow_is_built_without_importing_river_scipy_or_plotly():
    """River defines the devices' logistic model and SciPy has an ``erfc``, but the dataflow
    imports neither: River's linear models bring SciPy's statistics (0.7 s and 50 MB at every
    start), SciPy's special functions 0.2 s and 27 MB (``operators/local_model.py``,
    ``operators/likelihood.py``). Plotly comes only when a replay's report is drawn
    (``sinks/console.py``)."""
    code = (
        "import sys; from dataflows.config import load_settings; from dataflows.flead import build_flow; "
        "build_flow(load_settings({})); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'river', 'scipy', 'plotly', 'operators'}))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert found.stdout.split() == ["['operators']"]
