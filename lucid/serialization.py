"""lucid.save / lucid.load (placeholder until the serialization module lands)."""

__all__ = ["save", "load"]


def save(obj, path):  # pragma: no cover - replaced in the same change series
    raise NotImplementedError


def load(path):  # pragma: no cover
    raise NotImplementedError
