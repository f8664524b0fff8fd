"""The ``salience`` command: a thin shell over the library."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from salience.settings import ConfigError, Config, load_config

if TYPE_CHECKING:
    from salience.services import Services

app = typer.Typer(help="salience: memory for AI companions, behind an OpenAI-compatible proxy.", no_args_is_help=True)
console = Console(stderr=True)


def _load(config_dir: Path) -> Config:
    try:
        return load_config(config_dir)
    except ConfigError as exc:
        console.print(f"[red]configuration error[/red]\n{exc}")
        raise typer.Exit(2) from None


def _require_tenant(settings: Config, tenant: str, config: Path) -> None:
    if tenant not in settings.tenants:
        console.print(f"[red]no tenant {tenant!r}[/red] in {config / 'tenants'}")
        raise typer.Exit(2)


@asynccontextmanager
async def _running(settings: Config) -> AsyncIterator["Services"]:
    """The library's services for one CLI command: store open, no background worker."""
    from salience.services import Services

    services = Services.build(settings)
    await services.start(run_worker=False)
    try:
        yield services
    finally:
        await services.stop()


@app.command()
def serve(
    config: Path = typer.Option(Path("config"), "--config", help="configuration directory"),
    host: Optional[str] = typer.Option(None, help="listen address (default: from salience.yaml, 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, help="listen port (default: from salience.yaml, 8080)"),
) -> None:
    """Run the proxy (and, by default, the extraction worker as a child process it supervises)."""
    import uvicorn

    from salience.app import create_app
    from salience.memory.vectors import one_blas_thread
    from salience.worker_process import ExtractionProcess

    settings = _load(config)
    logging.basicConfig(level=settings.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    one_blas_thread()
    extraction = settings.server.extraction
    separate = extraction.enabled and extraction.process == "separate"
    uvicorn.run(
        create_app(settings, extraction_process=ExtractionProcess.for_config(settings) if separate else None),
        host=host or settings.server.listen.host,
        port=port or settings.server.listen.port,
        log_level=settings.server.log_level,
    )


@app.command()
def worker(
    config: Path = typer.Option(Path("config"), "--config", help="configuration directory"),
    supervised_by: Optional[int] = typer.Option(
        None, "--supervised-by", hidden=True, help="started by serve (this pid): stdin is its pipe"
    ),
    commits_fd: Optional[int] = typer.Option(
        None, "--commits-fd", hidden=True, help="started by serve: name the users of each committed batch on this fd"
    ),
    replies_fd: Optional[int] = typer.Option(
        None, "--replies-fd", hidden=True, help="started by serve: its count of replies being prepared (a shared page)"
    ),
    replies_wake_fd: Optional[int] = typer.Option(
        None, "--replies-wake-fd", hidden=True, help="started by serve: written when that count falls to zero (an eventfd)"
    ),
    vectors_fd: Optional[int] = typer.Option(
        None, "--vectors-fd", hidden=True, help="started by serve: the vectors it embedded (shared memory)"
    ),
) -> None:
    """Run only the extraction worker: drain the queue of exchanges into memories.

    `salience serve` starts one itself (extraction.process: separate, the default); run it by hand
    for serving processes configured with extraction.enabled: false that share one store."""
    from salience.memory.vectors import one_blas_thread
    from salience.worker_process import run_worker

    settings = _load(config)
    logging.basicConfig(level=settings.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    one_blas_thread()
    asyncio.run(run_worker(settings, supervised_by, commits_fd, replies_fd, replies_wake_fd, vectors_fd))


@app.command("import")
def import_file(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help='JSON: {"sessions": [...]}, as the import API takes'),
    user: str = typer.Option(..., "--user", help="the end user the transcripts belong to"),
    tenant: str = typer.Option("demo", "--tenant"),
    config: Path = typer.Option(Path("config"), "--config"),
) -> None:
    """Import existing transcripts with their timestamps and extract their memories."""
    from pydantic import ValidationError

    from salience.memory.importer import ImportRequest, import_sessions
    from salience.model import UserRef

    settings = _load(config)
    _require_tenant(settings, tenant, config)
    try:
        request = ImportRequest.model_validate(json.loads(file.read_text()))
    except (ValueError, ValidationError) as exc:
        console.print(f"[red]{file} is not an import file:[/red] {exc}")
        raise typer.Exit(2) from None

    async def run() -> None:
        async with _running(settings) as services:
            with Progress(
                TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            ) as progress:
                bar = progress.add_task("sessions", total=len(request.sessions))
                result = await import_sessions(
                    services.store,
                    services.worker,
                    UserRef(tenant, user),
                    request.sessions,
                    on_session=lambda _: progress.advance(bar),
                    screen=lambda messages: services.safety.screen_history(
                        settings.tenants[tenant], UserRef(tenant, user), messages
                    ),
                )
        console.print(
            f"{result.sessions} sessions, {result.messages} messages: "
            f"{result.memories_added} memories added, {result.memories_reinforced} reinforced"
        )

    asyncio.run(run())


eval_app = typer.Typer(help="Measure recall quality against baselines.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("locomo")
def eval_locomo(
    data: Path = typer.Option(Path("../shared/data/locomo/locomo10.json"), "--data", help="path of locomo10.json"),
    budget: list[int] = typer.Option([1000, 500], "--budget", help="token budget(s) to recall at"),
    out: Path = typer.Option(Path("bench/results"), "--out", help="where locomo.json and locomo.md are written"),
    limit: Optional[int] = typer.Option(None, "--conversations", help="only the first N conversations"),
) -> None:
    """LoCoMo: salience against last-N tokens, BM25 top-k and MiniLM top-k, in one run."""
    import tempfile

    from salience.eval.locomo import load_conversations, run_locomo, summarise, write_report

    if not data.exists():
        console.print(f"[red]{data} not found[/red]: pass --data PATH/locomo10.json")
        raise typer.Exit(2)
    conversations = load_conversations(data)[:limit]
    questions = sum(len(c.questions) for c in conversations) * len(budget)

    async def run() -> list:
        with tempfile.TemporaryDirectory(prefix="salience-locomo-") as work_dir, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            imported = progress.add_task("conversations", total=len(conversations))
            asked = progress.add_task("questions", total=questions)

            def advance(stage: str, count: int) -> None:
                progress.advance(imported if stage == "conversation" else asked, count)

            return await run_locomo(data, list(budget), Path(work_dir), limit=limit, progress=advance)

    summaries = [summarise(r) for r in asyncio.run(run())]
    json_path, md_path = write_report(summaries, out)
    console.print(md_path.read_text(), markup=False, highlight=False)
    console.print(f"written: {json_path}, {md_path}")


audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    config: Path = typer.Option(Path("config"), "--config", help="configuration directory"),
    tenant: Optional[str] = typer.Option(None, "--tenant", help="one tenant (default: every tenant)"),
) -> None:
    """Walk each tenant's hash chain; exit 1 naming the first entry that was edited, removed or reordered."""
    from salience.compliance.audit import verify_tenant

    settings = _load(config)
    names = [tenant] if tenant else list(settings.tenants)
    for name in names:
        _require_tenant(settings, name, config)

    async def run() -> list:
        async with _running(settings) as services:
            return [await verify_tenant(services.store_for(name), name) for name in names]

    results = asyncio.run(run())
    out = Console()
    for result in results:
        if result.ok:
            out.print(f"tenant {result.tenant}: ok, {result.entries} entries")
        else:
            out.print(f"tenant {result.tenant}: FAILED at entry seq {result.bad_seq}: {result.reason}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command("export")
def export_command(
    user: str = typer.Option(..., "--user", help="the end user whose data is exported"),
    out: Path = typer.Option(..., "--out", help="the JSON file to write"),
    tenant: str = typer.Option("demo", "--tenant"),
    config: Path = typer.Option(Path("config"), "--config"),
) -> None:
    """Write everything held about one user (GDPR Art. 15 and 20) to a JSON file."""
    from salience.compliance.export import export_user
    from salience.model import UserRef

    settings = _load(config)
    _require_tenant(settings, tenant, config)
    ref = UserRef(tenant, user)

    async def run() -> dict | None:
        async with _running(settings) as services:
            if not await services.store_for(tenant).user_exists(ref):
                return None
            with Progress(
                TextColumn("exporting memories"), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            ) as progress:
                bar = progress.add_task("memories", total=None)
                return await export_user(services, ref, progress=lambda n: progress.advance(bar, n))

    from salience.store.base import MasterKeyMissing

    try:
        data = asyncio.run(run())
    except MasterKeyMissing:
        console.print(f"[red]tenant {tenant!r}'s data is encrypted and its master_key is not set[/red] (see docs/compliance.md)")
        raise typer.Exit(2) from None
    if data is None:
        console.print(f"[red]no user {user!r}[/red] in tenant {tenant!r}")
        raise typer.Exit(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    console.print(f"{len(data['memories'])} memories, {len(data['audit'])} audit entries written to {out}")


bench_app = typer.Typer(help="Measure speed: the benchmarks in bench/, run from a checkout.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _bench_script(*parts: str) -> Path:
    """A benchmark script of the repository checkout this package runs from (or of the cwd)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        script = root.joinpath("bench", *parts)
        if script.exists():
            return script
    console.print(f"[red]bench/{'/'.join(parts)} not found[/red]: run from a salience checkout")
    raise typer.Exit(2)


@bench_app.command(
    "gateway", context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
)
def bench_gateway(context: typer.Context) -> None:
    """salience against the bare upstream and LiteLLM's proxy: latency, TTFT, throughput, CPU, RSS.

    Every option goes to bench/gateway/run.py (--quick for a short run, --help for all of them);
    results land in bench/results/gateway.{json,md}.
    """
    import os
    import subprocess

    script = _bench_script("gateway", "run.py")
    env = dict(os.environ)
    # the benchmark's own processes import this very salience, whatever the cwd
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    completed = subprocess.run([sys.executable, str(script), *context.args], env=env, cwd=script.parents[2])
    raise typer.Exit(completed.returncode)


@app.command()
def demo() -> None:
    """A scripted two-session conversation against a local echo upstream, offline."""
    from salience.demo import run_demo

    asyncio.run(run_demo(Console()))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
