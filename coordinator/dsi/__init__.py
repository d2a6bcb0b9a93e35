"""DSI: distributed speculative inference (Timor et al., ICLR 2025; ALGORITHMS.md §5) for one request.

The drafter drafts block after block at the end of a chain of uncommitted blocks (at most ``depth``);
each finished block is verified on a free target replica while the drafter drafts on; results are
applied in position order; a rejection commits the accepted tokens and the recovered token, pre-empts
every later verification and the running draft, and drafting restarts from the corrected prefix. A
replica idle while nothing else can cover the first uncommitted position may take a plain target step.
``chain`` holds the decisions (pure), ``scheduler`` the asyncio driver over injectable calls and clock,
``policy`` the choice of scheduler and knobs from measured costs, ``driver`` the coordinator's wiring.

Why the output law is the target's (lossless)
---------------------------------------------
Every output position is decided by exactly one draw, made on a context equal to the committed prefix:

1. A block drafted from a speculative snapshot (committed output + the candidates of the blocks before
   it) is applied only when its snapshot's output is a prefix of the committed output and the committed
   tokens past its base equal its candidates there (``chain.usable_offset``): the target's draws it
   brings were made on exactly the committed prefix. Any other block is stale: pre-empted, never read.
2. At a position covered by a block's candidate, the speculative rule (or exact match) decides it with
   the block's own uniform for that position; a rejection ends the block with the recovered token. Each
   of these is a correct one-position step of speculative sampling whatever the drafter proposed, so the
   committed token follows the target's conditional law given the prefix.
3. At a position after a fully accepted block, the block's bonus sample decides iff the next block had
   not *started* drafting when the block's result was applied; else the next block decides (verified
   even when it drafted nothing: a plain step). A plain step, once launched at n, decides n; it launches
   only while the chain holds no live block (so no block that started earlier could claim n), and a
   block drafted from n continues from n+1 only if its first candidate equals the plain step's token.
4. Hence *which* draw decides a position depends only on timing (starts of drafts and calls, arrival of
   results) and on draws at earlier positions - never on a draw at that position or later. A draft's
   finish time depends on its own draws (a confidence stop, an end of sequence), so finish times only
   ever choose between draws whose values do not depend on that draft: the bonus sample of the block
   (the target's own draw) and the next block's fresh draws.
5. Every block and plain step takes a fresh, never-reused index for its seeds (``round_seed(seed, index,
   purpose)``), so a draw discarded by a pre-emption is never reused after a restart, and draws of
   different blocks are independent.

By induction over positions, each committed token is drawn from the target's conditional law given the
committed prefix, independently of how the choice of decider was made: the output law is the target's.
Greedy decoding decides each position by the target's argmax on the committed prefix, so its output is
identical to SI and target-only decoding for any replica count and timing.

Cross-vocabulary algorithms: TLI chains like sd (candidates are the drafted tokens mapped 1:1). SLEM
starts a next block only when the previous block's drafted text ends exactly on its candidates (no
pending bytes); otherwise the chain waits for the verification. SLRS runs as SLEM under DSI (reported in
the response's fallback/notes field). A lookup drafter is not used under DSI.
"""
