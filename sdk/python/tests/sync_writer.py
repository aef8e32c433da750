"""Logs inferences in sync mode and prints each event's id once its call has returned (the test kills it)."""
import sys

import cairn

url, token, system = sys.argv[1:4]
c = cairn.Client(url, token, system, mode="sync")
for i in range(10000):
    eid = c.log_inference(("credit", "3"), output={"i": i})
    print(eid, flush=True)
