"""The budget planner: the target count N is split down the tree before any call is made.

- Disciplines: a run of N touches at most N / min_pairs_per_discipline of them, chosen by
  weighted sampling keyed on (seed, discipline) (so adding a node disturbs few others), and
  shares N among them by weight with largest remainders.
- Subjects: a discipline with quota q needs S = ceil(q / pairs_per_subject) subjects, capped at
  max_subjects_per_discipline (the paper's 100-200); listing calls k = ceil(S /
  subjects_per_call), capped at max_subject_samples (the paper's 10).
- Questions: a subject's share of q, spread evenly.

So N=50 makes on the order of 2-3N calls, while N in the millions reaches the paper's settings
(10 listing calls per discipline, ~150 subjects, hundreds of questions per syllabus).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection

from pydantic import BaseModel

from glan.config import GenerateConfig
from glan.taxonomy import DisciplineRef


class DisciplinePlan(BaseModel):
    index: int  # position in the taxonomy: fixes output order
    discipline: DisciplineRef
    quota: int
    subjects: int
    subject_samples: int


class Plan(BaseModel):
    target: int
    disciplines: list[DisciplinePlan]

    def shard(self, index: int, count: int) -> Plan:
        """The disciplines of shard `index` of `count`, chosen by a stable hash of the
        discipline's path (never Python's per-process hash()): shards run apart, each with its
        own state, and merge in tree order into the whole run's records."""
        if not 0 <= index < count:
            raise ValueError(f"shard {index} of {count} does not exist")
        mine = [d for d in self.disciplines if shard_of(d.discipline.path, count) == index]
        return Plan(target=sum(d.quota for d in mine), disciplines=mine)

    def subset(self, paths: Collection[str]) -> Plan:
        """Only these disciplines (a shard of a cluster run: glan.executors.layout)."""
        mine = [d for d in self.disciplines if d.discipline.path in paths]
        return Plan(target=sum(d.quota for d in mine), disciplines=mine)

    def calls(self, two_turn: bool = False) -> dict[str, int]:
        samples = sum(d.subject_samples for d in self.disciplines)
        return {
            "subjects": samples * (2 if two_turn else 1),
            "syllabus": sum(d.subjects for d in self.disciplines),
            "questions": self.target,
            "answers": self.target,
        }


def shard_of(path: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") % count


def split_evenly(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder apportionment of `total` by `weights` (ties go to the earlier one)."""
    if not weights:
        return []
    scale = total / sum(weights)
    raw = [w * scale for w in weights]
    shares = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _sample_key(seed: int, d: DisciplineRef) -> float:
    """Efraimidis-Spirakis key u**(1/w): the top keys are a weighted sample without replacement."""
    digest = hashlib.sha256(f"{seed}|{d.path}".encode()).digest()
    u = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 2)
    return u ** (1 / d.weight)


def make_plan(target: int, disciplines: list[DisciplineRef], cfg: GenerateConfig) -> Plan:
    p = cfg.plan
    active = min(len(disciplines), max(1, target // p.min_pairs_per_discipline))
    chosen = sorted(
        sorted(range(len(disciplines)), key=lambda i: -_sample_key(cfg.seed, disciplines[i]))[
            :active
        ]
    )
    quotas = split_evenly(target, [disciplines[i].weight for i in chosen])
    plans = []
    for i, quota in zip(chosen, quotas, strict=True):
        if quota == 0:
            continue
        subjects = min(
            p.max_subjects_per_discipline, max(1, math.ceil(quota / p.pairs_per_subject))
        )
        samples = min(p.max_subject_samples, max(1, math.ceil(subjects / p.subjects_per_call)))
        plans.append(
            DisciplinePlan(
                index=i,
                discipline=disciplines[i],
                quota=quota,
                subjects=subjects,
                subject_samples=samples,
            )
        )
    return Plan(target=target, disciplines=plans)
