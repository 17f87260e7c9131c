"""``python -m pagerd`` is the same CLI as ``pagerd``."""

from pagerd.cli import main

raise SystemExit(main())
