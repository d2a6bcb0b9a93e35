"""Pure verification math for lossless speculative decoding (tensors in, tensors out; torch and numpy only).

``sampling`` holds the warpers, sparse proposals and the target's Score step (the words draft / accepted /
recovered / bonus / output tokens are defined there); ``speculative`` the coordinator's acceptance rule;
``tli`` the token-level intersection for drafters with another vocabulary.
"""
