"""An ensemble teacher for `distill --ensemble`: several teachers tag the same rows, and the student
learns from the mean of their token marginals.

Each member tags into its own annotate folder (resumable as usual), with the same input and shard
size, so member k's shard `part-N` holds the same rows in the same order as every other member's.
`average_shards` checks that (ids and tokens), maps every member's tags onto the first member's order
by name, and writes the arithmetic mean of the probabilities as an ordinary annotate folder: the
student's reader cannot tell it from a single teacher's. A mean of distributions is a distribution,
so each token still sums to 1 (within float16). The `entities` column is the first member's (the
reader uses entities only for shards without marginals). Members must come from the local engine:
Ray's output files do not hold the same rows in the same order.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from ..errors import AnnotateError

def check_same_tags(metas: Sequence[Dict], names: Sequence[str]) -> None:
    """Refuse members whose marginals are over different tags (or schemes): their mean is not defined."""
    first = metas[0]
    for meta, name in zip(metas[1:], names[1:]):
        if meta["scheme"] != first["scheme"] or sorted(meta["tags"]) != sorted(first["tags"]):
            raise AnnotateError(
                f"ensemble teachers must predict the same tags: {names[0]} has {first['scheme']} {', '.join(first['tags'])}; "
                f"{name} has {meta['scheme']} {', '.join(meta['tags'])}"
            )


def average_shards(members: Sequence[Path], out: Path) -> int:
    """Write the mean marginals of the member folders into `out`, shard by shard, each atomically.
    Every shard is recomputed on every call (reading the members is most of the cost anyway), so an
    output left by another teacher or another set of members is never kept. Returns the rows written."""
    import pyarrow.parquet as pq

    from ..annotate.local import SETTINGS_FILE, remove_temp_files
    from ..util.atomic import commit, tmp_name, write_json_atomic

    records = [member_record(Path(m), SETTINGS_FILE) for m in members]
    names = [sorted(p.name for p in Path(m).glob("part-*.parquet")) for m in members]
    if any(n != names[0] for n in names[1:]):
        raise AnnotateError(f"ensemble members hold different shards ({', '.join(f'{m}: {len(n)}' for m, n in zip(members, names))}); "
                            "they must tag the same input with the same --shard-size")
    out.mkdir(parents=True, exist_ok=True)
    remove_temp_files(out)
    for stale in set(p.name for p in out.glob("part-*.parquet")) - set(names[0]):
        (out / stale).unlink()
    rows = words = 0
    for name in names[0]:
        tables = [read_shard(Path(m) / name) for m in members]
        keys = tables[0].select(["id", "tokens"])
        for member, table in zip(members[1:], tables[1:]):
            if not table.select(["id", "tokens"]).equals(keys):
                raise AnnotateError(f"{Path(member) / name}: its rows differ from {Path(members[0]) / name} (ids or tokens)")
        rows += len(keys)
        words += sum(len(t) for t in keys.column("tokens").to_pylist())
        tmp = tmp_name(out / name)
        pq.write_table(mean_table(tables, members), tmp)
        commit(tmp, out / name)
    write_json_atomic(out / SETTINGS_FILE, {
        "complete": True, "ensemble": [str(m) for m in members], "shards": len(names[0]), "rows": rows,
        "settings": {"model": " + ".join(str(r.get("settings", {}).get("model")) for r in records)},
        "last_run": {"words": words, "members": [r.get("last_run") for r in records]},
    })
    return rows


def member_record(folder: Path, settings_file: str) -> dict:
    """A member's annotate record; AnnotateError unless its run is there and complete."""
    path = folder / settings_file
    try:
        record = json.loads(path.read_text(encoding="utf8"))
    except (OSError, ValueError) as e:
        raise AnnotateError(f"ensemble member {folder}: no readable annotate record ({path}: {e})") from None
    if not record.get("complete"):
        raise AnnotateError(f"ensemble member {folder}: its annotate run is not complete; rerun distill to finish it")
    if record.get("engine") not in (None, "local"):
        raise AnnotateError(f"ensemble member {folder}: written by the {record['engine']} engine, whose shards do not line up by row")
    return record


def read_shard(path: Path):
    """A member shard with its marginals; AnnotateError (naming the file) when it is unreadable or has none."""
    import pyarrow.parquet as pq

    from ..annotate.marginals import read_meta

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise AnnotateError(f"{path}: unreadable shard ({e}); delete it and rerun distill to tag it again") from None
    if read_meta(table.schema) is None or "marginals" not in table.column_names:
        raise AnnotateError(f"{path}: the shard has no marginals (members must be tagged with --marginals)")
    return table


def mean_table(tables, members: Sequence[Path]):
    """The first member's shard with its marginals replaced by the members' mean (in its tag order)."""
    from ..annotate.marginals import METADATA_KEY, marginals_array, read_marginals, read_meta

    metas = [read_meta(t.schema) for t in tables]
    check_same_tags(metas, [str(m) for m in members])
    tags = metas[0]["tags"]
    mean = [np.zeros((len(t), len(tags)), dtype=np.float32) for t in tables[0].column("tokens").to_pylist()]
    for table, meta in zip(tables, metas):
        order = [meta["tags"].index(tag) for tag in tags]  # this member's columns in the first member's order
        for acc, probs in zip(mean, read_marginals(table.column("marginals"), len(meta["tags"]))):
            acc += probs[:, order]
    column = tables[0].schema.get_field_index("marginals")
    merged = tables[0].set_column(column, tables[0].schema.field(column), marginals_array([m / len(tables) for m in mean], len(tags)))
    # The reader uses tags and scheme; the rest describes the ensemble, not its first member.
    meta = {"tags": tags, "scheme": metas[0]["scheme"], "labels": metas[0].get("labels"), "target": metas[0].get("target"),
            "dtype": "float16", "decoder": "ensemble mean", "members": [str(m) for m in members],
            "member_temperatures": [m.get("temperature") for m in metas]}
    return merged.replace_schema_metadata({**(tables[0].schema.metadata or {}), METADATA_KEY: json.dumps(meta).encode("utf8")})
