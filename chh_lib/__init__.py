"""chh_lib: the code behind the chh-kit notebooks.

A teaching and replication kit for *Contour-Hugging Heatmaps for Landmark
Detection* (McCouat & Voiculescu, CVPR 2022): a phantom data set, data readers,
the U-Net, one-hot heatmap training, temperature calibration, the Expected
Radial Error and the uncertainty analysis. See README.md for the command line.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``chh_lib.predict`` (:func:`chh_lib.prediction.predict`), imported on first use so that
    ``import chh_lib`` stays light."""
    if name == "predict":
        from chh_lib.prediction import predict

        return predict
    raise AttributeError(f"module 'chh_lib' has no attribute {name!r}")
