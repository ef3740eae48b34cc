"""benchmarks/naive.py for the tests: the one copy of the formulas focal_cuda replaces (torchvision's
sigmoid_focal_loss, the classic FocalLoss / BCEFocalLoss classes, mmdet's varifocal and quality focal losses,
Alibaba-MIIL's AsymmetricLoss), written as their users and repositories write them.

    from naive_formulas import naive
"""
import importlib.util
import os

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "naive.py")
_spec = importlib.util.spec_from_file_location("focal_naive_formulas", _PATH)
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)
