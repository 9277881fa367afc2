"""An application imports `matrix.runtime` and selects without the build-side libraries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from matrix.runtime.bundle import Bundle, Family, bundle_to_json
from tests.runtime.test_select import engine

HEAVY = ("tensorrt_rtx", "onnx", "rich", "yaml", "jsonschema", "numpy", "filelock")


def test_select_runs_where_the_heavy_libraries_cannot_even_be_imported(tmp_path: Path) -> None:
    b = Bundle(tmp_path, "0.1.0", "1.7.1.116", (Family("m", ("m",)),),
               (engine("m@sm86", ("sm86",)), engine("m@default")))
    (tmp_path / "bundle.json").write_text(bundle_to_json(b), encoding="utf-8")
    # A finder that refuses the heavy modules: importing one anywhere fails the script.
    script = textwrap.dedent(
        f"""
        import json, sys
        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ImportError("refused: " + name)
        sys.meta_path.insert(0, Refuse())
        from matrix import runtime
        selection = runtime.select({str(tmp_path)!r}, "8.6")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps([selection.chosen["m"].engine.cell, loaded]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["m@sm86", []]
