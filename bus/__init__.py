"""The actor runtime: actors, mailboxes, addressing, request/reply, topics, supervision, clock."""

__all__: list[str] = []
