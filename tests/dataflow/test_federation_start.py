"""The model a Kafka run's federation goes on from stays the first start's on every resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dataflows.federation_start import START_FILE, federation_start
from operators.features import FEATURE_NAMES
from operators.fedavg import GlobalModel
from operators.local_model import ModelParameters


def model(version: int) -> GlobalModel:
    return GlobalModel(version, ModelParameters(dict.fromkeys(FEATURE_NAMES, 0.25), -1.5), 0.5, 3, 9, 900, 1.7e9)


def new_store(directory: Path) -> Path:
    directory.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(directory), "2"], check=True)
    return directory


class Topic:
    """The global-model topic as start-up sees it: its newest version, which grows as runs publish."""

    def __init__(self, newest: GlobalModel | None) -> None:
        self.newest = newest
        self.reads = 0

    def __call__(self) -> GlobalModel | None:
        self.reads += 1
        return self.newest


def test_without_a_recovery_store_the_topics_newest_is_taken_each_time(tmp_path):
    topic = Topic(model(4))
    assert federation_start(None, topic).version == 4
    topic.newest = model(9)
    assert federation_start(None, topic).version == 9
    assert federation_start(tmp_path / "not made yet", topic).version == 9  # Bytewax then names it
    assert not (tmp_path / "not made yet").exists()


def test_a_resume_goes_on_from_the_first_starts_model_not_the_topics_newest(tmp_path):
    store = new_store(tmp_path / "recovery")
    topic = Topic(model(4))
    first = federation_start(store, topic)
    topic.newest = model(30)  # versions the first run made before it stopped
    resumed = federation_start(store, topic)
    assert (first.version, resumed.version, topic.reads) == (4, 4, 1)
    assert resumed.as_row() == first.as_row()


def test_a_first_start_on_an_empty_topic_resumes_from_version_0(tmp_path):
    store = new_store(tmp_path / "recovery")
    topic = Topic(None)
    assert federation_start(store, topic) is None
    topic.newest = model(12)
    assert federation_start(store, topic) is None


def test_a_store_made_again_in_the_same_directory_is_a_first_start(tmp_path):
    store = new_store(tmp_path / "recovery")
    topic = Topic(model(4))
    federation_start(store, topic)
    for part in store.glob("part-*.sqlite3"):
        part.unlink()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(store), "1"], check=True)
    topic.newest = model(30)
    assert federation_start(store, topic).version == 30
    assert (store / START_FILE).exists()
