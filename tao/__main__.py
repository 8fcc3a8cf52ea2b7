"""`python -m tao`: the `tao` command."""

from tao.cli import main

if __name__ == "__main__":
    main()
