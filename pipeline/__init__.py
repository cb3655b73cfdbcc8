"""Declarative model-build pipeline: recipe -> passes -> Foundry Local-ready folder."""

__version__ = "0.1.0"
