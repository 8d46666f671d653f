"""The ``tagstream`` command line and the local-stack launcher: the top floor of the project."""
