"""``python -m receiver`` runs the same CLI as the ``rollback-receiver`` script."""

from receiver.cli import main

raise SystemExit(main())
