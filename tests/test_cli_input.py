"""The CLI reads what a user wrote as they meant it: the backend a model or key belongs to (and
the plan says which), errors at the file and line that wrote a value, a typo answered with the
word meant, one taxonomy check for `generate` and `taxonomy validate`, `glan check` on batch
APIs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from glan.testing.cli import assert_one_clear_line, glan


def dry_run(tmp_path: Path, *args: str, env: dict | None = None):
    return glan("generate", "--out", str(tmp_path / "o"), "-n", "10", "--dry-run", *args, env=env)


# ---- which backend: said by the plan, asked for when a model belongs to another -------------
def test_the_plan_names_the_backend_and_where_it_is(tmp_path):
    local = dry_run(tmp_path)
    assert local.returncode == 0, local.stderr
    assert "backend: local (in-process llama.cpp) for all stages" in local.stdout
    remote = dry_run(tmp_path, "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    assert remote.returncode == 0, remote.stderr
    assert "backend: openai at http://127.0.0.1:9/v1 for all stages" in remote.stdout
    mixed = dry_run(tmp_path, "--backend", "openai", "--set", "stages.answers.backend=local")
    assert mixed.returncode == 0, mixed.stderr
    lines = [line for line in mixed.stdout.splitlines() if line.startswith("backend:")]
    assert lines == [
        "backend: openai at https://api.openai.com/v1 for subjects, syllabus, questions",
        "backend: local (in-process llama.cpp) for answers",
    ]


def test_a_stage_given_an_address_of_its_own_goes_there(tmp_path):
    url = "http://127.0.0.1:9/v1"
    proc = dry_run(
        tmp_path, "--set", f"stages.answers.base_url={url}", "--set", "stages.answers.model=m"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"backend: openai at {url} for answers" in proc.stdout


def test_a_model_the_local_backend_cannot_load_asks_for_the_backend_it_belongs_to(tmp_path):
    line = assert_one_clear_line(
        dry_run(tmp_path, "--model", "gpt-4o-mini"), "--model", "'gpt-4o-mini'", "local backend"
    )
    assert "add --backend openai" in line and "--base-url" in line
    stage = dry_run(tmp_path, "--set", "stages.answers.model=gpt-4o")
    assert_one_clear_line(
        stage, "--set stages.answers.model", "--set stages.answers.backend=openai"
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("seed: 1\nllm:\n  model: gpt-4o\n")
    assert_one_clear_line(dry_run(tmp_path, "--config", str(cfg)), f"{cfg}:3", "llm.backend")


def test_a_key_variable_means_an_http_endpoint_and_the_plan_says_whose_key(tmp_path):
    proc = dry_run(tmp_path, "--model", "gpt-4o-mini", "--api-key-env", "MY_KEY")
    assert proc.returncode == 0, proc.stderr
    assert "backend: openai at https://api.openai.com/v1 (key from $MY_KEY)" in proc.stdout


def test_a_setting_the_chosen_backend_lacks_names_those_that_have_it(tmp_path):
    proc = dry_run(tmp_path, "--backend", "local", "--api-key-env", "MY_KEY")
    assert_one_clear_line(
        proc, "--api-key-env", "does not apply to the local backend", "add --backend openai"
    )


# ---- a wrong value in a file is the file's, at its line ---------------------------------------
@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("seed: 1\nconcurrency: lots\n", "cfg.yaml:2: concurrency"),
        ("llm:\n  backend: local\nseed: one\n", "cfg.yaml:3: seed"),
        ("seed: 1\nexecutor:\n  kind: ray\n  workers: many\n", "cfg.yaml:4: executor.workers"),
    ],
    ids=["concurrency", "seed", "executor.workers"],
)
def test_a_wrong_type_in_the_config_file_names_its_line_not_a_flag(tmp_path, content, where):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(content)
    line = assert_one_clear_line(dry_run(tmp_path, "--config", str(cfg)), where, "integer")
    assert "--" not in line  # no option was given: none is blamed


def test_an_option_given_on_top_of_the_file_is_blamed_for_its_own_value(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("concurrency: 4\n")
    proc = dry_run(tmp_path, "--config", str(cfg), "--set", "concurrency=lots")
    assert_one_clear_line(proc, "--set concurrency: concurrency")


def test_a_mistyped_price_key_is_refused_not_priced_at_nothing(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("prices:\n  gpt-4o:\n    inptu: 2.5\n")
    args = ("--backend", "openai", "--model", "gpt-4o")
    assert_one_clear_line(dry_run(tmp_path, *args, "--config", str(cfg)), "cfg.yaml:3", "inptu")
    proc = dry_run(tmp_path, *args, "--set", "prices.gpt-4o.inptu=2")
    assert_one_clear_line(proc, "--set prices.gpt-4o.inptu", "inptu")


def test_a_price_set_for_a_model_whose_name_has_dots(tmp_path):
    proc = dry_run(
        tmp_path,
        *("--backend", "openai", "--model", "gpt-4.1"),
        *("--set", "prices.gpt-4.1.input=2", "--set", "prices.gpt-4.1.output=8"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "no price" not in proc.stdout and "$0.00 " not in proc.stdout


# ---- a mistyped word gets the word meant, and the list ------------------------------------------
def test_a_mistyped_backend_is_answered_with_the_one_meant_and_the_kinds(tmp_path):
    kinds = "local, openai, vllm, openai-batch, anthropic-batch"
    line = assert_one_clear_line(
        dry_run(tmp_path, "--backend", "opnai"), "--backend", "did you mean openai?", kinds
    )
    assert "Input tag" not in line
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("stages:\n  answers:\n    backend: antropic-batch\n")
    assert_one_clear_line(
        dry_run(tmp_path, "--config", str(cfg)),
        f"{cfg}:3",
        "did you mean anthropic-batch?",
        kinds,
    )
    assert_one_clear_line(glan("check", "--backend", "vlm"), "--backend", "did you mean vllm?")


# ---- one taxonomy check, for the run and for validate -------------------------------------------
def taxonomy_yaml(removed: bool = False) -> str:
    """Two fields named alike, a discipline twice, an empty sub-field; `removed`: the second of
    each, and the empty sub-field, removed (as a review's export keeps them, with a status)."""
    gone = {"status": "remove"} if removed else {}
    fields = [
        {
            "name": "Sciences",
            "subfields": [
                {
                    "name": "Physics",
                    "disciplines": [{"name": "Optics"}, {"name": "Optics", **gone}],
                },
                {"name": "Chemistry", "disciplines": [], **gone},
            ],
        },
        {
            "name": "Sciences",
            **gone,
            "subfields": [{"name": "Biology", "disciplines": [{"name": "Botany"}]}],
        },
    ]
    return yaml.safe_dump({"fields": fields}, sort_keys=False)


def test_generate_refuses_the_taxonomy_validate_refuses(tmp_path):
    tax = tmp_path / "tax.yaml"
    tax.write_text(taxonomy_yaml())
    validated = glan("taxonomy", "validate", str(tax))
    assert validated.returncode == 2
    problems = [line.removeprefix("problem: ") for line in validated.stderr.splitlines()]
    assert len(problems) == 3
    proc = dry_run(tmp_path, "--taxonomy", str(tax))
    assert_one_clear_line(
        proc, f"{tax}: {problems[0]}", f"and 2 more: glan taxonomy validate {tax} lists them"
    )
    assert not (tmp_path / "o").exists()


def test_what_a_review_removed_is_not_checked_by_either(tmp_path):
    """A review's export keeps removed nodes with their votes; they are never walked."""
    tax = tmp_path / "tax.yaml"
    tax.write_text(taxonomy_yaml(removed=True))
    validated = glan("taxonomy", "validate", str(tax))
    assert validated.returncode == 0, validated.stderr
    proc = dry_run(tmp_path, "--taxonomy", str(tax))
    assert proc.returncode == 0, proc.stderr


# ---- glan check on a batch API: the key and the address, at once --------------------------------
@pytest.mark.parametrize("kind", ["openai-batch", "anthropic-batch"])
def test_check_tries_a_batch_api_s_key_and_address(batch_server, kind):
    batch_server.api_key = "right"
    args = ["check", "--backend", kind, "--base-url", batch_server.base_url]
    ok = glan(*args, "--api-key-env", "BATCH_KEY", env={"BATCH_KEY": "right"})
    assert ok.returncode == 0, ok.stderr
    where = f"{kind} at {batch_server.base_url} (key from $BATCH_KEY)"
    assert ok.stdout.startswith(f"ok: {where} lists batches;"), ok.stdout
    assert batch_server.lines_submitted == 0 and not batch_server.batches  # nothing was paid for
    wrong = glan(*args, "--api-key-env", "BATCH_KEY", env={"BATCH_KEY": "wrong"})
    assert_one_clear_line(wrong, "refused the API key (HTTP 401)")
    missing = glan(*args, "--api-key-env", "GLAN_NO_SUCH_VAR")
    assert_one_clear_line(missing, "GLAN_NO_SUCH_VAR")


def test_check_says_at_once_that_a_batch_api_cannot_be_reached():
    proc = glan("check", "--backend", "openai-batch", "--base-url", "http://127.0.0.1:9/v1")
    assert_one_clear_line(proc, "cannot reach the batch API at http://127.0.0.1:9/v1")
