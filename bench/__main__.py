"""``python -m bench [--quick]``: see bench/README.md."""

from .run import main

raise SystemExit(main())
