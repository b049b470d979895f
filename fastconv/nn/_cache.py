"""What a layer keeps between forward and backward."""


class NeedsForward:
    """Mixin: ``self._saved`` holds forward's tensors; backward without it is an error."""

    _saved = None

    def _save(self, *values):
        self._saved = values

    def _take(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._saved
