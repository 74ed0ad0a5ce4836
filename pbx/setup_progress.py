"""A long set-up step's output told in a few lines instead of silence or a flood.

apt (on its own, or inside mmdebstrap while it builds the embedded Asterisk) and pip
print a line per package: hundreds for a first installation. A person waiting wants to
see each step as it starts, a count every so often, the totals and every error. The
embedded Asterisk's build (pbx/rootfs.py) reads mmdebstrap's output through this; the
Makefile pipes apt-get and pip through it:

    apt-get install … 2>&1 | python3 -m pbx.setup_progress apt-get

It runs on the system's python3 before the virtual environment exists: standard
library only.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Callable
from dataclasses import dataclass

# Packages between two count lines: about ten lines for the embedded Asterisk's tree.
EVERY = 25
# A longer line (pip's "Successfully installed" names every package) is cut here.
WIDTH = 120


@dataclass(frozen=True)
class Tool:
    # A line starting with the key counts one package; the count is told as the value.
    counted: dict[str, str]
    # Lines starting with these are shown as they come (mmdebstrap's "I: " dropped).
    shown: tuple[str, ...]


APT = Tool({"Get:": "fetched", "Setting up ": "set up"}, ("I: ", "E: ", "Fetched "))
TOOLS = {
    "apt-get": APT,
    "mmdebstrap": APT,  # apt and dpkg run inside it; its own steps are its "I: " lines
    "pip": Tool({"Collecting ": "collected"}, ("ERROR: ", "Successfully installed ")),
}


class Progress:
    """Feed it the tool's lines; it emits the few worth reading and keeps the last
    ones, which a failure's message quotes."""

    def __init__(self, name: str, emit: Callable[[str], None]) -> None:
        self.name = name
        self.tool = TOOLS[name]
        self.emit = emit
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.counts = dict.fromkeys(self.tool.counted.values(), 0)

    def line(self, text: str) -> None:
        text = text.rstrip()
        if not text.strip():
            return
        self.tail.append(text)
        for prefix, what in self.tool.counted.items():
            if text.startswith(prefix):
                self.counts[what] += 1
                if self.counts[what] % EVERY == 0:
                    self._say(f"{what} {self.counts[what]} packages")
                return
        if text.startswith(self.tool.shown):
            shown = text.removeprefix("I: ")
            self._say(shown if len(shown) <= WIDTH else shown[:WIDTH - 1] + "…")

    def _say(self, text: str) -> None:
        self.emit(f"  {self.name}: {text}")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in TOOLS:
        print(f"usage: python3 -m pbx.setup_progress {'|'.join(TOOLS)} < output",
              file=sys.stderr)
        return 2
    progress = Progress(argv[0], lambda text: print(text, flush=True))
    for line in sys.stdin:  # until the tool closes its output
        progress.line(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
