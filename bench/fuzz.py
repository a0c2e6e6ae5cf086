"""Fuzz parse, decision and composition for longer than `make test` does.

    .venv/bin/python bench/fuzz.py --minutes N [--seed S] [--no-save]

The same properties as tests/test_fuzz.py (`check`: parse never raises, no
control character in a decoded value, the decision never raises, every
outgoing mail re-parses strictly to the headers we wrote, the hang guard
holds), on random mutations of every corpus mail (../shared/corpus, also the
large ones) and the hostile fragments of issue 9. An input that breaks a
property is written to tests/fixtures/fuzz/<sha>.eml, which the test suite
replays from then on; minimise it by hand before committing if it is large.

Prints the inputs run, the failures by kind, and the slowest inputs.
"""

import argparse
import hashlib
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import test_fuzz  # noqa: E402  (the properties and mutations live with the tests)


def all_seeds():
    files = []
    for folder in ("mime", "bounces", "replies"):
        files += sorted((test_fuzz.CORPUS / folder).rglob("*.eml"))
    return [p.read_bytes() for p in files] + test_fuzz.SEEDS


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to run (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    parser.add_argument("--no-save", action="store_true", help="do not write failing inputs as fixtures")
    parser.add_argument("--keep-slowest", metavar="FILE", help="write the slowest input there (to profile it)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2 ** 32)
    rnd = random.Random(seed)
    from connector.log import setup_logging
    setup_logging("error", stream=open("/dev/null", "w"))
    seeds = all_seeds()
    failures, slowest, runs = Counter(), [], 0
    deadline = time.monotonic() + args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        world = test_fuzz.World(Path(tmp))
        while time.monotonic() < deadline:
            origin = rnd.randrange(len(seeds))
            raw = seeds[origin] if runs < len(seeds) and rnd.random() < 0.2 else test_fuzz.mutate(seeds[origin], rnd)
            runs += 1
            try:
                took = test_fuzz.check(world, raw)
            except Exception as exc:
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                kind = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
                failures[kind] += 1
                if failures[kind] == 1:
                    print(f"FAIL {kind}: {str(exc)[:200]}", flush=True)
                    if not args.no_save:
                        test_fuzz.FIXTURES.mkdir(parents=True, exist_ok=True)
                        path = test_fuzz.FIXTURES / f"{hashlib.sha256(raw).hexdigest()[:16]}.eml"
                        path.write_bytes(raw)
                        print(f"     saved {path.relative_to(REPO)} ({len(raw)} bytes)", flush=True)
                continue
            if args.keep_slowest and (not slowest or took > slowest[0][0]):
                Path(args.keep_slowest).write_bytes(raw)
            slowest = sorted(slowest + [(took, len(raw), origin)], reverse=True)[:5]
    print(f"seed {seed}: {runs} inputs in {args.minutes:g} min, {sum(failures.values())} failures "
          f"({len(failures)} kinds)")
    for kind, count in failures.most_common():
        print(f"  {count:6}  {kind}")
    for took, size, origin in slowest:
        print(f"  slowest: {took * 1000:8.1f} ms  {size:>8} bytes  from seed #{origin}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
