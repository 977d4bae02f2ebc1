"""Special-token ids looked up by name, for code that puts them into id lists."""

from __future__ import annotations

from tokenizers import Tokenizer


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of a special token the code relies on. `Tokenizer.token_to_id` answers None for a token
    the vocabulary lacks; such a tokenizer is refused here, naming the token, rather than letting None
    into the id lists."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the tokenizer has no {token} token")
    return token_id
