"""The web page for people opening the server's URL (SPEC 4). Placeholder until issue 6."""

from __future__ import annotations

from typing import Any, Callable, Optional

import bottle


def render(server: Any, get: Callable[[str], Optional[str]]) -> str:
    links = server.links()
    return bottle.template(
        "<!doctype html><title>spklite</title><h1>spklite</h1>"
        "<p>Add <code>{{url}}/</code> as a package source in Package Center.</p>",
        url=links.base,
    )
