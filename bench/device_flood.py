"""Peak memory while a flood of distinct device ids arrives, with and without a cap on live devices.

    .venv/bin/python -m bench.device_flood                       # 1,000,000 ids; caps 1,000 and 20,000 per shard
    .venv/bin/python -m bench.device_flood --ids 200000 --caps 1000 0

Each id sends one reading (a JSON line, event times one second apart), as a flood of made-up
ids would. With a cap, every shard keeps at most that many devices and the rest become
``device_limit`` dead letters; the peak RSS should follow the cap, not the flood. Prints a
markdown table: ids, the cap (per shard and for the 64 shards), rows processed and refused,
wall seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import orjson

from bench.run import flead_env, run_measured

START = 1_700_000_000


def write_flood(path: Path, ids: int) -> None:
    with path.open("wb") as handle:
        for i in range(ids):
            message = {"device_id": f"flood-{i:07d}", "timestamp": START + i, "data": {"value": float(i % 97)}}
            handle.write(orjson.dumps(message) + b"\n")


def flood(path: Path, cap: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        env = flead_env(
            path, Path(out), FLEAD_SHARDS="64", FLEAD_MAX_DEVICES_PER_SHARD=str(cap), FLEAD_REPORT_POINTS="0"
        )
        seconds, rss = run_measured([sys.executable, "-m", "bytewax.run", "dataflows.flead"], env)
        summary = orjson.loads((Path(out) / "summary.json").read_bytes())
    refused = summary["rejected_by_reason"].get("device_limit", 0)
    return {"processed": summary["rows_processed"], "refused": refused, "seconds": seconds, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--caps", type=int, nargs="+", default=[1_000, 20_000], help="per shard; 0 = no cap")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "flood.jsonl"
        write_flood(path, args.ids)
        print("| distinct ids | cap per shard (fleet) | processed | refused | seconds | peak RSS |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for cap in args.caps:
            row = flood(path, cap)
            limit = f"{cap:,} ({cap * 64:,})" if cap else "none"
            print(
                f"| {args.ids:,} | {limit} | {row['processed']:,} | {row['refused']:,} |"
                f" {row['seconds']:.0f} | {row['rss'] / 2**20:,.0f} MiB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
