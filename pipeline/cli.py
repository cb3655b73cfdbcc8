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
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="PIPELINE_CACHE_DIR", show_envvar=True,
              help="Pass cache (default: ~/.cache/model-pipeline).")
@click.option("--force", is_flag=True, help="Rerun every pass and replace its cache entry.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the pass cache.")
@click.option("--locked", is_flag=True,
              help="Refuse to build if the result would differ from the lock (--lock, default <output>/build.lock.json).")
@click.option("--lock", "lock_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The lock file --locked checks against, e.g. a committed copy of build.lock.json.")
def build(recipe: Path, overrides: tuple[str, ...], output: Path | None, cache_dir: Path | None, force: bool,
          no_cache: bool, locked: bool, lock_file: Path | None) -> None:
    """Build RECIPE into a Foundry Local-ready folder."""
    from pipeline.cache import Cache
    from pipeline.recipe import load_recipe
    from pipeline.runner import build as run_build

    loaded = load_recipe(recipe, list(overrides))
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    result = run_build(loaded, output=output, cache=Cache(cache_dir), use_cache=not no_cache, force=force,
                       locked=locked or lock_file is not None, lock_file=lock_file)
    click.echo(f"{'up to date' if result.up_to_date else 'built'} {result.folder}")


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


@cli.command("eval")
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The Hugging Face model folder to compare with (default: the one build.json records).")
@click.option("--text", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Text for perplexity and parity (default: the held-out text shipped with the package).")
@click.option("--window", default=256, show_default=True, type=click.IntRange(16), help="Tokens per window.")
@click.option("--stride", default=128, show_default=True, type=click.IntRange(1), help="Tokens each window moves.")
@click.option("--no-speed", is_flag=True, help="Skip the speed measurement.")
@click.option("--check", "checks", multiple=True, metavar="NAME=THRESHOLD",
              help="A quality gate, e.g. --check max_perplexity_increase_pct=3 (repeatable); exit 3 if one fails.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write metrics.json per folder, report.md and report.png (quality against size) here.")
def eval_(folders: tuple[Path, ...], source: Path | None, text: Path | None, window: int, stride: int,
          no_speed: bool, checks: tuple[str, ...], report: Path | None) -> None:
    """Measure built FOLDERS: perplexity and parity against the source model, speed, size."""
    import json

    from pipeline.errors import QualityGateError
    from pipeline.evaluate import CHECKS, apply_checks, evaluate, source_from_build
    from pipeline.report import render_markdown, write_report

    thresholds = _parse_checks(checks, CHECKS)
    if stride > window:
        raise click.BadParameter(f"{stride} is more than --window {window}", param_hint="--stride")
    results, failures = [], []
    for folder in folders:
        click.echo(f"evaluating {folder}", err=True)
        metrics = evaluate(folder, source or source_from_build(folder),
                           text=text.read_text(encoding="utf-8") if text else None, window=window, stride=stride,
                           speed=not no_speed, log=lambda m: click.echo(f"  {m}", err=True))
        results.append(metrics)
        for result in apply_checks(metrics, thresholds):
            click.echo(f"  check {'passed' if result.passed else 'FAILED'}: {result.message}", err=True)
            if not result.passed:
                failures.append(f"{folder}: {result.message}")
        if report:
            report.mkdir(parents=True, exist_ok=True)
            (report / f"{Path(folder).name}.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    click.echo(render_markdown(results, "Evaluation", image=None))
    if report:
        for path in write_report(results, report):
            click.echo(f"wrote {path}", err=True)
    if failures:
        raise QualityGateError("quality check failed: " + "; ".join(failures))


def _parse_checks(pairs: tuple[str, ...], known: dict) -> dict[str, float]:
    import difflib

    thresholds = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: expected NAME=THRESHOLD, e.g. max_perplexity_increase_pct=3",
                                     param_hint="--check")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
            raise click.BadParameter(f"unknown check {name!r}; {hint}", param_hint="--check")
        try:
            thresholds[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"{pair!r}: {value!r} is not a number", param_hint="--check") from None
    return thresholds


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--runtime", default="foundry-local", show_default=True,
              help="The runtime the folder must load in.")
def check(folder: Path, runtime: str) -> None:
    """Check FOLDER has what the runtime needs: files, hashes, config keys, IR, tokenizer, template, name."""
    from pipeline.check import check_folder

    report = check_folder(folder, runtime)
    for finding in report.findings:
        click.echo(f"{finding.level}: {finding.check}: {finding.message}", err=finding.level == "error")
    errors = sum(f.level == "error" for f in report.findings)
    click.echo(f"{folder}: {'ok' if report.ok else 'FAILED'} for {runtime} "
               f"({len(report.checked)} checks, {errors} errors, {len(report.findings) - errors} warnings)")
    if not report.ok:
        raise SystemExit(1)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--foundry-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="FOUNDRY_CACHE_DIR", show_envvar=True,
              help="Foundry Local's model cache (default: ~/.foundry/cache/models).")
