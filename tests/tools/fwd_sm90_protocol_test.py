#!/usr/bin/env python3
"""tools/gpu/fwd_sm90_protocol.py: the persistent schedule's protocol (with and without items
back to back, with the last tile marked in its word) holds under random schedules, and the model
catches each rule broken on purpose: no first pass (a deadlock), no last take (a turn left half
taken), the Q buffer freed before the epilogue's last read (a copy into a buffer in use), the end
stage's V wait after its word (a parity wait a phase late), consumers freeing an end stage the
producer did not use (a phase overrun, or a consumer reading another item's word)."""
import importlib.util
import os
import sys

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "gpu", "fwd_sm90_protocol.py")
spec = importlib.util.spec_from_file_location("fwd_sm90_protocol", PATH)
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)


def main():
    failed = []
    for flow in ("overlap", "plain", "last"):
        failures, first, steps = model.run_many(1000, flow, None, None, seed=3)
        if failures or steps < 1000 * 50:
            failed.append(f"{flow}: {failures} failures over {steps} steps; first: {first}")
    for flow, mutation, expect in (("overlap", "no_first_pass", "deadlock"),
                                   ("overlap", "no_last_take", "half taken"),
                                   ("overlap", "early_q_free", "Q copy into buffer"),
                                   ("plain", "end_v_late", "overrun"),
                                   ("last", "phantom_end", "overrun|holds")):
        consumers = None if mutation in ("end_v_late", "phantom_end") else 2
        failures, first, _ = model.run_many(300, flow, consumers, mutation, seed=3)
        if failures == 0 or not any(e in (first or "") for e in expect.split("|")):
            failed.append(f"{flow} with {mutation}: {failures} failures; first: {first} (expected '{expect}')")
    for line in failed:
        print("FAIL", line)
    print("ok" if not failed else f"{len(failed)} checks failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
