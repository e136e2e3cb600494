"""Label continuations as a token trie, scored in one sequence after the prompt with a tree attention mask.

Banking77's 77 intent names (``card_payment_fee_charged``, ``card_payment_not_recognised``, ...) share many
leading tokens. Each distinct prefix is one position in a single flattened sequence that follows the prompt;
a position attends to the whole prompt and to its own ancestors, never to a sibling branch, and sits at the
position id it would have in ``prompt + label``. Its log-probabilities are exactly those of scoring each
label as its own row, while the prompt's KV cache is used once (batch 1, no copy per label) and a shared
prefix is computed once instead of once per label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LabelTrie:
    """The distinct prefixes of some token sequences; a node's parent always comes before it."""

    tokens: list[int]  # the token each node adds
    parents: list[int]  # its parent node, -1 under the root (the prompt's last token)
    depths: list[int]  # 1 for a continuation's first token
    ends: list[int]  # each continuation's last node
    inner: list[int]  # nodes with children, in order: the only ones that need a forward position


def build(conts: list[list[int]]) -> LabelTrie:
    """The trie of ``conts`` (each non-empty); identical continuations end on the same node."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    children: dict[tuple[int, int], int] = {}
    ends: list[int] = []
    for cont in conts:
        node = -1
        for tok in cont:
            nxt = children.get((node, tok))
            if nxt is None:
                nxt = len(tokens)
                children[(node, tok)] = nxt
                tokens.append(tok)
                parents.append(node)
                depths.append(depths[node] + 1 if node >= 0 else 1)
            node = nxt
        ends.append(node)
    has_child = {p for p in parents if p >= 0}
    return LabelTrie(tokens, parents, depths, ends, sorted(has_child))


def passes(n_inner: int, prompt_len: int, stem: int, most_cells: int) -> list[tuple[int, int]]:
    """Split the inner nodes into consecutive passes (start, end) whose queries x keys stay under ``most_cells``
    (the size of the attention scores); the prompt's uncached last ``stem`` tokens go with the first pass."""
    per_pass = max(1, most_cells // (prompt_len + n_inner))  # no pass attends to more keys than that
    out = [(0, min(max(0, per_pass - stem), n_inner))]
    while out[-1][1] < n_inner:
        start = out[-1][1]
        out.append((start, min(start + per_pass, n_inner)))
    return out


def tree_mask(trie: LabelTrie, rows: range, prompt_len: int, stem_rows: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask (1, 1, queries, keys) for one pass. Queries: the prompt's last ``stem_rows``
    tokens (its uncached part, first pass only), then inner nodes ``rows``. Keys: the prompt's ``prompt_len``
    tokens, then inner nodes up to the pass's last (earlier passes' nodes come from the cache)."""
    slot = {node: k for k, node in enumerate(trie.inner)}  # an inner node's place after the prompt
    allowed = torch.zeros(stem_rows + len(rows), prompt_len + rows.stop, dtype=torch.bool)
    # the stem is causal, after the cached part of the prompt
    allowed[:stem_rows, :prompt_len] = torch.ones(stem_rows, prompt_len, dtype=torch.bool).tril(prompt_len - stem_rows)
    for q, k in enumerate(rows):
        row = allowed[stem_rows + q]
        row[:prompt_len] = True
        node = trie.inner[k]
        while node >= 0:  # itself and its ancestors, all of them inner nodes
            row[prompt_len + slot[node]] = True
            node = trie.parents[node]
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]
