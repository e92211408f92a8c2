"""Data-parallel start-up (issue 18): a configurable process-group timeout, and rank 0 prepares
(data, teacher cache) before joining the group, so the others never wait inside a collective."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hrsam.train import distributed


def test_process_group_timeout_is_configurable(monkeypatch):
    seen = {}
    monkeypatch.setattr(distributed, "from_env", lambda: distributed.DistEnv(1, 2, 0))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda backend, **kw: seen.update(kw, b=backend)
    )
    distributed.init("cpu", 90)
    assert seen == {"timeout": timedelta(minutes=90), "b": "gloo"}
    monkeypatch.setenv("HRSAM_DIST_TIMEOUT_MIN", "45")
    distributed.init("cpu")
    assert seen["timeout"] == timedelta(minutes=45)


def test_rank0_prepares_before_joining_the_group(monkeypatch):
    from hrsam.train import __main__ as train_main

    order = []

    class Teacher:
        def fill(self):
            order.append("teacher cache")

    class Cfg:
        steps = 1

    def build(cfg):
        order.append("build")
        return object(), [], Teacher(), Cfg()

    monkeypatch.setattr(distributed, "from_env", lambda: distributed.DistEnv(0, 2, 0))
    monkeypatch.setattr(distributed, "init", lambda kind, timeout: order.append(f"init {timeout}"))
    monkeypatch.setattr(distributed, "share", lambda obj: order.append("share") or obj)
    monkeypatch.setattr(distributed, "shutdown", lambda: None)
    monkeypatch.setattr(train_main, "build", build)

    class StopError(Exception):
        pass

    def train(*args, **kwargs):
        order.append("train")
        raise StopError

    monkeypatch.setattr("hrsam.train.loop.train", train)
    cfg = {**train_main.DEFAULTS, "device": "cpu", "out": "unused", "dist_timeout_min": 30.0}
    with pytest.raises(StopError):
        train_main.run(cfg)
    assert order == ["build", "teacher cache", "init 30.0", "share", "train"]


def test_bad_timeout_is_one_line_and_exit_2(capsys):
    from hrsam.train import __main__ as train_main

    assert train_main.main(["recipe=tiny-synthetic", "dist_timeout_min=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dist_timeout_min=0.0 must be > 0" in err[0]
