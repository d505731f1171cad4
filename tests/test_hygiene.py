"""Small-model hygiene: schema-valid junk is re-asked, cosmetic faults are repaired, and the
reasons are counted in the manifest."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from glan.api import generate
from glan.config import GenerateConfig
from glan.llm import ChatResponse
from glan.records import Session, Subject, Syllabus
from glan.stages import answers, questions, subjects, syllabus
from glan.stages.errors import Rejected
from glan.taxonomy import DisciplineRef, Taxonomy
from glan.testing.fake_server import FakeServer, default_replier

CFG = GenerateConfig()


def reply(parsed=None, text: str = "") -> ChatResponse:
    return ChatResponse(text=text or orjson.dumps(parsed).decode(), parsed=parsed)


def subject() -> Subject:
    return Subject(
        field="Sciences",
        subfield="Physics",
        discipline="Optics",
        name="Wave Optics",
        level="intermediate",
        sample_index=0,
    )


def session(title: str, *concepts: str) -> dict:
    return {"title": title, "description": "d", "concepts": list(concepts)}


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ('"] ,', "debris"),
        ("According to Session 5, what is the refractive index of glass?", "not_standalone"),
        ("Using the key concepts listed above, explain diffraction.", "not_standalone"),
        ("As covered in the syllabus, derive Snell's law.", "not_standalone"),
        ("Using what the previous session taught, explain refraction.", "not_standalone"),
        (
            "Explain interference. The question must be self-contained: give every fact or number "
            "it needs, and do not mention the syllabus.",
            "echo",
        ),
    ],
)
def test_unusable_questions_are_rejected_with_a_reason(question, kind):
    with pytest.raises(Rejected) as caught:
        questions.parse(reply({"question": question}))
    assert caught.value.kind == kind and str(caught.value)


def test_a_standalone_question_passes():
    q = "A light ray enters glass (n = 1.5) at 30 degrees. What is the angle of refraction?"
    assert questions.parse(reply({"question": q})) == q


def test_answers_stuck_in_a_loop_or_empty_of_words_are_rejected():
    loop = " ".join(["the light bends because the light bends"] * 30)
    with pytest.raises(Rejected, match="repeats itself"):
        answers.parse(reply(text=loop))
    with pytest.raises(Rejected):
        answers.parse(reply(text="} ,"))
    assert answers.parse(reply(text="Snell's law gives 19.5 degrees.")).startswith("Snell")


def test_syllabus_repeated_sessions_are_dropped_and_long_text_trimmed():
    cfg = GenerateConfig.model_validate({"syllabus": {"min_sessions": 2, "max_sessions": 5}})
    parsed = {
        "introduction": "word " * 900,
        "objectives": ["understand waves", "]"],
        "outcomes": ["solve problems"],
        "sessions": [
            session("Interference", "coherence", "path difference"),
            session("interference ", "coherence"),  # the same title again
            session("Diffraction", "single slit", "single slit", "gratings", "Gratings ,"),
            session('"] ,', "x y"),
        ],
    }
    syl = syllabus.parse(subject(), reply(parsed), cfg)
    assert [s.title for s in syl.sessions] == ["Interference", "Diffraction"]
    assert syl.sessions[1].concepts == ["single slit", "gratings"]
    assert len(syl.introduction) <= syllabus.MAX_INTRODUCTION + 3
    assert syl.objectives == ["understand waves"]


def test_syllabus_with_too_few_distinct_sessions_is_re_asked():
    cfg = GenerateConfig.model_validate({"syllabus": {"min_sessions": 3, "max_sessions": 5}})
    parsed = {
        "introduction": "i",
        "objectives": ["o"],
        "outcomes": ["o"],
        "sessions": [session("Waves", "a b"), session("Waves", "c d"), session("Waves", "e f")],
    }
    with pytest.raises(Rejected, match="distinct"):
        syllabus.parse(subject(), reply(parsed), cfg)


def test_a_level_word_is_not_a_subject_name():
    d = DisciplineRef(field="Sciences", subfield="Physics", name="Optics")
    item = {"level": "advanced", "introduction": "", "subtopics": ["x y"]}
    parsed = {"subjects": [{**item, "name": "Advanced"}, {**item, "name": "Fourier Optics"}]}
    assert [s.name for s in subjects.parse(d, 0, reply(parsed))] == ["Fourier Optics"]
    with pytest.raises(Rejected):
        subjects.parse(d, 0, reply({"subjects": [{**item, "name": "Advanced"}]}))


def test_no_combination_holds_the_same_concept_twice():
    shared = Syllabus(
        field="f",
        subfield="s",
        discipline="d",
        subject="x",
        level="advanced",
        sessions=[
            Session(title="A", concepts=["energy", "momentum", "work"]),
            Session(title="B", concepts=["energy", "power"]),
            Session(title="C", concepts=["energy", "momentum"]),
        ],
    )
    plans = questions.plan_questions(shared, 200, 0.5, random.Random(0))
    assert plans and any(p.strategy == "multi" for p in plans)
    for p in plans:
        assert len(set(p.concepts)) == len(p.concepts)
    assert len({(p.session_ids, p.concepts) for p in plans}) == len(plans)


def sloppy_replier():
    """First replies of each kind are junk a small model makes; re-asks get real ones."""
    seen: set[str] = set()

    def replier(body: dict):
        first_time = body["messages"][0]["content"] not in seen and len(body["messages"]) == 1
        seen.add(body["messages"][0]["content"])
        schema_name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        if first_time and schema_name == "question":
            return {"question": "Based on Session 2 of the course, what is a wave?"}
        return default_replier(body)

    return replier


def test_rejected_replies_are_re_asked_and_counted(tmp_path: Path):
    server = FakeServer(replier=sloppy_replier()).start()
    try:
        cfg = GenerateConfig.model_validate(
            {"llm": {"backend": "openai", "base_url": server.base_url, "model": "m"}}
        )
        tax = Taxonomy()
        tax.add("Sciences/Physics/Optics")
        result = generate(tmp_path / "run", 10, cfg, tax)
    finally:
        server.stop()
    assert result.instructions == 10
    records = [
        orjson.loads(x) for x in (tmp_path / "run" / "instructions.jsonl").read_bytes().splitlines()
    ]
    assert not any("Session 2" in r["messages"][0]["content"] for r in records)
    assert result.manifest["rejected_replies"]["questions.not_standalone"] >= 10
