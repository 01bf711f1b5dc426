"""``python -m audiotok`` runs the same command as the ``audiotok`` entry point."""

from audiotok.runtime.commands.dispatcher import main

if __name__ == "__main__":
    raise SystemExit(main())
