"""The CLI as a user meets it: fast help, the schema, and one clear line for bad input."""

from __future__ import annotations

import json

from conftest import REPO, run_cli


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for command in ("build", "validate", "schema", "chat"):
        assert command in r.stdout


def test_schema_prints_the_shipped_schema():
    r = run_cli("schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema == json.loads((REPO / "schemas" / "recipe.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_bad_recipe_writes_nothing_under_artifacts(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "name: bad\nmodel: {source: ./nowhere}\ntarget: {device: cpu, execution_provider: cpu}\n"
        "passes:\n  - {type: model-builder, precision: int5}\n")
    r = run_cli("build", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "passes[0].precision: 'int5' is not one of int4, int8, fp16, bf16, fp32" in r.stderr
    assert "model.source" in r.stderr, "every problem is reported in one run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_missing_recipe_file_is_one_line():
    r = run_cli("build", "recipes/no-such-recipe.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_chat_on_a_folder_that_is_not_a_model(tmp_path):
    r = run_cli("chat", str(tmp_path), "hi")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not a Foundry Local model folder" in r.stderr and "pipeline build" in r.stderr
