"""`python -m shipper`: the same command line as the `shipper` script."""

from shipper.cli import main

raise SystemExit(main())
