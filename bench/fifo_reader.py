#!/usr/bin/env python3
"""Drains a FIFO the way Nomad's logmon does for a task's stdout, and counts the lines.

    fifo_reader.py FIFO READY_FILE COUNT_FILE

Opens the FIFO for reading before any writer exists (non-blocking open, then blocking reads),
creates READY_FILE, reads until the writer is gone (end of file after some data), then writes
the number of lines read to COUNT_FILE.
"""

import os
import sys
import time


def main():
    fifo, ready, count_file = sys.argv[1:4]
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    open(ready, "w").close()
    lines = 0
    seen_data = False
    while True:
        chunk = os.read(fd, 1 << 16)
        if chunk:
            seen_data = True
            lines += chunk.count(b"\n")
        elif seen_data:
            break
        else:
            # No writer yet: a FIFO without writers reads as end of file.
            time.sleep(0.01)
    with open(count_file, "w") as f:
        f.write(f"{lines}\n")


if __name__ == "__main__":
    main()
