"""`python -m gateway` is the `tao` command (the CLI lives in `tao.cli`, which composes gateway and distill)."""

from tao.cli import main

if __name__ == "__main__":
    main()
