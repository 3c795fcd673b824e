#!/usr/bin/python3
"""Send QMP commands to a QEMU monitor socket, one JSON result line per command.

Usage: qmp.py SOCKET COMMAND_JSON...   (e.g. '{"execute":"stop"}')
Each output line holds the command, the seconds it took and QEMU's answer; asynchronous
events that arrived meanwhile are listed under "events".  Exit status 1 when any command
was answered with an error.
"""
import json
import socket
import sys
import time


def exchange(stream, command):
    """Send one command, return (answer, events seen before it)."""
    stream.write(json.dumps(command).encode() + b"\n")
    stream.flush()
    events = []
    while True:
        line = stream.readline()
        if not line:
            raise EOFError("QEMU closed the QMP socket")
        msg = json.loads(line)
        if "event" in msg:
            events.append(msg)
        else:
            return msg, events


def main(argv):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(3600)
    sock.connect(argv[1])
    stream = sock.makefile("rwb")
    stream.readline()                       # greeting
    exchange(stream, {"execute": "qmp_capabilities"})
    status = 0
    for text in argv[2:]:
        command = json.loads(text)
        start = time.monotonic()
        answer, events = exchange(stream, command)
        record = {"cmd": command, "seconds": round(time.monotonic() - start, 3), "response": answer}
        if events:
            record["events"] = events
        print(json.dumps(record), flush=True)
        status |= "error" in answer
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
