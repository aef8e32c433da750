"""Logs inferences through a spool while the server is down and prints each accepted id (the test kills it)."""
import sys

import cairn

url, token, system, spool = sys.argv[1:5]
c = cairn.Client(url, token, system, spool_dir=spool, max_buffer=100000)
for i in range(10000):
    eid = c.log_inference(("credit", "3"), output={"i": i})
    print(eid, flush=True)
