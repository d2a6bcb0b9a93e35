"""Kits shared by the tests: toy LMs, toy tokenizers, toy model services, exact laws, the law harness."""
