"""Write what is derived from the contract's spec into the files other languages read, or check them.

    python -m pipeline.events.generate           # rewrite the files below from pipeline/events/contract.py
    python -m pipeline.events.generate --check   # exit 1 and name the files that differ (CI, tests)

Derived files (committed, so room-server teams and the browser read them without Python):
- `schemas/v1/*.schema.json`: the envelope, `event.schema.json` and one schema per type
  (`pipeline.events.schemas`); `dead-letter.schema.json` is written by hand;
- the `TYPES` list of the room console (`pipeline/console/static/js/events.js`, between the generated-part
  markers): each type with its label, in the console's order.

Run from a source checkout (`--root`, default: the checkout this module is in). tests/events/test_spec.py
runs the check, so a spec change without regenerated files fails the suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.events.contract import CONTRACT
from pipeline.events.schemas import schema_files
from pipeline.events.spec import Contract

__all__ = ["CONSOLE_JS", "HAND_WRITTEN_SCHEMAS", "SCHEMA_DIR", "console_types", "main", "outputs", "stale"]

SCHEMA_DIR = Path("schemas") / f"v{CONTRACT.version}"
CONSOLE_JS = Path("pipeline") / "console" / "static" / "js" / "events.js"
#: Schema files in SCHEMA_DIR that are not derived from the spec.
HAND_WRITTEN_SCHEMAS = frozenset({"dead-letter.schema.json"})
BEGIN = (
    "// --- generated from pipeline/events/contract.py by `python -m pipeline.events.generate`: do not edit"
)
END = "// --- end of the generated part"
_DEFAULT_ROOT = Path(__file__).resolve().parents[2]


def console_types(contract: Contract) -> str:
    """The console's generated part: `TYPES`, [type, label] pairs in the console's order."""
    ranked = sorted(contract, key=lambda spec: spec.console_rank)
    rows = "".join(f"  [{json.dumps(spec.type)}, {json.dumps(spec.label)}],\n" for spec in ranked)
    return f"{BEGIN}\nexport const TYPES = [\n{rows}];\n{END}\n"


def splice(text: str, generated: str) -> str:
    """`text` with its generated part (BEGIN..END lines) replaced by `generated`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the generated-part markers are missing (first line: {BEGIN!r})")
    return text[:start] + generated + text[text.index("\n", end) + 1 :]


def outputs(root: Path, contract: Contract = CONTRACT) -> dict[Path, str]:
    """Every derived file under `root` with the text it should have."""
    files = {root / SCHEMA_DIR / name: text for name, text in schema_files(contract).items()}
    console = root / CONSOLE_JS
    files[console] = splice(console.read_text(encoding="utf-8"), console_types(contract))
    return files


def stale(root: Path, contract: Contract = CONTRACT) -> list[str]:
    """What differs from the spec: derived files to regenerate, and schema files no spec entry makes."""
    found = [
        f"{path.relative_to(root)}: differs from the spec"
        for path, text in outputs(root, contract).items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    expected = set(schema_files(contract)) | HAND_WRITTEN_SCHEMAS
    found += [
        f"{path.relative_to(root)}: no type in the spec has this schema (remove it, or add the type)"
        for path in sorted((root / SCHEMA_DIR).glob("*.schema.json"))
        if path.name not in expected
    ]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.events.generate",
        description="Write or check the files derived from the event contract's spec.",
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    parser.add_argument(
        "--root", type=Path, default=_DEFAULT_ROOT, help="the source checkout (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    if args.check:
        problems = stale(root)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m pipeline.events.generate", file=sys.stderr)
        return 1 if problems else 0
    for path, text in outputs(root).items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(root)}")
    for problem in stale(root):
        print(problem, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
