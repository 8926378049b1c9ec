"""Model architectures used in the paper (and loaders for trained zoos).

Every network here returns pre-sigmoid logits of shape (N, n_outputs) and uses module
nonlinearities (``nn.ReLU``), so that Captum and tangermeme's DeepLIFT rules see them.
"""
from __future__ import annotations

import torch
from torch import nn


class PaperCNN(nn.Module):
    """The synthetic-data CNN of the paper: Conv1d(4, 32, 8) -> ReLU -> MaxPool1d(4) -> Linear(64)
    -> ReLU -> Linear(n_outputs).

    DeepResolve's layer is ``model.pool`` (output (N, n_filters, W), W = (seq_len - filter_len + 1) // pool).

    Parameters
    ----------
    n_outputs: 1 for synthetic set I, 4 for set II.
    seq_len: input length L of the one-hot (N, 4, L) sequences.
    """

    def __init__(self, n_outputs=1, seq_len=100, n_filters=32, filter_len=8, pool=4, n_hidden=64):
        super().__init__()
        self.seq_len = seq_len
        self.conv = nn.Conv1d(4, n_filters, filter_len)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool1d(pool, pool)
        self.flatten = nn.Flatten()
        width = (seq_len - filter_len + 1) // pool
        self.fc1 = nn.Linear(n_filters * width, n_hidden)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(n_hidden, n_outputs)

    def forward(self, x):
        x = self.pool(self.relu(self.conv(x)))
        return self.fc2(self.relu2(self.fc1(self.flatten(x))))


class EncodeTFModel(nn.Module):
    """The ENCODE single-TF CNN of the paper (the authors' 422 models): one-hot (N, 4, 101) ->
    Conv1d(4, 16, 25, padding=12) -> ReLU -> global max -> Linear(16, 32) -> ReLU -> Dropout ->
    Linear(32, 1) = the logit.

    DeepResolve's H is the *input* of ``model.fc1`` (16 values): use
    ``attribute_to_layer_input=True`` with ``layer=model.fc1``, or ``layer=model.flatten``.
    """

    def __init__(self, n_filters=16, filter_len=25, n_hidden=32, dropout=0.1):
        super().__init__()
        self.conv = nn.Conv1d(4, n_filters, filter_len, padding=filter_len // 2)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(n_filters, n_hidden)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(n_hidden, 1)

    def forward(self, x):
        x = self.flatten(self.pool(self.relu(self.conv(x))))
        return self.fc2(self.dropout(self.relu2(self.fc1(x))))


class DeepSEA(nn.Module):
    """DeepSEA (Zhou & Troyanskaya 2015) without the final sigmoid: (N, 4, 1000) -> (N, 919) logits.

    The paper analyses the input of the third convolution: ``layer=model.conv3`` with
    ``attribute_to_layer_input=True`` (480 channels x 53 positions at 1000 bp).
    """

    def __init__(self, n_outputs=919, seq_len=1000):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 320, 8)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool1d(4, 4)
        self.drop1 = nn.Dropout(0.2)
        self.conv2 = nn.Conv1d(320, 480, 8)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool1d(4, 4)
        self.drop2 = nn.Dropout(0.2)
        self.conv3 = nn.Conv1d(480, 960, 8)
        self.relu3 = nn.ReLU()
        self.drop3 = nn.Dropout(0.5)
        w = seq_len
        for k, p in ((8, 4), (8, 4), (8, 1)):
            w = (w - k + 1) // p
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(960 * w, 925)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(925, n_outputs)

    def forward(self, x):
        x = self.drop1(self.pool1(self.relu1(self.conv1(x))))
        x = self.drop2(self.pool2(self.relu2(self.conv2(x))))
        x = self.drop3(self.relu3(self.conv3(x)))
        return self.fc2(self.relu4(self.fc1(self.flatten(x))))


@torch.no_grad()
def keras_init_(model):
    """Initialise like Keras 1.2 did for the paper's models: glorot_uniform weights, zero biases.

    PyTorch's default (kaiming-uniform with a=sqrt(5)) often makes the synthetic XOR be learned as
    "positive by default, vetoed" instead of as two opposed detectors (see NOTES). Returns model.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                m.bias.zero_()
    return model
