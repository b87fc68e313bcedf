"""An IO manager that stores Arrow tables between stages as parquet (never pickles).

Stage tables are scratch data read back once or twice, so they are written uncompressed by
default: on the full-scale corpus that made writing the 1 GB ``normalized_pairs`` table 4x
faster (1.1 s vs 4.3 s with zstd) and reading it 2x faster. Releases are zstd-compressed.
"""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq


class ParquetTableIOManager(dg.ConfigurableIOManager):
    """Keeps each asset's ``pa.Table`` as ``<base_dir>/<asset key>.parquet`` (schema metadata kept)."""

    base_dir: str
    compression: str = "none"

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        return Path(self.base_dir).joinpath(*context.asset_key.path).with_suffix(".parquet")

    def handle_output(self, context: dg.OutputContext, obj: pa.Table) -> None:
        if obj is None:
            return
        if not isinstance(obj, pa.Table):
            raise TypeError(f"{context.asset_key}: expected a pyarrow.Table, got {type(obj)}")
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(obj, tmp, compression=self.compression)
        tmp.replace(path)

    def load_input(self, context: dg.InputContext) -> pa.Table:
        path = self._path(context)
        if not path.exists():
            raise FileNotFoundError(
                f"{context.asset_key}: no stored table at {path}; materialize it first"
            )
        return pq.read_table(path)
