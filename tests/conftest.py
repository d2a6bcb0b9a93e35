"""Shared pytest plugins: real and tiny model fixtures, real vocabularies."""

pytest_plugins = ["tests.fixtures.models", "tests.fixtures.vocabs"]
