"""``mega-plugin info``: plugins, kernels, backends, presets, converters, adapters and ecosystems.

Nothing of transformers or fairseq2 is imported: versions come from ``importlib.metadata``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Final, Sequence

NAME: Final = "info"
HELP: Final = "Show installed plugins, kernels and backends (with availability), presets, converters, adapters and ecosystems."

ECOSYSTEMS: Final = ("torch", "transformers", "fairseq2", "safetensors", "pluggy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def _version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check(fn: Any, *args: Any) -> str | None:
    """Why ``fn(*args)`` says no (a Support, a reason string or None), or None when it says yes."""
    from mega_plugin.core.ops import as_support

    try:
        return as_support(fn(*args)).reason
    except Exception as error:  # an availability check must not break the report
        return f"check failed: {type(error).__name__}: {error}"


def collect() -> dict[str, Any]:
    """Everything ``info`` shows, as plain data."""
    from mega_plugin.core.ops import OPS
    from mega_plugin.registry import (
        list_adapters,
        list_backends,
        list_converters,
        list_kernels,
        list_plugins,
        list_presets,
    )

    kernels = []
    for op in OPS:
        for spec in list_kernels(op):
            reason = _check(spec.is_available)
            kernels.append({
                "op": op, "name": spec.name, "priority": spec.priority, "source": spec.source,
                "available": reason is None, "reason": reason, "description": spec.description,
            })
    adapters = []
    for record in list_adapters():
        reason = _check(record.availability)
        adapters.append({
            "name": record.name, "module": record.module, "requires": list(record.requires),
            "source": record.source, "available": reason is None, "reason": reason,
            "description": record.description,
        })
    return {
        "plugins": [
            {"name": p.name, "distribution": p.distribution, "version": p.version, "entry_point": p.entry_point,
             "status": p.status, "error": p.error, "registered": list(p.registered)}
            for p in list_plugins()
        ],
        "kernels": kernels,
        "backends": [
            {"name": b.name, "priority": b.priority, "source": b.source, "available": _check(b.is_available) is None,
             "reason": _check(b.is_available), "description": b.description}
            for b in list_backends()
        ],
        "presets": [{"name": p.name, "source": p.source, "description": p.description} for p in list_presets()],
        "converters": [
            {"name": c.name, "source": c.source, "description": c.description} for c in list_converters()
        ],
        "adapters": adapters,
        "ecosystems": {name: _version(name) for name in ECOSYSTEMS},
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MEGA_PLUGIN_")},
    }


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [title]
    for row in cells:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if not rows:
        lines.append("  (none)")
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`collect`'s report."""
    plugins = [
        (p["distribution"], p["version"], f"{p['name']} = {p['entry_point']}", p["status"], p["error"] or "")
        for p in report["plugins"]
    ]
    kernels = [
        (k["op"], k["name"], k["priority"], k["source"], "yes" if k["available"] else f"no: {k['reason']}",
         k["description"])
        for k in report["kernels"]
    ]
    adapters = [
        (a["name"], a["module"], "yes" if a["available"] else f"no: {a['reason']}", a["source"])
        for a in report["adapters"]
    ]
    ecosystems = [(name, version or "not installed") for name, version in report["ecosystems"].items()]
    sections = [
        _table("Plugins:", ("distribution", "version", "entry point", "status", "error"), plugins),
        _table("Kernels:", ("op", "name", "priority", "source", "available", "description"), kernels),
        _table("Backends:", ("name", "priority", "source", "available", "description"),
               [(b["name"], b["priority"], b["source"], "yes" if b["available"] else f"no: {b['reason']}",
                 b["description"]) for b in report["backends"]]),
        _table("Presets:", ("name", "source", "description"),
               [(p["name"], p["source"], p["description"]) for p in report["presets"]]),
        _table("Converters:", ("name", "source", "description"),
               [(c["name"], c["source"], c["description"]) for c in report["converters"]]),
        _table("Adapters:", ("name", "module", "available", "source"), adapters),
        _table("Ecosystems:", ("package", "version"), ecosystems),
    ]
    if report["environment"]:
        sections.append(_table("Environment:", ("variable", "value"), list(report["environment"].items())))
    return "\n\n".join(sections)


def run(args: argparse.Namespace) -> int:
    """Print the report (tables, or JSON with ``--json``)."""
    report = collect()
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
