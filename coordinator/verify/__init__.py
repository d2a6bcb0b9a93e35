"""Pure verification math of the coordinator (tensors in, tensors out; torch and numpy only).

``speculative`` holds the acceptance rule (the words draft / accepted / recovered / bonus / output tokens
are defined in ``core.sampling``, the warpers and sampling math shared with the model service); ``slrs``
SLRS's proposal process. TLI's logit restriction lives in ``core.restrict`` (the drafter service applies it).
"""
