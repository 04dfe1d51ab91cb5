"""conf.py's ``_write_with_every_process``: the html build writes its pages with as many processes
as ``-j`` gives, where Sphinx alone writes with one fewer."""

import importlib.util
import inspect
from pathlib import Path
from types import SimpleNamespace

from sphinx.builders import Builder

ROOT = Path(__file__).resolve().parents[2]


def _conf():
    spec = importlib.util.spec_from_file_location("_book_conf", ROOT / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def test_sphinx_writes_with_one_process_fewer_than_it_reads():
    # What the hook corrects: if Sphinx stops asking for parallel - 1 writers, the hook must go.
    source = inspect.getsource(Builder.write_documents)
    assert "self._write_parallel(sorted_docnames, nproc=self._app.parallel - 1)" in source


def test_the_hook_asks_for_every_process_and_no_more():
    asked = []

    class FakeBuilder:
        def _write_parallel(self, docnames, nproc):
            asked.append(nproc)

    conf = _conf()
    for parallel in (2, 3, 8):
        app = SimpleNamespace(builder=FakeBuilder(), parallel=parallel)
        conf._write_with_every_process(app)
        app.builder._write_parallel(["a", "b"], nproc=parallel - 1)  # as Sphinx calls it
    app = SimpleNamespace(builder=FakeBuilder(), parallel=2)
    conf._write_with_every_process(app)
    app.builder._write_parallel(["a"], nproc=2)  # a request above -j is capped at -j
    assert asked == [2, 3, 8, 2]
    bare = SimpleNamespace(builder=SimpleNamespace(), parallel=2)  # a builder without the method
    conf._write_with_every_process(bare)
    assert not hasattr(bare.builder, "_write_parallel")
