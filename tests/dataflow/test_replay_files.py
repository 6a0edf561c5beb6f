from pathlib import Path

import orjson

from dataflows.replay_files import BytesRead, read_replay
from operators.messages import MessageLimits, Rejection, Telemetry

LIMITS = MessageLimits()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_directory_of_device_csvs_is_merged_in_time_order(tmp_path):
    write(tmp_path / "plant/a.csv", "timestamp,value,label\n2024-01-01 00:00:00,1,0\n2024-01-01 00:10:00,2,1\n")
    write(tmp_path / "b.csv", "timestamp,value\n2024-01-01 00:05:00,3\n2024-01-01 00:15:00,4\n")
    records = list(read_replay(tmp_path, LIMITS))
    assert [(r.device_id, r.values["value"], r.label) for r in records] == [
        ("plant/a", 1.0, 0),
        ("b", 3.0, None),
        ("plant/a", 2.0, 1),
        ("b", 4.0, None),
    ]


def test_the_rows_bytes_are_counted_as_they_are_read(tmp_path):
    """A JSON line with its line end, blank and rejected ones too; a CSV row as its text and line end."""
    lines = b'{"device_id":"a","timestamp":"2024-01-01T00:00:00Z","data":{"t":1}}\n\nnot json\n'
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "in.jsonl").write_bytes(lines)
    tally = BytesRead()
    assert len(list(read_replay(tmp_path / "j" / "in.jsonl", LIMITS, tally=tally))) == 2
    assert tally.total == len(lines)
    rows = "2024-01-01 00:00:00,1,0\n2024-01-01 00:10:00,oops,1\n"
    write(tmp_path / "c" / "a.csv", "timestamp,value,label\n" + rows)
    write(tmp_path / "c" / "b.csv", "timestamp,value\n2024-01-01 00:05:00,3\n")
    tally = BytesRead()
    assert len(list(read_replay(tmp_path / "c", LIMITS, tally=tally))) == 3
    assert tally.total == len(rows) + len("2024-01-01 00:05:00,3\n")


def test_the_label_column_is_never_a_field(tmp_path):
    write(tmp_path / "d.csv", "timestamp,temp,rpm,label\n2024-01-01 00:00:00,20.5,900,1\n")
    (record,) = read_replay(tmp_path / "d.csv", LIMITS)
    assert record.values == {"temp": 20.5, "rpm": 900.0}
    assert record.label == 1


def test_a_renamed_label_column_and_a_field_list(tmp_path):
    write(tmp_path / "d.csv", "timestamp,temp,rpm,truth\n2024-01-01 00:00:00,20.5,900,1\n")
    limits = MessageLimits(label_key="truth", fields=frozenset({"rpm"}))
    (record,) = read_replay(tmp_path / "d.csv", limits)
    assert (record.values, record.label) == ({"rpm": 900.0}, 1)


def test_a_single_csv_with_a_device_column(tmp_path):
    path = write(
        tmp_path / "fleet.csv", "device_id,timestamp,value\nm1,2024-01-01T00:00:00Z,1\nm2,2024-01-01T00:00:01Z,2\n"
    )
    assert [r.device_id for r in read_replay(path, LIMITS)] == ["m1", "m2"]


def test_a_single_csv_without_one_is_named_by_its_stem(tmp_path):
    path = write(tmp_path / "pump_7.csv", "timestamp,value\n2024-01-01 00:00:00,1\n")
    assert [r.device_id for r in read_replay(path, LIMITS)] == ["pump_7"]


def test_bad_rows_become_rejections_in_place_with_file_and_line(tmp_path):
    path = write(
        tmp_path / "d.csv",
        "timestamp,value,label\n2024-01-01 00:00:00,1,0\nsoon,2,0\n2024-01-01 00:02:00,x,0\n2024-01-01 00:03:00,4,7\n",
    )
    records = list(read_replay(path, LIMITS))
    assert isinstance(records[0], Telemetry)
    assert [(r.reason, r.source) for r in records[1:]] == [
        ("invalid_timestamp", f"file:{path}:3"),
        ("invalid_value", f"file:{path}:4"),
        ("invalid_label", f"file:{path}:5"),
    ]


