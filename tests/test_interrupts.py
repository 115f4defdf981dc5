"""`interrupts.raising`: SIGINT and SIGTERM as `errors.Interrupted` while a command runs
(the commands themselves are tested with real signals in test_train and test_tune)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from deepar_cli.errors import Interrupted
from deepar_cli.interrupts import raising


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(5)  # the handler runs, and raises, before this ends


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_raises_interrupted_with_its_exit_code(signum, code):
    before = signal.getsignal(signum)
    tic = time.perf_counter()
    with pytest.raises(Interrupted) as caught, raising():
        try:
            _signal_self(signum)
        except Exception:  # what GluonTS's trainer catches, and KeyboardInterrupt
            pytest.fail("an Exception handler caught the interrupt")
    assert time.perf_counter() - tic < 5
    assert (caught.value.exit_code, str(caught.value)) == (
        code, f"interrupted by {signal.Signals(signum).name}")
    assert not isinstance(caught.value, (Exception, KeyboardInterrupt))
    assert signal.getsignal(signum) is before


def test_an_ignored_signal_stays_ignored():
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with raising():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)
