"""FLEAD's read-only HTTP API over the tables the dataflow writes: ``python -m api`` (docs/api.md)."""
