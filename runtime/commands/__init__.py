"""The ``audiotok`` command line: the dispatcher and one module per runtime subcommand."""
