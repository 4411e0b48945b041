"""``python -m unetseg`` runs the CLI."""

from unetseg.cli.main import main

raise SystemExit(main())
