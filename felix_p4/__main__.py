"""`python -m felix_p4` is the `felix-p4` command."""

from felix_p4.cli import main

raise SystemExit(main())
