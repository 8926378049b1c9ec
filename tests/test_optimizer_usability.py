"""LayerFeatureOptimizer for a first-time user coming from Captum: what a run keeps, and the
messages a usual slip gets (a layer of the original model after copy.deepcopy, per-example
labels as `target`, a layer with several inputs, a dict of heads)."""
import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepresolve_captum import LayerFeatureOptimizer


def _onehot(n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return nn.functional.one_hot(torch.randint(0, 4, (n, length), generator=g), 4) \
        .permute(0, 2, 1).float()


class SigmoidNet(nn.Module):
    """conv1 -> relu1 -> conv2 -> relu2 -> mean -> fc -> act (Sigmoid)."""

    def __init__(self, n_out=3):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv1d(4, 6, 5), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv1d(6, 6, 3), nn.ReLU()
        self.fc, self.act = nn.Linear(6, n_out), nn.Sigmoid()

    def forward(self, x):
        return self.act(self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean(2)))


def _logits_net(n_out=3):
    torch.manual_seed(0)
    m = SigmoidNet(n_out).eval()
    m.act = nn.Identity()
    return m


QUIET = dict(n_starts=2, l2=1.0, seed=0, max_steps=30)


@pytest.mark.filterwarnings("ignore:.*starts stopped at max_steps")
def test_the_last_calls_scores_stay_in_the_diagnostics_whatever_is_returned():
    """c.md #3: fims = opt.attribute(...) the Captum way, or fiv_only=True, keeps the (C, T)
    scores that summarize needs in opt.diagnostics.scores."""
    m, x = _logits_net(), _onehot(6, 20)
    opt = LayerFeatureOptimizer(m, m.relu1)
    fims, scores = opt.attribute(x, target=[0, 2], return_scores=True, **QUIET)
    kept = opt.diagnostics.scores
    assert isinstance(kept, np.ndarray) and kept.shape == (2, 2) and kept.dtype == np.float32
    np.testing.assert_array_equal(kept, scores.numpy())
    scores[0, 0] = 99.0                                # a copy, not a view of the result
    assert kept[0, 0] != 99.0
    fims_only = opt.attribute(x, target=[0, 2], **QUIET)             # return_scores=False
    assert torch.equal(fims_only, fims)
    np.testing.assert_array_equal(opt.diagnostics.scores, kept)
    opt.attribute(x, target=[0, 2], fiv_only=True, **QUIET)  # what summarize(fivs, ...) needs
    np.testing.assert_array_equal(opt.diagnostics.scores, kept)
    # a bfloat16 output: numpy has none, float32 holds it exactly
    m16 = _logits_net().to(torch.bfloat16)
    s16 = LayerFeatureOptimizer(m16, m16.relu1)
    _, sc = s16.attribute(x.to(torch.bfloat16), target=[1], return_scores=True, **QUIET)
    assert s16.diagnostics.scores.dtype == np.float32
    np.testing.assert_array_equal(s16.diagnostics.scores, sc.float().numpy())
