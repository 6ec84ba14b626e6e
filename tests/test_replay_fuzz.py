"""glora-replay on a few hundred mutated logs: each is replayed (0, or 1 for a diverging log) or refused in one line
with status 2; no traceback, no panic."""

from __future__ import annotations

import json
import random

import pytest

from glora.cli.replay import main as replay_main
from glora.engine import search
from spaces import AdditiveFitness, PerExampleAdditiveFitness, synthetic_space

HUGE = ["1e400", "-1", "18446744073709551616", "9223372036854775808", "1000000000000", "0", "null", '"x"', "[]", "{}"]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    kind = rng.randrange(6)
    if kind == 0:  # byte flips
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == 1:  # truncation
        return data[: rng.randrange(len(data))]
    if kind == 2:  # line swap
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines)
    i = rng.choice([0, 0, rng.randrange(len(lines) - 1)])
    try:
        value = json.loads(lines[i])
    except ValueError:
        return data
    paths = list(_paths(value))
    path = rng.choice(paths)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if kind == 3:  # field deletion
        del parent[path[-1]]
    else:  # a huge, negative or mistyped number
        parent[path[-1]] = json.loads(rng.choice(HUGE)) if rng.random() < 0.5 else rng.choice(["A", "lora_0", 2**70])
    lines[i] = json.dumps(value, separators=(",", ":")).encode()
    return b"\n".join(lines)


def _paths(value, prefix=()):
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


@pytest.mark.parametrize("raced", [False, True])
def test_replay_on_mutated_logs_never_tracebacks(tmp_path, capsys, raced: bool) -> None:
    space = synthetic_space([(16, 8), (8, 16)])
    source = tmp_path / "run.jsonl"
    fitness = PerExampleAdditiveFitness(space, 0, examples=8, noise=0.5) if raced else AdditiveFitness(space, 0)
    search(
        space,
        fitness,
        150,
        seed=2,
        generations=3,
        population=12,
        parents=4,
        racing=raced or None,
        log=source,
        progress=False,
    )
    data = source.read_bytes()
    rng = random.Random(15)
    statuses = {0: 0, 1: 0, 2: 0}
    for trial in range(500):
        log = tmp_path / f"m{trial}.jsonl"
        log.write_bytes(_mutate(data, rng))
        code = replay_main([str(log), "--json"])
        _, err = capsys.readouterr()
        assert code in statuses, (trial, code)
        statuses[code] += 1
        if code == 2:
            assert err.count("\n") == 1 and err.startswith("glora-replay: "), (trial, err)
        log.unlink()
    assert statuses[2] > 50 and statuses[0] + statuses[1] > 20, statuses
