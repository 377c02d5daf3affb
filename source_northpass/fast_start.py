"""Start-up and exit work the connector skips. A sync's wall time includes the process's own
start and end: at Northpass's 10 requests/second a 3,000-person school needs 7.1 s of requests,
and before this module start-up plus exit took another 1.6-1.8 s.

Why Python, and why here: these costs are in the interpreter and in a library the CDK imports,
before any manifest or component exists, so nothing in YAML (nor components.py, loaded after
the CDK) can reach them.

1. Garbage collection. Importing the CDK and building the source allocate about a million
   objects that live until exit; the collector walks all of them again and again while they
   are created (about 0.1 s of start-up), in every full collection during the sync, and once
   more at exit (0.2 s). `collector_paused()` keeps the collector off while `main.py` imports,
   and `freeze()` (the standard library's `gc.freeze`, for exactly this) moves what exists to
   a generation the collector never walks: called once the source is built (and, for exit,
   by components.py, under every runner). Memory is unchanged: frozen objects were going to
   live until exit anyway.

2. `airbyte_cdk.models` builds eight serpyco_rs `Serializer`s when it is imported, and each
   one builds its JSON Schema eagerly; to document that schema serpyco_rs reads the CDK's model
   classes' source code back with `inspect` and `ast` (the attributes' docstrings). That was
   about 0.35 s (the schema) plus 0.07 s (the docstrings) of every `spec`, `check`, `discover`
   and `read` (6% of the floor of the benchmark's sync) for a schema that no command reads: the
   CDK only calls `dump`/`load`, which never look at a docstring. Here serializers are described
   without the attributes' docstrings, and the schema is built, from a description with them,
   the first time `Serializer.get_json_schema()` asks for it: anything that asks gets the same
   answer as without this module.

   If serpyco_rs changes shape (the names below are gone), nothing is patched and start-up is
   merely slower; `unit_tests/test_fast_start.py` fails in that case so the pin is revisited.

3. `airbyte_cdk/__init__.py` imports most of the CDK (destinations, file-based and legacy
   sources, ...) to offer its names at the top level, about 0.1 s. The connector imports what
   it uses by full path, so the package is created without running that file; the file runs,
   whole and once, the first time anything asks the package for a name it defines
   (`from airbyte_cdk import X` and `airbyte_cdk.__version__` keep working, only later).
   `unit_tests/test_fast_start.py` checks that a sync never needs it.
"""

import gc
import importlib.util
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection while the block runs (the imports of `main.py`); what it built is
    frozen afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        freeze()


def freeze() -> None:
    """Keep the collector off every object that exists now (they live until exit)."""
    gc.freeze()


class _DeferredSchema:
    """Stands in for a serializer's JSON Schema until somebody asks for it: how the serializer
    was made, to describe its type again with the docstrings."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: Any, kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


def defer_serializer_schemas() -> bool:
    """Make serpyco_rs read attribute docstrings and build serializers' JSON Schemas on first
    use of the schema. True if it was done (or already was)."""
    try:
        from serpyco_rs import _describe, _main
    except ImportError:
        return False
    build = getattr(_main, "get_json_schema", None)
    serializer = getattr(_main, "Serializer", None)
    read_docs = getattr(_describe, "get_attributes_doc", None)
    if build is None or serializer is None or read_docs is None:
        return False
    if getattr(serializer, "_northpass_deferred", False):
        return True
    init = serializer.__init__
    describing_for_schema = threading.local()

    def attributes_doc(t: Any) -> Any:
        return read_docs(t) if getattr(describing_for_schema, "on", False) else {}

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)  # builds no schema: see get_json_schema below
        self._schema = _DeferredSchema(args, kwargs)

    def get_json_schema(self: Any) -> Any:
        schema = self._schema
        if isinstance(schema, _DeferredSchema):
            described = serializer.__new__(serializer)
            describing_for_schema.on = True
            try:
                init(described, *schema.args, **schema.kwargs)
            finally:
                describing_for_schema.on = False
            schema = self._schema = build(described._type_info)
        return schema

    _describe.get_attributes_doc = attributes_doc
    _main.get_json_schema = lambda type_info: None  # what Serializer.__init__ calls
    serializer.__init__ = __init__
    serializer.get_json_schema = get_json_schema
    serializer._northpass_deferred = True
    return True


def defer_cdk_package_init() -> bool:
    """Create the `airbyte_cdk` package without running its `__init__.py` until a top-level name
    is asked for (PEP 562 module `__getattr__`). True if done; False if the CDK is already
    imported (nothing to gain) or cannot be found."""
    if "airbyte_cdk" in sys.modules:
        return False
    spec = importlib.util.find_spec("airbyte_cdk")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return False
    package = importlib.util.module_from_spec(spec)
    lock = threading.Lock()

    def __getattr__(name: str) -> Any:
        submodule = sys.modules.get(f"{spec.name}.{name}")
        if submodule is not None:  # `import airbyte_cdk.a.b as c` while airbyte_cdk.a is importing
            return submodule
        with lock:
            if package.__dict__.get("__getattr__") is __getattr__:
                del package.__getattr__
                spec.loader.exec_module(package)  # the real __init__.py, into this same module
        return getattr(package, name)

    package.__getattr__ = __getattr__
    sys.modules["airbyte_cdk"] = package
    return True
