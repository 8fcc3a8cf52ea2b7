"""`python -m gateway` is the `tao` command, as the CLI contract says.

The command lives in the application (`tao.cli`, which composes gateway and distill), and the
library never imports the application: this hands over to it by module name when run, so
importing `gateway` (or any module in it) never imports `tao`.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("tao", run_name="__main__", alter_sys=True)
