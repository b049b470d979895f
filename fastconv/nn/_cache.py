"""What a layer keeps between forward and backward."""

from __future__ import annotations

from typing import Any


#: attributes of a layer that only carry one call's work to the next (the inputs kept for
#: backward, a Conv2d's remembered checks, a Sequential's compiled forwards): not part
#: of the model, never copied, pickled or shipped
TRANSIENT_STATE = ("_saved", "_checked", "_inference", "_in_program")


class NeedsForward:
    """Mixin: ``self._saved`` holds forward's tensors; backward without it is an error."""

    _saved: tuple[Any, ...] | None = None

    def _save(self, *values: Any) -> None:
        # past Module.__setattr__: a tuple is never a parameter or a submodule, and its
        # bookkeeping costs about as much as a small layer's kernel at batch 1
        object.__setattr__(self, "_saved", values)

    def _take(self) -> tuple[Any, ...]:
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._saved
