"""Command line: thin wrappers that parse flags and call the Python API with the same names.

Heavy modules (torch, transformers, onnxruntime) are imported inside the commands that need them,
so `pipeline --help` and `pipeline validate` start fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.errors import PipelineError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="model-pipeline", prog_name="pipeline")
def cli() -> None:
    """Build Foundry Local-ready ONNX models from declarative recipes."""


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set model.source=./ckpt (repeatable).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: artifacts/<name>). Replaced whole on success.")
def build(recipe: Path, overrides: tuple[str, ...], output: Path | None) -> None:
    """Build RECIPE into a Foundry Local-ready folder."""
    from pipeline.recipe import load_recipe
    from pipeline.runner import build as run_build

    loaded = load_recipe(recipe, list(overrides))
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    result = run_build(loaded, output=output)
    click.echo(f"built {result.folder}")


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value before validating (repeatable).")
def validate(recipes: tuple[Path, ...], overrides: tuple[str, ...]) -> None:
    """Check each RECIPE against the schema and the builder's rules; report every problem."""
    from pipeline.recipe import load_recipe

    failed = 0
    for path in recipes:
        try:
            loaded = load_recipe(path, list(overrides))
        except PipelineError as e:
            failed += 1
            click.echo(f"error: {e}", err=True)
            continue
        for warning in loaded.warnings:
            click.echo(f"warning: {path}: {warning}", err=True)
        click.echo(f"ok: {path}")
    if failed:
        raise SystemExit(2)


@cli.command()
def schema() -> None:
    """Print the recipe JSON Schema (2020-12), e.g. for editor integration."""
    from pipeline.recipe import schema_text

    click.echo(schema_text(), nl=False)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.argument("prompt")
@click.option("--system", default=None, help="Optional system message.")
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Most new tokens to generate.")
@click.option("--greedy", is_flag=True, help="Always pick the most likely token (else genai_config's search settings).")
def chat(folder: Path, prompt: str, system: str | None, max_tokens: int, greedy: bool) -> None:
    """Load FOLDER with onnxruntime-genai, apply its PromptTemplate and stream the answer."""
    from pipeline.chat import chat as run_chat

    for piece in run_chat(folder, prompt, system=system, max_tokens=max_tokens, greedy=greedy):
        click.echo(piece, nl=False)
    click.echo()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one clear message and exit code 2, never a traceback."""
    try:
        rc = cli.main(args=argv, prog_name="pipeline", standalone_mode=False)
    except PipelineError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
