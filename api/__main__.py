"""``python -m api``: run the server (the same as ``shoal serve``)."""

from api.cli import main

raise SystemExit(main(["serve"]))