def install(folder: Path, foundry_cache: Path | None) -> None:
    """Install a checked FOLDER into Foundry Local's cache under a new versioned Name."""
    from pipeline.release import install as run_install

    dest, name = run_install(folder, foundry_cache)
    click.echo(f"installed {dest}")
    click.echo(f"run it with: foundry model run {name}")


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--to", "to", required=True, metavar="DIR|hf://ORG/NAME",
              help="A directory to write the release into, or a Hugging Face repo.")
@click.option("--archive", is_flag=True, help="Also write <name>.tar.gz (and its .sha256) beside the release.")
@click.option("--force", is_flag=True, help="Replace an existing release of the same name.")
def publish(folder: Path, to: str, archive: bool, force: bool) -> None:
    """Publish a checked FOLDER: the files, manifest.json (sha256 + size of each) and a model card."""
    from pipeline.release import publish as run_publish

    for written in run_publish(folder, to, archive=archive, force=force):
        click.echo(f"wrote {written}")


@cli.command()
@click.argument("release", type=click.Path(path_type=Path))
def verify(release: Path) -> None:
    """Verify a RELEASE folder (or its .tar.gz) against its manifest.json."""
    from pipeline.release import verify_release

    problems = verify_release(release)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    click.echo(f"{release}: {'ok' if not problems else f'{len(problems)} problems'}")
    if problems:
        raise SystemExit(1)


@cli.group()
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="PIPELINE_CACHE_DIR", show_envvar=True,
              help="Pass cache (default: ~/.cache/model-pipeline).")
@click.pass_context
def cache(ctx: click.Context, cache_dir: Path | None) -> None:
    """Inspect and maintain the pass cache."""
    from pipeline.cache import Cache

    ctx.obj = Cache(cache_dir)


@cache.command("ls")
@click.pass_obj
def cache_ls(store) -> None:
    """One line per entry: key, pass, size, last used, what it was made from."""
    import datetime

    from pipeline.cache import human

    for entry in sorted(store.entries(), key=lambda e: e.last_used, reverse=True):
        parts = entry.record.get("key_parts", {})
        params = " ".join(f"{k}={v}" for k, v in parts.get("params", {}).items() if v not in (None, {}, []))
        used = datetime.datetime.fromtimestamp(entry.last_used).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{entry.key[:12]}  {entry.record.get('pass', '?'):<14} {human(entry.size):>8}  {used}  {params}")


@cache.command("du")
@click.pass_obj
def cache_du(store) -> None:
    """Total size of the cache on disk (a file several entries share counts once)."""
    from pipeline.cache import human

    entries = store.entries()
    click.echo(f"{human(store.disk_usage(entries))} in {len(entries)} entries  {store.root}")


@cache.command("gc")
@click.option("--max-size", required=True, metavar="SIZE", help="Keep at most this much, e.g. 20G (least recently used go first).")
@click.pass_obj
def cache_gc(store, max_size: str) -> None:
    """Remove least recently used entries until the cache fits in SIZE."""
    from pipeline.cache import human, parse_size

    removed, freed = store.gc(parse_size(max_size))
    for entry in removed:
        click.echo(f"removed {entry.key[:12]} {entry.record.get('pass', '?')} ({human(entry.size)})")
    click.echo(f"freed {human(freed)}")


@cache.command("rm")
@click.argument("keys", nargs=-1, required=True)
@click.pass_obj
def cache_rm(store, keys: tuple[str, ...]) -> None:
    """Remove entries by key (or an unambiguous prefix, as `cache ls` prints)."""
    for prefix in keys:
        key = store.resolve_key(prefix)
        with store.lock(key):
            store.remove(key)
        click.echo(f"removed {key[:12]}")


@cache.command("verify")
@click.pass_obj
def cache_verify(store) -> None:
    """Re-hash every cached file; drop entries that do not match (they are rebuilt when needed)."""
    entries = store.entries()
    problems = store.verify()
    for line in problems:
        click.echo(f"damaged: {line}", err=True)
    click.echo(f"verified {len(entries)} entries, {len(problems)} damaged")
    if problems:
        raise SystemExit(1)


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
    # Nothing is left to collect: skip the interpreter's final sweep over every imported module
    # (~30 ms of a build's fixed cost).
    import gc

    gc.freeze()
    sys.exit(rc if isinstance(rc, int) else 0)
