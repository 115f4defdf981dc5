"""`import mxnet` after the MXNet backend's import: the same MXNet, with its operator
functions generated on first call and the modules a forecast never uses executed on first
use. `import deepar_cli` alone leaves the import system alone."""

from __future__ import annotations

import json
import subprocess
import sys

# Every op namespace's names, and how a few operators behave, as the interpreter sees them.
SURVEY = """
import json, sys
if sys.argv[1] == "deferred":
    import deepar_cli.backends.mxnet
import mxnet as mx
from mxnet import gluon

namespaces = {"nd": mx.nd, "nd.op": mx.nd.op, "nd._internal": mx.nd._internal,
              "nd.contrib": mx.nd.contrib, "nd.random": mx.nd.random, "sym": mx.sym,
              "sym._internal": mx.sym._internal, "nd.np": mx.nd.np, "np": mx.np,
              "npx": mx.npx, "sym.np": mx.sym.np, "nd.np._internal": mx.nd.np._internal}
names = {key: sorted(n for n in dir(module) if not n.startswith("__"))
         for key, module in namespaces.items()}
before = mx.nd.RNN.__code__.co_name
unused = {name: type(sys.modules[name]).__name__
          for name in ("mxnet.test_utils", "mxnet.contrib.onnx", "requests")}
finders = [type(finder).__name__ for finder in sys.meta_path]
import distutils
distutils_from = "setuptools" if "setuptools" in distutils.__file__ else "stdlib"
net = gluon.nn.HybridSequential()
net.add(gluon.nn.Dense(3, activation="tanh"), gluon.nn.Dense(1))
net.initialize(mx.init.Constant(0.5))
x = mx.nd.array([[1.0, -2.0], [0.5, 4.0]])
imperative = net(x).asnumpy().tolist()
net.hybridize()
mx.test_utils.assert_almost_equal(mx.nd.ones(2), mx.nd.ones(2))
print(json.dumps({"names": names, "rnn_before_call": before, "unused": unused,
                  "finders": finders, "distutils": distutils_from,
                  "requests_works": callable(__import__("requests").get),
                  "rnn_module": mx.nd.RNN.__module__, "rnn_name": mx.nd.RNN.__name__,
                  "imperative": imperative, "symbolic": net(x).asnumpy().tolist(),
                  "np_sum": float(mx.np.ones((2, 3)).sum()),
                  "clip": mx.nd.clip(x, -1, 1).asnumpy().tolist()}))
"""


def survey(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", SURVEY, mode], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


def test_deferred_operators_are_mxnets_own_on_first_call() -> None:
    plain, deferred = survey("plain"), survey("deferred")
    assert deferred["rnn_before_call"] == "operator"  # a stub until called
    assert plain["rnn_before_call"] == "RNN"
    assert deferred["unused"] == dict.fromkeys(deferred["unused"], "_LazyModule")
    assert plain["unused"] == dict.fromkeys(plain["unused"], "module")
    assert "_MXNetFinder" not in deferred["finders"]  # gone once MXNet is imported
    assert (deferred["distutils"], plain["distutils"]) == ("stdlib", "setuptools")
    assert deferred["requests_works"] and plain["requests_works"]
    assert deferred["names"] == plain["names"]  # every operator, in every namespace
    for key in ("rnn_module", "rnn_name", "imperative", "symbolic", "np_sum", "clip"):
        assert deferred[key] == plain[key], key
    assert deferred["symbolic"] == deferred["imperative"]
    assert deferred["np_sum"] == 6.0
    assert deferred["clip"] == [[1.0, -1.0], [0.5, 1.0]]


def test_modules_imported_before_mxnet_are_left_alone() -> None:
    code = ("import sys, deepar_cli.backends.mxnet, requests, distutils\n"
            "print(type(requests).__name__, 'setuptools' in distutils.__file__)\n"
            "import mxnet\n"
            "print(type(sys.modules['mxnet.test_utils']).__name__)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout == "module True\n_LazyModule\n"


def test_the_package_leaves_the_import_system_alone() -> None:
    code = ("import sys\n"
            "before = list(sys.meta_path)\n"
            "import deepar_cli, deepar_cli.api, deepar_cli.cli\n"
            "print(sys.meta_path == before)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout == "True\n"


def test_loading_a_model_imports_the_lighter_mxnet(tiny_model) -> None:
    """Every command reaches MXNet through the backend, which installs the finder first."""
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from deepar_cli.model import modelfolder\n"
            "modelfolder.load(Path(sys.argv[1]))\n"
            "print(type(sys.modules['mxnet.test_utils']).__name__)\n")
    result = subprocess.run([sys.executable, "-c", code, str(tiny_model.dir)],
                            capture_output=True, text=True, check=True)
    assert result.stdout == "_LazyModule\n"
