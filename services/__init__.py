"""The model service (``services.model``: drafter or target) and the model store (``services.modelstore``).

Both stand on ``core``; nothing here imports the coordinator or the tools (tests/unit/test_layering.py).
"""
