"""The `tao` commands, one module each: `add_parser(sub)` declares its flags, and the function it
sets as `run` carries it out."""
