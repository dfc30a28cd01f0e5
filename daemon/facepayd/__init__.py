"""facepayd: the face-payment terminal daemon."""

__version__ = "0.1.0"
