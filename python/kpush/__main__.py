"""``python -m kpush`` runs the demo (see kpush.demo)."""

from .demo import main

main()