def test_a_csv_without_a_timestamp_column_is_one_rejection(tmp_path):
    path = write(tmp_path / "d.csv", "time,value\n1,2\n")
    (record,) = read_replay(path, LIMITS)
    assert isinstance(record, Rejection) and record.reason == "missing_timestamp"


def test_json_lines_keep_rejections_and_skip_blank_lines(tmp_path):
    lines = [
        orjson.dumps({"device_id": "a", "timestamp": "2024-01-01T00:00:00Z", "data": {"t": 1}, "label": 0}),
        b"",
        b"{broken",
        orjson.dumps({"device_id": "a", "timestamp": "2024-01-01T00:00:01Z", "data": 2}),
    ]
    path = write(tmp_path / "m.jsonl", b"\n".join(lines).decode() + "\n")
    records = list(read_replay(path, LIMITS))
    assert [type(r).__name__ for r in records] == ["Telemetry", "Rejection", "Telemetry"]
    assert records[1].source == f"file:{path}:3"


def test_json_metadata_in_a_replayed_directory_is_not_read(tmp_path):
    write(tmp_path / "labels.json", '{"not": "telemetry"}')
    write(tmp_path / "d.csv", "timestamp,value\n2024-01-01 00:00:00,1\n")
    assert len(list(read_replay(tmp_path, LIMITS))) == 1


def test_undecoded_lines_keep_their_line_numbers_across_read_chunks(tmp_path):
    line = orjson.dumps({"device_id": "d", "timestamp": 1_700_000_000, "data": 1.0}) + b"\n"
    lines = [line] * 1500 + [b"\n", b"not json\n", line]  # well past one 64 KiB chunk
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"".join(lines))
    records = list(read_replay(path, LIMITS, undecoded=True))
    assert len(records) == 1502
    assert [r.position for r in records[:1500]] == list(range(1, 1501))
    assert isinstance(records[1500], Rejection) and records[1500].source == f"file:{path}:1502"
    assert records[1501].position == 1503
    assert records[0].ingested_at <= records[-1].ingested_at


def test_a_csv_row_and_a_json_line_saying_the_same_get_the_same_verdict(tmp_path):
    """One validation owns every input: the CSV reader has no limits of its own."""
    columns = [f"f{i}" for i in range(40)]
    write(
        tmp_path / "wide.csv",
        "device_id,timestamp," + ",".join(columns) + "\nm1,2024-01-01T00:00:00Z," + ",".join("1" * 40) + "\n",
    )
    line = {"device_id": "m1", "timestamp": "2024-01-01T00:00:00Z", "data": dict.fromkeys(columns, 1.0)}
    (tmp_path / "wide.jsonl").write_bytes(orjson.dumps(line) + b"\n")
    csv_verdict, json_verdict = (
        next(iter(read_replay(tmp_path / name, LIMITS))) for name in ("wide.csv", "wide.jsonl")
    )
    assert (
        (csv_verdict.reason, csv_verdict.detail)
        == (json_verdict.reason, json_verdict.detail)
        == (
            "too_many_fields",
            "40 fields > 32",
        )
    )
    long_id = "m" * (LIMITS.max_device_id_length + 1)
    write(tmp_path / "long.csv", f"device_id,timestamp,value\n{long_id},2024-01-01T00:00:00Z,1\n")
    (tmp_path / "long.jsonl").write_bytes(
        orjson.dumps({"device_id": long_id, "timestamp": "2024-01-01T00:00:00Z", "data": {"value": 1}}) + b"\n"
    )
    verdicts = [next(iter(read_replay(tmp_path / name, LIMITS))) for name in ("long.csv", "long.jsonl")]
    assert [(v.reason, v.detail) for v in verdicts] == [("invalid_device_id", verdicts[1].detail)] * 2
