"""heapledger benchmark workload: build and drop a large dict of strings.

    PYTHONHASHSEED=0 python3 pydict.py N ROUNDS

Each round builds a dict of N string keys -> string values and drops it. Keys are short (pymalloc's small-object
arenas); values have lengths 0..1000 so roughly half of them exceed pymalloc's 512-byte limit and go to malloc,
as do the dict's growing hash tables. Deterministic: no randomness, fixed hash seed from the environment.
"""
import sys


def build(n):
    d = {}
    for i in range(n):
        key = "key-%d-%x" % (i, (i * 2654435761) & 0xFFFFFFFF)
        d[key] = "v" * ((i * 37) % 1001)
    return d


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    total = 0
    for _ in range(rounds):
        d = build(n)
        total += len(d)
        del d
    print("pydict: entries=%d" % total)


if __name__ == "__main__":
    main()
