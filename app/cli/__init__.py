"""`kbqa`: the command line. Model preparation (models.py) and the processes (processes.py: the API, the web UI,
the LLM stack) run locally; everything else (rest.py) goes through the REST API with kbqa_client, the one door to
the data, at api.client_url (KBQA_API_URL) or api.host/api.port."""

from __future__ import annotations

import typer

from app.cli import models, processes, rest

app = typer.Typer(help="Local knowledge-base question answering.", no_args_is_help=True)
app.add_typer(models.app, name="models")
app.add_typer(rest.kb_app, name="kb")
app.add_typer(rest.doc_app, name="doc")
app.add_typer(processes.llm_app, name="llm", no_args_is_help=True)
app.command()(processes.serve)
app.command()(processes.chat)
app.command()(processes.ui)
app.command()(processes.up)
app.command()(rest.search)
app.command()(rest.ask)
app.command("eval")(rest.evaluate)


def main() -> None:
    app()
