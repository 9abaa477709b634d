"""Allows ``python -m streamlearn …`` as an alternative to the ``streamlearn`` console script."""

from streamlearn.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
