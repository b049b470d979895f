"""Documentation and typing of the public API.

Every public name has a numpydoc docstring of its own with a runnable Examples
section, the examples pass, public callables are annotated, and mypy accepts
the package (when mypy is installed).
"""

import doctest
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import subprocess
import sys

import pytest

import fastconv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: modules whose ``__all__`` is the public API checked here
PUBLIC_MODULES = [
    "fastconv",
    "fastconv.functional",
    "fastconv.nn",
    "fastconv.optim",
    "fastconv.models",
    "fastconv.data",
    "fastconv.train",
    "fastconv.viz",
    "fastconv.dask",
    "fastconv.weights",
    "fastconv.predict",
    "fastconv.distributed",
]

#: public names that are data, not functions or classes: they have no docstring of
#: their own (documented by comments next to them and in their module's docstring)
DATA_NAMES = {
    "fastconv.__version__": "a version string",
    "fastconv.functional.ALGORITHMS": "a tuple of algorithm names",
    "fastconv.models.C3_CONNECTIONS": "LeNet-5's connection table, a tuple",
    "fastconv.data.CLASS_NAMES": "a dict of class-name tuples",
    "fastconv.data.DATASETS": "a tuple of dataset names",
    "fastconv.data.MIRRORS": "a dict of download URLs",
    "fastconv.data.NORMALIZATION": "a dict of (mean, std)",
    "fastconv.data.SHA256": "a dict of checksums",
    "fastconv.data.SPLITS": "a dict of file names",
    "fastconv.data.SYSTEM_DATA_DIRS": "a list of folders",
    "fastconv.viz.PLOT_HINT": "a string, the install command",
    "fastconv.weights.FORMAT_VERSION": "an int",
    "fastconv.distributed.INSTALL_HINT": "a string",
}

#: modules whose examples are not run here, and why
# Modules whose examples need an optional dependency: run when it is installed.
NEEDS = {name: "torch" for name in ("fastconv.torch", "fastconv._torch_conv",
                                   "fastconv._torch_convert", "fastconv._torch_functional",
                                   "fastconv._torch_pool")}
NEEDS["fastconv.dask"] = "dask"
NEEDS["fastconv.predict"] = "PIL"

EXAMPLES = re.compile(r"^\s*Examples\n\s*-{8,}\n(.*\n)*?\s*>>> ", re.MULTILINE)


def public_names():
    for module_name in PUBLIC_MODULES:
        if module_name in NEEDS and importlib.util.find_spec(NEEDS[module_name]) is None:
            continue  # its optional dependency is missing: test_examples_pass skips it
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield f"{module_name}.{name}", getattr(module, name)


def params(pairs):
    return [pytest.param(qualname, obj, id=qualname) for qualname, obj in pairs]


@pytest.mark.parametrize("qualname, obj", params(public_names()))
def test_public_name_has_examples(qualname, obj):
    if qualname in DATA_NAMES:
        assert not callable(obj) and not inspect.ismodule(obj), (
            f"{qualname} is listed as data but is a {type(obj).__name__}"
        )
        return
    doc = obj.__doc__  # its own docstring, not one inherited from a base class
    assert doc, f"{qualname} has no docstring"
    assert EXAMPLES.search(doc), f"{qualname}'s docstring has no numpydoc Examples section with >>>"


def test_data_exceptions_are_public():
    names = {qualname for qualname, _ in public_names()}
    assert set(DATA_NAMES) <= names, set(DATA_NAMES) - names


def _annotated(function):
    signature = inspect.signature(function)
    missing = [name for name, p in signature.parameters.items()
               if p.annotation is inspect.Parameter.empty and name not in ("self", "cls")]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("qualname, obj", params(
    (q, o) for q, o in public_names() if inspect.isfunction(o) or inspect.isclass(o)))
def test_public_callable_is_annotated(qualname, obj):
    if inspect.isclass(obj):
        if obj.__init__ is object.__init__ or issubclass(obj, BaseException):
            return  # nothing of its own to annotate
        obj = obj.__init__
    assert not _annotated(obj), f"{qualname}: no annotation for {_annotated(obj)}"


def package_modules():
    names = ["fastconv"]
    for info in pkgutil.walk_packages(fastconv.__path__, "fastconv."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module_name", package_modules())
def test_examples_pass(module_name):
    if module_name in NEEDS:
        pytest.importorskip(NEEDS[module_name])
    from fastconv import _dispatch

    for isa, suffix in _dispatch.SUFFIX.items():
        if suffix and module_name.endswith(suffix) and not _dispatch.cpu_supports(isa):
            pytest.skip(f"{isa} kernels: importing them on this CPU is an illegal instruction")
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, verbose=False, report=True)
    assert result.failed == 0, f"{module_name}: {result.failed} of {result.attempted} examples failed"


def test_show_config_runs_twice(capsys):
    # Importing fastconv._build_info once replaced a helper of the same name.
    fastconv.show_config()
    fastconv.show_config()
    assert capsys.readouterr().out.count("fastconv ") >= 2


def test_mypy_passes(tmp_path):
    pytest.importorskip("mypy")
    from mypy.version import __version__ as mypy_version

    if int(mypy_version.split(".")[0]) < 2:
        pytest.skip(f"mypy.ini needs mypy >= 2.0 (flexible redefinition), found {mypy_version}")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache"), "fastconv"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
