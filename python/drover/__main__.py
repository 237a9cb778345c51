"""python -m drover submit|map|worker: the C++ CLI's JSON lines, from Python.

Each subcommand lives in its own module (_cli_client for submit and map,
_cli_worker for worker) so that the client and the worker do not import
each other.
"""

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = ("usage: python -m drover {submit,map,worker} [options]\n"
             "  submit   read tasks as JSON lines on stdin, print outcomes as JSON lines\n"
             "  map      run one task name over arguments, print results in input order\n"
             "  worker   run Python tasks from a module as a drover worker\n"
             "python -m drover COMMAND --help for a command's options\n")
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage)
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("submit", "map"):
        from . import _cli_client
        return _cli_client.main(command, rest)
    if command == "worker":
        from . import _cli_worker
        return _cli_worker.main(rest)
    sys.stderr.write(f"drover: unknown command '{command}'\n{usage}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
