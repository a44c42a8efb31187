"""`python -m framesink.local.moto_process -H HOST -p PORT`: moto's server, as `python -m
moto.server`, with one cache added.

moto's EventBridge turns every event it routes into its target's input by parsing the same
eight JSONPath expressions anew for each event and each target (jsonpath_ng builds a yacc
parser each time): measured with py-spy, 20 % of the moto process's time at 10 participants,
frames waiting behind it. The parsed expressions are immutable, so a cache of them changes
nothing but the time (jsonpath_ng's parse is a pure function of its text).
"""

import functools


def main() -> None:
    import jsonpath_ng.ext

    # moto imports parse inside the function that uses it, so the module attribute is read
    # at each call: replacing it here reaches every routing.
    jsonpath_ng.ext.parse = functools.lru_cache(maxsize=1024)(jsonpath_ng.ext.parse)
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()
