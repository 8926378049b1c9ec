import pytest
import torch

from deepresolve_captum.train import train_classifier
from deepresolve_captum.zoo import PaperCNN


def test_diverged_training_is_a_clear_error():
    # NaN inputs make every validation loss NaN: no epoch can be kept
    X = torch.zeros(40, 4, 50)
    X[:, 0] = float("nan")
    y = (torch.arange(40) % 2).float()
    with pytest.raises(FloatingPointError, match="not finite in any of the 2 epochs"):
        train_classifier(PaperCNN(n_outputs=1, seq_len=50), X, y, epochs=2, batch_size=8)
