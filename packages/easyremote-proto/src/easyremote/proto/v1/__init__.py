"""Generated protocol modules, version 1 (do not edit: run `nox -s codegen`)."""
