"""A planted shortcut shows up in Grad-CAM: a model trained on the synthetic skin set with a strong
colourful-patch bias puts more Grad-CAM mass on the patch than one trained with the bias off.

The study's training engine trains a ResNet18 far too slowly on CPU for a test (about 4 min per
model at 64 px here, still near chance after 4 epochs), so a small CNN is trained directly on the
synthetic images, with the images read by the real ISIC reader and eval transform.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medattn.explain import gradcam, mass_share

SIZE = 64


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _load(spec):
    from medattn.data import build_transform, load_dataset, read_image

    table = load_dataset(spec)
    tf = build_transform(False, SIZE)
    plain = build_transform(False, SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x = torch.stack([tf(read_image(p)) for p in table["path"]])
    patch = torch.stack([plain(read_image(p))[0] > 0.5 for p in table["patch_mask_path"]])
    return x, torch.tensor(table["label"].to_numpy()), patch


class _SmallCNN(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        def block(i, o, stride=1):
            return nn.Sequential(nn.Conv2d(i, o, 3, stride=stride, padding=1), nn.BatchNorm2d(o),
                                 nn.ReLU(), nn.MaxPool2d(2) if stride == 1 else nn.Identity())
        # strided first conv keeps training cheap; the Grad-CAM layer is 8x8 at 64 px
        self.features = nn.Sequential(block(3, 12, stride=2), block(12, 24), block(24, 32))
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _train(x, y, seed=0, epochs=8):
    torch.manual_seed(seed)
    model = _SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(32):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.mark.slow
def test_patch_bias_shows_as_gradcam_mass_on_the_patch(tmp_path):
    from medattn.data.synthetic.derm import write_derm

    data = {b: _load(write_derm(tmp_path / f"bias{b}", n=240, n_ood=1, image_size=SIZE,
                                patch_bias=b)[0]) for b in (1.0, 0.0)}
    models = {b: _train(x, y) for b, (x, y, _) in data.items()}
    # explain both models on the same images: patched images of the unbiased set (all classes)
    x, y, patch = data[0.0]
    has = patch.flatten(1).any(1)
    x, patch = x[has], patch[has]
    assert len(x) >= 20
    share = {b: mass_share(gradcam(m, x, target_layers=[m.features[-1]]), patch).nanmean().item()
             for b, m in models.items()}
    area = patch.float().mean().item()
    assert share[1.0] > 1.5 * share[0.0], (share, area)  # measured about 2x over seeds 0-2
    assert share[1.0] > 3 * area, (share, area)
