"""Parquet on disk for named arrow tables: the one-file and the dataset layout, and reading either.

Two layouts hold the same tables (``runs``, ``steps``, ``outputs``) under one directory:

- one file per table, ``DIR/runs.parquet`` (what :meth:`~plextera_data.Tables.to_parquet` writes);
- a dataset per table, ``DIR/runs/*.parquet`` (what :class:`~plextera_data.flatten.TableWriter`
  writes, row group by row group). Several writers, each with its own part name, can add files
  to one dataset; every reader of parquet datasets (pyarrow, pandas, polars, DuckDB, Dask) reads
  the directory as one table.

A part is written under a temporary name (``.parquet.partial``, which dataset readers skip) and
renamed when complete, so a reader never meets a half-written file and a part written again
replaces the old one whole. This module knows nothing of the tables' schemas: it stores the arrow
schema it is given (with its metadata) and reads back what was stored.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["PartWriter", "read_table", "table_path", "write_files"]

_PARTIAL = ".partial"


def write_files(directory: str | Path, tables: dict[str, pa.Table]) -> dict[str, Path]:
    """Write each table to ``directory/NAME.parquet`` (the directory is created if missing)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, table in tables.items():
        path = target / f"{name}.parquet"
        pq.write_table(table, path)
        written[name] = path
    return written


def table_path(directory: str | Path, name: str) -> Path:
    """Where table ``name`` is under ``directory``: the dataset ``NAME/`` or the file
    ``NAME.parquet``; an error that says what is there when it is neither, or both."""
    source = Path(directory)
    dataset, single = source / name, source / f"{name}.parquet"
    if dataset.is_dir() and single.exists():
        raise ValueError(
            f"{source} holds both {dataset.name}/ and {single.name}: move one away, so that "
            "it is clear which of the two to read"
        )
    if dataset.is_dir():
        return dataset
    if single.exists():
        return single
    raise FileNotFoundError(
        f"{single} is missing (nor is there a dataset {dataset}/): Tables.read_parquet expects "
        "the runs, steps and outputs tables that Tables.to_parquet or px.flatten(..., to=...) "
        "write into one directory"
    )


def read_table(path: Path) -> pa.Table:
    """One parquet file, or every ``*.parquet`` file of a dataset directory in name order."""
    if not path.is_dir():
        return pq.read_table(path)
    parts = sorted(part for part in path.glob("*.parquet") if part.is_file())
    if not parts:
        raise FileNotFoundError(f"the dataset {path}/ holds no .parquet file")
    tables = [pq.read_table(part) for part in parts]
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid as error:
        names = ", ".join(part.name for part in parts)
        raise ValueError(
            f"the parts of {path}/ ({names}) do not share one schema: {error}"
        ) from None


class PartWriter:
    """One part of a dataset, ``DIR/NAME/PART.parquet``, written row group by row group.

    The part appears under its name on :meth:`close`; :meth:`abort` removes what was written.
    """

    def __init__(self, directory: str | Path, name: str, part: str, schema: pa.Schema) -> None:
        self.path = Path(directory) / name / f"{part}.parquet"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(self.path.name + _PARTIAL)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self._partial, schema)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (of the part's schema) as one or more row groups."""
        if self._writer is None:
            raise ValueError(f"{self.path} is closed")
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> Path:
        """Finish the file and give it its name (replacing an earlier part of that name)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the unfinished part; an earlier complete part of the same name stays."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._partial.unlink(missing_ok=True)
