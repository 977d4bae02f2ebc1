"""Linear-chain CRF in torch: negative log-likelihood for training, Viterbi as the reference decoder.

Scores: score(y) = start[y_0] + sum_t emissions[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_last].
The served pipeline decodes with numpy (service/pipelines/crf_decoding.py) from the exported
emissions and these three parameter arrays; tests check both decoders agree.
Masks are right-padded (every row's real positions come first, at least one of them).
"""

from __future__ import annotations

import torch
from torch import nn


class CRF(nn.Module):
    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]
        nn.init.uniform_(self.transitions, -0.1, 0.1)

    def neg_log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of -log p(tags | emissions). emissions [B, T, K], tags/mask [B, T]."""
        mask = mask.bool()
        return (self._log_partition(emissions, mask) - self._path_score(emissions, tags, mask)).mean()

    def _path_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch = torch.arange(emissions.shape[0], device=emissions.device)
        score = self.start[tags[:, 0]] + emissions[batch, 0, tags[:, 0]]
        for t in range(1, emissions.shape[1]):
            step = self.transitions[tags[:, t - 1], tags[:, t]] + emissions[batch, t, tags[:, t]]
            score = score + step * mask[:, t]
        last = tags[batch, mask.sum(1) - 1]
        return score + self.end[last]

    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        alpha = self.start + emissions[:, 0]  # [B, K]
        for t in range(1, emissions.shape[1]):
            candidate = torch.logsumexp(alpha.unsqueeze(2) + self.transitions.unsqueeze(0), dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], candidate, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Best tag sequence per row (each as long as its mask)."""
        mask = mask.bool()
        score = self.start + emissions[:, 0]
        backpointers = []
        for t in range(1, emissions.shape[1]):
            candidate = score.unsqueeze(2) + self.transitions.unsqueeze(0)  # [B, from, to]
            best, best_from = candidate.max(dim=1)
            backpointers.append(best_from)
            score = torch.where(mask[:, t : t + 1], best + emissions[:, t], score)
        score = score + self.end
        paths = []
        for row, length in enumerate(mask.sum(1).tolist()):
            tag = int(score[row].argmax())
            path = [tag]
            for t in range(length - 1, 0, -1):
                tag = int(backpointers[t - 1][row, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths
