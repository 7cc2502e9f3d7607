"""The site components, the site database, the hierarchy wiring, the public facade and the CLI."""

__all__: list[str] = []
