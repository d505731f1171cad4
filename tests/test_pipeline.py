"""The GLAN pipeline end to end on the fake server, and the traps of the earlier re-implementation."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import orjson
import pytest

from glan.api import generate, plan
from glan.config import GenerateConfig
from glan.llm.openai_http import schema_instructions
from glan.stages import subjects
from glan.taxonomy import load_taxonomy
from glan.testing.fake_server import default_replier
from glan.testing.runs import config_for, read_jsonl
from glan.testing.runs import physics_taxonomy as small_taxonomy


def test_n200_end_to_end(fake_server, tmp_path):
    cfg = config_for(fake_server)
    result = generate(tmp_path / "run", 200, cfg)
    records = read_jsonl(tmp_path / "run" / "instructions.jsonl")
    assert result.instructions == len(records) == 200
    assert len({r["id"] for r in records}) == 200
    for r in records:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert all(m["content"] for m in r["messages"])
        meta = r["meta"]
        for key in (
            "field",
            "subfield",
            "discipline",
            "subject",
            "level",
            "question_model",
            "answer_model",
        ):
            assert meta[key], key
        assert meta["sessions"] and meta["concepts"] and meta["strategy"] in ("single", "multi")
        assert len(meta["sessions"]) == (1 if meta["strategy"] == "single" else 2)
    share = Counter(r["meta"]["strategy"] for r in records)["multi"] / 200
    assert 0.4 <= share <= 0.6
    planned = {d.discipline.name: d.quota for d in plan(200, cfg).disciplines}
    assert Counter(r["meta"]["discipline"] for r in records) == planned
    manifest = orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())
    assert manifest["status"] == "complete" and manifest["counts"]["instructions"] == 200
    assert (tmp_path / "run" / "syllabi.jsonl").stat().st_size > 0
    assert (tmp_path / "run" / "taxonomy.yaml").exists()


def test_strategy_mix_follows_the_config(fake_server, tmp_path):
    cfg = config_for(fake_server, questions={"multi_ratio": 0.2})
    generate(tmp_path / "run", 100, cfg)
    records = read_jsonl(tmp_path / "run" / "instructions.jsonl")
    share = Counter(r["meta"]["strategy"] for r in records)["multi"] / len(records)
    assert 0.12 <= share <= 0.28


def test_question_prompts_carry_syllabus_sessions_concepts_and_never_repeat(fake_server, tmp_path):
    fake_server.record_bodies = True
    generate(tmp_path / "run", 40, config_for(fake_server))
    syllabi = {s["subject"]: s for s in read_jsonl(tmp_path / "run" / "syllabi.jsonl")}
    prompts_by_subject = defaultdict(list)
    for body in fake_server.seen_bodies:
        text = body["messages"][-1]["content"]
        if "homework question" in text:
            subject = text.split('course "', 1)[1].split('"', 1)[0]
            prompts_by_subject[subject].append(text)
    assert sum(len(p) for p in prompts_by_subject.values()) == 40
    for subject, prompts in prompts_by_subject.items():
        assert len(set(prompts)) == len(prompts), f"repeated question prompt in {subject}"
        for text in prompts:
            for session in syllabi[subject]["sessions"]:
                assert session["title"] in text  # the whole syllabus is there
            assert "learned up to the topic" in text
    for r in read_jsonl(tmp_path / "run" / "instructions.jsonl"):
        assert r["meta"]["concepts"]


def test_failed_items_never_shift_answers_onto_other_questions(fake_server, tmp_path):
    """The answer names a hash of the exact question it was asked; faults must not misalign."""

    def replier(body):
        if body.get("response_format") or "JSON schema" in body["messages"][-1]["content"]:
            return default_replier(body)
        question = body["messages"][-1]["content"]
        return "answer-to:" + hashlib.sha256(question.encode()).hexdigest()[:12]

    fake_server.replier = replier
    fake_server.fault_rates = {"500": 0.1, "schema_invalid": 0.05, "reset": 0.02}
    generate(tmp_path / "run", 60, config_for(fake_server))
    records = read_jsonl(tmp_path / "run" / "instructions.jsonl")
    assert len(records) == 60
    for r in records:
        question, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        assert answer == "answer-to:" + hashlib.sha256(question.encode()).hexdigest()[:12]


def test_rerun_sends_nothing_and_yields_the_same_records(fake_server, tmp_path):
    cfg = config_for(fake_server)
    generate(tmp_path / "run", 30, cfg)
    first = (tmp_path / "run" / "instructions.jsonl").read_bytes()
    sent = fake_server.requests
    generate(tmp_path / "run", 30, cfg)
    assert fake_server.requests == sent
    assert (tmp_path / "run" / "instructions.jsonl").read_bytes() == first


def test_same_seed_in_a_fresh_directory_gives_the_same_records(fake_server, tmp_path):
    cfg = config_for(fake_server, seed=7)
    generate(tmp_path / "a", 25, cfg)
    generate(tmp_path / "b", 25, cfg)
    a = (tmp_path / "a" / "instructions.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "instructions.jsonl").read_bytes()


def test_adding_a_discipline_pays_only_for_the_new_node(fake_server, tmp_path):
    cfg = config_for(fake_server)
    generate(tmp_path / "run", 10, cfg, small_taxonomy("Optics", "Acoustics"))
    before = fake_server.requests
    generate(
        tmp_path / "run",
        15,
        cfg,
        small_taxonomy("Optics", "Acoustics", "Plasma Physics"),
        update=True,
    )
    # One subject listing, one syllabus, five questions and five answers for the new node.
    assert fake_server.requests - before == 1 + 1 + 5 + 5
    records = read_jsonl(tmp_path / "run" / "instructions.jsonl")
    assert Counter(r["meta"]["discipline"] for r in records)["Plasma Physics"] == 5


def test_two_turn_subjects_format_in_a_second_turn(fake_server, tmp_path):
    fake_server.record_bodies = True
    generate(tmp_path / "run", 5, config_for(fake_server, subjects_mode="two_turn"))
    listing = [
        b for b in fake_server.seen_bodies if "education expert" in b["messages"][0]["content"]
    ]
    assert len(listing) == 2
    assert "response_format" not in listing[0] and len(listing[1]["messages"]) == 3


def test_subject_prompt_holds_no_example_to_leak():
    d = load_taxonomy().disciplines()[0]
    text = subjects.prompt(d)
    assert "example" not in text.lower() and "{" not in text and '"name"' not in text
    assert d.name in text and d.field in text


def test_fake_server_honours_schema_in_prompt_mode():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    body = {"messages": [{"role": "user", "content": "x" + schema_instructions(schema)}]}
    assert set(default_replier(body)) == {"a"}


def test_planner_scales_calls_with_the_target():
    tax = load_taxonomy()
    small = plan(50, GenerateConfig(), tax)
    calls = small.calls()
    assert sum(calls.values()) <= 3 * 50
    big = plan(10_000_000, GenerateConfig(), tax)
    assert len(big.disciplines) == len(tax.disciplines())
    assert all(d.subject_samples == 10 and d.subjects == 150 for d in big.disciplines)


@pytest.mark.slow
def test_small_run_on_the_embedded_model(tmp_path):
    # The default thread count: two threads on a busy two-core machine crawl (BENCHMARKS.md).
    from glan.records import Instruction, Syllabus
    from glan.stages import hygiene

    result = generate(tmp_path / "run", 5, GenerateConfig())
    assert result.instructions == 5
    for r in read_jsonl(tmp_path / "run" / "instructions.jsonl"):
        record = Instruction.model_validate(r)
        question, answer = (m.content for m in record.messages)
        assert not hygiene.is_debris(question) and not hygiene.is_debris(answer)
        assert hygiene.not_standalone(question) is None
        assert len(set(record.meta.concepts)) == len(record.meta.concepts)
    for s in read_jsonl(tmp_path / "run" / "syllabi.jsonl"):
        titles = [x.title.casefold() for x in Syllabus.model_validate(s).sessions]
        assert len(set(titles)) == len(titles) and not any(map(hygiene.is_debris, titles))


def test_taxonomy_build_merges_differently_worded_drafts(fake_server, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "draft.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "glan",
            "taxonomy",
            "build",
            "--out",
            str(out),
            "--backend",
            "openai",
            "--base-url",
            fake_server.base_url,
            "--model",
            "fake-model",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert fake_server.requests == 3  # one per prompt wording
    tax = load_taxonomy(out)
    assert tax.disciplines() and not tax.problems()


def test_merge_deduplicates_by_normalised_name():
    from glan.stages.taxonomy_build import merge

    draft = {
        "fields": [
            {"name": "Science", "subfields": [{"name": "Physics", "disciplines": ["Optics"]}]}
        ]
    }
    again = {
        "fields": [
            {
                "name": "science ",
                "subfields": [{"name": "physics", "disciplines": ["OPTICS", "Acoustics"]}],
            }
        ]
    }
    tax = merge([draft, again])
    assert [d.path for d in tax.disciplines()] == [
        "Science/Physics/Optics",
        "Science/Physics/Acoustics",
    ]


def test_subject_duplicates_dropped_within_a_discipline_not_across():
    from glan.records import Subject

    def subj(discipline: str, name: str, sample: int) -> Subject:
        return Subject(
            field="F",
            subfield="S",
            discipline=discipline,
            name=name,
            level="introductory",
            sample_index=sample,
        )

    first = [subj("Optics", "Wave Optics", 0), subj("Optics", "Lasers", 0)]
    second = [subj("Optics", "wave  optics", 1), subj("Optics", "Fibre Optics", 1)]
    kept = subjects.unique_subjects([first, second])
    assert [s.name for s in kept] == ["Wave Optics", "Lasers", "Fibre Optics"]
    # Another discipline may hold the same subject: repetition across disciplines is signal.
    other = subjects.unique_subjects([[subj("Acoustics", "Wave Optics", 0)]])
    assert [s.name for s in other] == ["Wave Optics"]


def test_manifest_says_which_schema_stepped_down_when_and_why(fake_server, tmp_path):
    fake_server.reject_response_format = "json_schema"
    result = generate(tmp_path / "run", 10, config_for(fake_server), small_taxonomy("Optics"))
    assert result.instructions == 10
    # The server lacks json_schema, strict or not (a minimal probe was refused too at each):
    # the endpoint stepped down twice, for every stage, and says when and why.
    changes = result.manifest["schema_downgrades"]
    assert [(c["from"], c["to"]) for c in changes] == [
        ("strict", "json_schema"),
        ("json_schema", "json_object"),
    ]
    for change in changes:
        assert change["scope"] == "endpoint" and change["endpoint"].startswith("openai|")
        assert "minimal probe too" in change["why"] and change["at"] > 0
