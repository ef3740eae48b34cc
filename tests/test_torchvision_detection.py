"""focal_cuda.sigmoid_focal_loss swapped into torchvision's own RetinaNet and FCOS training losses.

torchvision's detection heads call the module attribute `sigmoid_focal_loss` (torchvision.ops' eager formula).
Replacing it with focal_cuda's must leave the classification loss and the classification head's gradients
unchanged: code nobody here wrote, with its own anchor matching, ignored anchors and normalisation.
"""
import contextlib

import pytest
import torch

import focal_cuda
from focal_cuda.testing import emulated_cuda, emulation_available

detection = pytest.importorskip("torchvision.models.detection")
retinanet_module = pytest.importorskip("torchvision.models.detection.retinanet")
fcos_module = pytest.importorskip("torchvision.models.detection.fcos")


def random_targets(generator, images, size, num_classes):
    targets = []
    for _ in range(images):
        n = int(torch.randint(1, 4, (), generator=generator))
        xy = torch.rand(n, 2, generator=generator) * (size * 0.6)
        wh = torch.rand(n, 2, generator=generator) * (size * 0.35) + 8
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                        "labels": torch.randint(1, num_classes, (n,), generator=generator)})
    return targets


def build(kind, num_classes):
    torch.manual_seed(0)
    if kind == "retinanet":
        model = detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes,
                                                 min_size=128, max_size=128)
        return model, retinanet_module, model.head.classification_head.cls_logits
    model = detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes,
                                        min_size=128, max_size=128)
    return model, fcos_module, model.head.classification_head.cls_logits


def classification_loss_and_grad(model, head_layer, images, targets):
    model.zero_grad()
    losses = model(images, targets)
    loss = losses["classification"]
    loss.backward()
    return loss.detach(), head_layer.weight.grad.clone(), head_layer.bias.grad.clone()


@pytest.mark.parametrize("backend", ["cpu", "emulated_cuda"])
@pytest.mark.parametrize("kind", ["retinanet", "fcos"])
def test_swapped_into_torchvision_detector(kind, backend):
    if backend == "emulated_cuda" and not emulation_available():
        pytest.skip("focal_cuda was built without FOCAL_CUDA_EMULATE=1")
    num_classes = 5
    model, module, head_layer = build(kind, num_classes)
    model.train()
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 128, 128, generator=generator) for _ in range(2)]
    targets = random_targets(generator, 2, 128, num_classes)

    expected = classification_loss_and_grad(model, head_layer, images, targets)
    original = module.sigmoid_focal_loss
    context = emulated_cuda() if backend == "emulated_cuda" else contextlib.nullcontext()
    try:
        module.sigmoid_focal_loss = focal_cuda.sigmoid_focal_loss
        with context:
            actual = classification_loss_and_grad(model, head_layer, images, targets)
    finally:
        module.sigmoid_focal_loss = original
    for what, a, b in zip(("loss", "cls_logits.weight grad", "cls_logits.bias grad"), actual, expected):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=1e-6, msg=lambda m: f"{kind} {what}: {m}")
    assert expected[0] > 0
