"""The parity tests lean on this model having learned something; check that it has."""

import numpy as np
import torch

from resnet_deploy.preprocess import load_folder


def test_trained_model_tells_photos_apart(trained):
    images = load_folder(trained.heldout_dir, trained.preprocess)
    labels = np.array([int(p.name[:2]) for p in images.paths])
    with torch.inference_mode():
        pred = trained.model(torch.from_numpy(images.tensors)).argmax(1).numpy()
    assert (pred == labels).mean() > 0.6
    assert len(np.unique(pred)) >= 8  # not a degenerate reference
