"""``python -m zsir``: the same command line as the ``zsir`` console script."""

from zsir.cli import main

raise SystemExit(main())
