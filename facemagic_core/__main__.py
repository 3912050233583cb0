"""``python -m facemagic_core`` runs the ``facemagic`` command line."""

from .cli import main

raise SystemExit(main())
