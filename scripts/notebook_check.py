"""The README's Python example in a real Jupyter kernel: does it show notebook bars?

It starts an IPython kernel with jupyter_client, runs the example on a tiny config in a fresh
directory, and prints the kinds of output the kernel displayed: tqdm's notebook bars are
ipywidgets (``application/vnd.jupyter.widget-view+json``); exit 0 when it showed some.
``tests/test_api.py`` runs it (ipykernel, jupyter_client and ipywidgets are in the dev extra).

    python scripts/notebook_check.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = '''import distributed_adcs as adcs
from distributed_adcs import progress
print("notebook bars:", progress.in_notebook(), "shown:", progress.enabled())
cfg = adcs.load_config("configs/quickstart.yaml", ["train.epochs=3"])
run = adcs.train(cfg)
print(run.run_id, run.status, run.metrics["test_clean_acc"])
model = adcs.load_model(run)'''


def main() -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    from jupyter_client.manager import start_new_kernel

    from distributed_adcs.config import dump_yaml, load_config
    from helpers import TINY, new_store

    with tempfile.TemporaryDirectory(prefix="nb-check-") as d:
        where = Path(d)
        (where / "configs").mkdir()
        (where / "configs" / "quickstart.yaml").write_text(dump_yaml(load_config(ROOT / "configs" / "quickstart.yaml",
                                                                                  TINY)))
        new_store(where / "mlflow.db")
        env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
        env["PYTHONPATH"] = str(ROOT)
        km, kc = start_new_kernel(kernel_name="python3", cwd=str(where), env=env)
        try:
            msg_id, shown, text, t0 = kc.execute(EXAMPLE), {}, [], time.time()
            while True:
                msg = kc.get_iopub_msg(timeout=600)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind in ("display_data", "update_display_data"):
                    for mime in content["data"]:
                        shown[mime] = shown.get(mime, 0) + 1
                elif kind == "stream":
                    text.append(content["text"])
                elif kind == "error":
                    text.append(f"ERROR {content['ename']}: {content['evalue']}\n")
                elif kind == "status" and content["execution_state"] == "idle":
                    break
        finally:
            km.shutdown_kernel()
    print("".join(text), end="")
    print(f"displayed: {shown} ({time.time() - t0:.0f} s)")
    widgets = shown.get("application/vnd.jupyter.widget-view+json", 0)
    print(f"notebook bars (widgets) displayed: {widgets}")
    return 0 if widgets and not any(t.startswith("ERROR") for t in text) else 1


if __name__ == "__main__":
    sys.exit(main())
