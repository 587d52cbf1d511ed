"""``silodiff keys create | list | revoke``: API keys of the service, stored hashed in the catalog."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonOpt, StoreOpt, _names, _open, cli_errors, emit, sub_app

keys_app = sub_app("API keys of the HTTP service (stored hashed; a key is shown once).")


@keys_app.command("create")
@cli_errors
def keys_create(
    store: StoreOpt,
    name: Annotated[str, typer.Option(help="The key's name (shown in events and logs instead of the key).")],
    sources: Annotated[list[str] | None, typer.Option(help="Sources the key may use, comma-separated ('*' = all).")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="May also forget data and read the event log.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; it is printed once and never stored in plain text."""
    from ..service.keys import create_key

    record, key = create_key(_open(store), name, _names(sources), admin=admin)
    if as_json:
        emit({**record, "key": key}, True)
        return
    typer.echo(f"key {record['name']!r} (sources: {', '.join(record['sources'])}{'; admin' if admin else ''}):")
    typer.echo(key)
    typer.echo("Store it now: it is shown only this once.", err=True)


@keys_app.command("list")
@cli_errors
def keys_list(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Every key's name, rights and dates (never the key)."""
    from ..service.keys import list_keys

    rows = list_keys(_open(store))
    emit(
        rows if as_json else [dict(r, sources=",".join(r["sources"])) for r in rows],
        as_json,
        ["name", "sources", "admin", "created_at", "revoked_at"],
    )


@keys_app.command("revoke")
@cli_errors
def keys_revoke(
    store: StoreOpt, name: Annotated[str, typer.Argument(help="The key's name.")], as_json: JsonOpt = False
) -> None:
    """Revoke a key: every later request with it gets 401."""
    from ..service.keys import revoke_key

    emit(revoke_key(_open(store), name), as_json)
