#!/usr/bin/env python3
"""tools/gpu/template-variant.sh: the copy of templates/ differs from the original only in the
defaults it was asked to change (AJ_TRACE and AJ_LAST_IN_WORD in fwd_sm90.cuh) and its marker
file; a name that no template gives a default is an error, and so is an argument that is not
NAME=VALUE; a folder the script did not make is not replaced."""
import filecmp
import os
import subprocess
import tempfile

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPT = os.path.join(ROOT, "tools", "gpu", "template-variant.sh")
TEMPLATES = os.path.join(ROOT, "templates")


def run(out, *settings):
    return subprocess.run(["bash", SCRIPT, out, *settings], capture_output=True, text=True)


def differing(a, b):
    """Relative paths of the files that differ (or exist on one side only) under a and b."""
    found = []
    cmp = filecmp.dircmp(a, b)
    found += cmp.left_only + cmp.right_only + cmp.diff_files
    for sub in cmp.common_dirs:
        found += [os.path.join(sub, f) for f in differing(os.path.join(a, sub), os.path.join(b, sub))]
    return found


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "variant")
        r = run(out, "AJ_TRACE=1", "AJ_LAST_IN_WORD=1")
        assert r.returncode == 0, r.stderr
        assert sorted(differing(TEMPLATES, out)) == [".template-variant", "fwd_sm90.cuh"], differing(TEMPLATES, out)
        with open(os.path.join(TEMPLATES, "fwd_sm90.cuh")) as f:
            before = f.read().split("\n")
        with open(os.path.join(out, "fwd_sm90.cuh")) as f:
            after = f.read().split("\n")
        changed = [(x, y) for x, y in zip(before, after) if x != y]
        assert len(before) == len(after), "lines added or lost"
        assert sorted(changed) == [("#define AJ_LAST_IN_WORD 0", "#define AJ_LAST_IN_WORD 1"),
                                   ("#define AJ_TRACE 0", "#define AJ_TRACE 1")], changed
        missing = run(out, "AJ_NO_SUCH_MACRO=1")
        assert missing.returncode == 1 and "no template defines a default for AJ_NO_SUCH_MACRO" in missing.stderr, missing
        malformed = run(out, "AJ_TRACE")
        assert malformed.returncode == 2 and "not NAME=VALUE" in malformed.stderr, malformed
        # A folder the script did not make is left alone.
        foreign = os.path.join(tmp, "foreign")
        os.makedirs(foreign)
        with open(os.path.join(foreign, "keep.txt"), "w") as f:
            f.write("mine")
        refused = run(foreign, "AJ_TRACE=1")
        assert refused.returncode == 2 and "not a folder this script made" in refused.stderr, refused
        assert os.path.exists(os.path.join(foreign, "keep.txt"))
    print("template-variant: ok")


if __name__ == "__main__":
    main()
