"""Small-model hygiene: schema-valid junk is re-asked, cosmetic faults are repaired, and the
reasons are counted in the manifest."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import orjson
import pytest

from glan.api import generate
from glan.config import GenerateConfig
from glan.llm import ChatResponse
from glan.records import QuestionPlan, Session, Subject, Syllabus
from glan.stages import answers, hygiene, questions, subjects, syllabus
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
        ("What does Session 5 give as the refractive index of glass?", "not_standalone"),
        ("Based on the information in sessions 2 and 4 how can a lens focus?", "not_standalone"),
        ("According to session 3, explain it.", "not_standalone"),  # too little left to keep
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


@pytest.mark.parametrize(
    "reference",
    [
        "sessions 2 and 4",
        "Lectures 1-3",
        "lectures 1 and 2",
        "classes 2, 3 and 5",
        "unit 4",
        "units 4 to 6",
        "Module 3",
        "modules 2 & 3",
        "chapter 5",
        "chapters 3, 4 or 7",
        "lessons 1–2",
        "the previous lessons",
        "these lectures",
        "earlier chapters",
        "the 4th session",
        "the third lecture",
    ],
)
def test_references_to_course_parts_are_caught_in_the_plural_too(reference):
    assert hygiene.not_standalone(f"What does {reference} say about refraction?")


@pytest.mark.parametrize(
    "question",
    [
        "Which assets are protected when a company files for Chapter 11 bankruptcy?",
        "Why does a Class 2 lever always give a mechanical advantage?",
        "Implement this class so that its instances are immutable.",
        "How many units of insulin does a 70 kg patient need at 0.5 units per kg?",
        "Convert 3 units of alcohol to grams.",
        "What happens in the first chapter of Pride and Prejudice?",
    ],
)
def test_numbers_and_parts_that_are_the_subject_matter_are_not_references(question):
    assert hygiene.not_standalone(question) is None


@pytest.mark.parametrize(
    ("question", "repaired"),
    [
        (
            "Based on the information provided in sessions 2 and 4, how can a lens focus light?",
            "How can a lens focus light?",
        ),
        (
            "According to session 3, what is the boiling point of water at 2 atm?",
            "What is the boiling point of water at 2 atm?",
        ),
        (
            "Using the concepts from lectures 1 and 2, explain why the sky is blue.",
            "Explain why the sky is blue.",
        ),
        ("As discussed in chapters 3-5, pH falls how far?", "pH falls how far?"),
        # a leading clause that is not a reference stays
        (
            "In a closed system, what is conserved in a collision?",
            "In a closed system, what is conserved in a collision?",
        ),
    ],
)
def test_a_leading_reference_clause_is_cut_rather_than_re_asked(question, repaired):
    assert questions.parse(reply({"question": question})) == repaired


def test_the_question_prompt_gives_no_session_numbers_to_cite():
    syl = Syllabus(
        field="Sciences",
        subfield="Physics",
        discipline="Optics",
        subject="Wave Optics",
        level="intermediate",
        introduction="Light as a wave.",
        sessions=[
            Session(title="Interference", concepts=["coherence", "path difference"]),
            Session(title="Diffraction", concepts=["single slit", "gratings"]),
            Session(title="Polarisation", concepts=["Malus's law"]),
        ],
    )
    plan = QuestionPlan(
        index=0, strategy="multi", session_ids=(0, 1), concepts=("coherence", "gratings")
    )
    text = questions.prompt(syl, plan, CFG)
    # the paper's content: the whole syllabus, what was learned up to, the sampled concepts
    for s in syl.sessions:
        assert s.title in text and all(c in text for c in s.concepts)
    assert 'learned up to the topic "Diffraction"' in text
    assert '"Interference" and "Diffraction"' in text
    assert "- coherence\n- gratings" in text
    # nothing numbered to cite, and the rule said outright
    assert not re.search(r"\b(?:session|lecture|topic)s?\s+\d", text, re.IGNORECASE)
    assert "must stand alone" in text


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
            return {"question": "What does Session 2 of the course say a wave is?"}
        return default_replier(body)

    return replier


def optics_run(run_dir: Path, n: int, replier) -> tuple[object, list[dict]]:
    """A run of `n` pairs on one discipline against a fake server answering with `replier`."""
    server = FakeServer(replier=replier).start()
    try:
        cfg = GenerateConfig.model_validate(
            {"llm": {"backend": "openai", "base_url": server.base_url, "model": "m"}}
        )
        tax = Taxonomy()
        tax.add("Sciences/Physics/Optics")
        result = generate(run_dir, n, cfg, tax)
    finally:
        server.stop()
    lines = (run_dir / "instructions.jsonl").read_bytes().splitlines()
    return result, [orjson.loads(x) for x in lines]


def test_rejected_replies_are_re_asked_and_counted(tmp_path: Path):
    result, records = optics_run(tmp_path / "run", 10, sloppy_replier())
    assert result.instructions == 10
    assert not any("Session 2" in r["messages"][0]["content"] for r in records)
    assert result.manifest["rejected_replies"]["questions.not_standalone"] >= 10


def test_a_leading_reference_is_repaired_in_a_run_without_a_re_ask(tmp_path: Path):
    def replier(body: dict):
        schema_name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        if schema_name == "question":
            tag = hashlib.sha256(body["messages"][0]["content"].encode()).hexdigest()[:8]
            return {"question": f"Based on sessions 2 and 4, how is light {tag} measured?"}
        return default_replier(body)

    result, records = optics_run(tmp_path / "run", 6, replier)
    assert result.instructions == 6, result.manifest
    for r in records:
        assert r["messages"][0]["content"].startswith("How is ")
    assert "questions.not_standalone" not in result.manifest["rejected_replies"]
