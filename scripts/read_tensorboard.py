#!/usr/bin/env python3
"""Print the scalars of a trainyard run's TensorBoard event files, read with TensorBoard's own
reader: a quick check of a run without starting the TensorBoard server.

Usage: read_tensorboard.py RUN_DIR_OR_EVENT_FILE [--json]
Needs the `tensorboard` package (pip install tensorboard).
"""
import json
import pathlib
import sys

from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader


def scalars(path):
    path = pathlib.Path(path)
    files = sorted(path.glob("tensorboard/events.out.tfevents.*")) if path.is_dir() else [path]
    if not files:
        sys.exit(f"{path}: no event files (expected RUN_DIR/tensorboard/events.out.tfevents.*)")
    for f in files:
        for event in LegacyEventFileLoader(str(f)).Load():
            for value in event.summary.value:
                yield event.step, value.tag, value.simple_value


def main():
    args = [a for a in sys.argv[1:] if a != "--json"]
    if len(args) != 1:
        sys.exit(__doc__)
    rows = list(scalars(args[0]))
    if "--json" in sys.argv:
        print(json.dumps(rows))
    else:
        for step, tag, value in rows:
            print(f"{step}\t{tag}\t{value:.6g}")


if __name__ == "__main__":
    main()
