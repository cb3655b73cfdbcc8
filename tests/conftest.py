"""Shared fixtures: the shipped tiny model and real builds of it, made once per test session."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # One private pass cache per test session (CLI subprocesses inherit it), never the user's.
    import tempfile

    config._pipeline_cache = tempfile.mkdtemp(prefix="pipeline-test-cache-")
    os.environ["PIPELINE_CACHE_DIR"] = config._pipeline_cache


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_pipeline_cache", ""), ignore_errors=True)
TINY_MODEL = REPO / "models" / "tiny-qwen2-chat"
PRECISIONS = ("int4", "int8", "fp32")


def tiny_recipe(precision: str, source: Path = TINY_MODEL, **extra) -> dict:
    recipe = {
        "name": f"tiny-{precision}",
        "model": {"source": str(source)},
        "target": {"device": "cpu", "execution_provider": "cpu"},
        "passes": [{"type": "model-builder", "precision": precision}],
    }
    recipe.update(extra)
    return recipe


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    """`python -m pipeline ARGS` in a subprocess, as a user would run it."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def og_greedy(folder: Path, ids: list[int], new_tokens: int) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    assert (TINY_MODEL / "config.json").is_file(), "models/tiny-qwen2-chat is missing: python -m pipeline.tiny models/tiny-qwen2-chat"
    return TINY_MODEL


@pytest.fixture(scope="session")
def built(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Real builds of the tiny model at int4, int8 and fp32 for cpu, keyed by precision."""
    from pipeline.recipe import recipe_from_dict
    from pipeline.runner import build

    root = tmp_path_factory.mktemp("built")
    folders = {}
    for precision in PRECISIONS:
        recipe = recipe_from_dict(tiny_recipe(precision))
        folders[precision] = build(recipe, output=root / precision, log=lambda m: None).folder
    return folders


@pytest.fixture
def model_copy(tmp_path, tiny_model) -> Path:
    """A private copy of the tiny model that a test may change."""
    dst = tmp_path / "tiny-model"
    shutil.copytree(tiny_model, dst)
    return dst
