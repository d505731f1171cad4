"""datasketch vs rensa for MinHash-LSH near-duplicate search, on the same synthetic questions.

Both get the same word-trigram shingles, 128 permutations, and an LSH tuned to a Jaccard
threshold of 0.7; each record is queried, then inserted (the streaming dedup glan does).
Reports records/s and the recall of planted near-duplicates (one word changed).

Usage: python bench/minhash_libs.py [--records 100000]
"""

from __future__ import annotations

import argparse
import random
import time


def synthetic(n: int, seed: int = 0) -> tuple[list[list[str]], set[int]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    docs: list[list[str]] = []
    planted: set[int] = set()
    for i in range(n):
        if docs and rng.random() < 0.05:
            copy = list(rng.choice(docs[-1000:]))
            copy[rng.randrange(len(copy))] = rng.choice(vocab)
            docs.append(copy)
            planted.add(i)
        else:
            docs.append(rng.choices(vocab, k=rng.randint(15, 35)))
    return docs, planted


def shingles(words: list[str]) -> list[str]:
    return [" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))]


def run_datasketch(docs: list[list[str]]) -> set[int]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    dupes = set()
    for i, words in enumerate(docs):
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode() for s in shingles(words)])
        if lsh.query(m):
            dupes.add(i)
        else:
            lsh.insert(str(i), m)
    return dupes


def run_rensa(docs: list[list[str]]) -> set[int]:
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=0.7, num_perm=128, num_bands=16)
    dupes = set()
    for i, words in enumerate(docs):
        m = RMinHash(num_perm=128, seed=1)
        m.update(shingles(words))
        if lsh.query(m):
            dupes.add(i)
        else:
            lsh.insert(i, m)
    return dupes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    docs, planted = synthetic(args.records)
    for name, fn in (("rensa", run_rensa), ("datasketch", run_datasketch)):
        t = time.perf_counter()
        found = fn(docs)
        dt = time.perf_counter() - t
        recall = len(found & planted) / len(planted)
        extra = len(found - planted)
        print(
            f"{name:<11} {args.records / dt:9,.0f} records/s  recall {recall:.3f}  "
            f"unplanted flagged {extra}"
        )


if __name__ == "__main__":
    main()
